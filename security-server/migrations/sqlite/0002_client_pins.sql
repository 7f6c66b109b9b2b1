-- Information systems' certificates pinned per client subsystem.
CREATE TABLE client_pins (
    subsystem   TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    PRIMARY KEY (subsystem, fingerprint)
) STRICT;
