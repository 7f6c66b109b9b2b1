-- 5: registry nodes sharing one store. Each configuration version keeps its
-- signed bytes, so every node distributes what the store holds; one lease
-- row names the node that publishes (taken in the database, renewed while
-- the node lives); the fingerprints of the registry's keys, so a node
-- holding other keys is refused at start.
ALTER TABLE publications ADD COLUMN signed BLOB;
CREATE TABLE publisher_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    node       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE TABLE registry_keys (
    purpose     TEXT PRIMARY KEY,
    sha256      BLOB NOT NULL,
    recorded_at INTEGER NOT NULL
) STRICT;
