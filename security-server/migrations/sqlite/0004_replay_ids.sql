-- Message ids a cluster's nodes accepted, while a request carrying one
-- could still be fresh (a key: truncated SHA-256 of client and id).
CREATE TABLE replay_ids (
    key        BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX replay_ids_expiry ON replay_ids (expires_at);
