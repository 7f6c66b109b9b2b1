-- Message ids a cluster's nodes accepted, while a request carrying one
-- could still be fresh (a key: truncated SHA-256 of client and id).
CREATE TABLE replay_ids (
    key        BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX replay_ids_expiry ON replay_ids (expires_at);
