-- 6: the service catalogue: services' protobuf descriptor sets, kept once
-- by SHA-256 and named by it from the services that publish them.
CREATE TABLE descriptor_sets (
    sha256 BYTEA PRIMARY KEY,
    bytes  BYTEA NOT NULL
);
ALTER TABLE services ADD COLUMN descriptor_sha256 BYTEA REFERENCES descriptor_sets (sha256);
