-- 5: registry nodes sharing one store. The PostgreSQL form of
-- sqlite/0005: each configuration version keeps its signed bytes; one
-- lease row names the node that publishes (its expiry on the database's
-- clock); the fingerprints of the registry's keys.
ALTER TABLE publications ADD COLUMN signed BYTEA;
CREATE TABLE publisher_lease (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    node       TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE registry_keys (
    purpose     TEXT COLLATE "C" PRIMARY KEY,
    sha256      BYTEA NOT NULL,
    recorded_at BIGINT NOT NULL
);
