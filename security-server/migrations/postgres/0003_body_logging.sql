-- Subsystems whose exchanges' bodies are logged (encrypted).
CREATE TABLE body_logging (
    subsystem TEXT PRIMARY KEY
);
