-- 6: the service catalogue: services' protobuf descriptor sets, kept once
-- by SHA-256 and named by it from the services that publish them.
CREATE TABLE descriptor_sets (
    sha256 BLOB PRIMARY KEY,
    bytes  BLOB NOT NULL
) STRICT;
ALTER TABLE services ADD COLUMN descriptor_sha256 BLOB REFERENCES descriptor_sets (sha256);
