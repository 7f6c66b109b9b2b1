-- Information systems' certificates pinned per client subsystem.
CREATE TABLE client_pins (
    subsystem   TEXT NOT NULL,
    fingerprint BYTEA NOT NULL,
    PRIMARY KEY (subsystem, fingerprint)
);
