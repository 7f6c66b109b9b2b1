-- 1: the initial schema.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO meta (key, value) VALUES ('change_seq', 0);

CREATE TABLE operators (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE
) STRICT;

CREATE TABLE member_classes (
    code        TEXT PRIMARY KEY,
    description TEXT NOT NULL
) STRICT;
CREATE TABLE members (
    id    TEXT PRIMARY KEY,
    class TEXT NOT NULL REFERENCES member_classes (code),
    name  TEXT NOT NULL
) STRICT;
CREATE TABLE subsystems (
    id     TEXT PRIMARY KEY,
    member TEXT NOT NULL REFERENCES members (id),
    code   TEXT NOT NULL
) STRICT;
CREATE INDEX subsystems_member ON subsystems (member);
CREATE TABLE servers (
    id      TEXT PRIMARY KEY,
    owner   TEXT NOT NULL REFERENCES members (id),
    address TEXT NOT NULL
) STRICT;
CREATE TABLE server_clients (
    server    TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    subsystem TEXT NOT NULL REFERENCES subsystems (id),
    PRIMARY KEY (server, subsystem)
) STRICT;
CREATE TABLE services (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL REFERENCES subsystems (id),
    description TEXT NOT NULL
) STRICT;
CREATE TABLE global_groups (
    id          TEXT PRIMARY KEY,
    description TEXT NOT NULL
) STRICT;
CREATE TABLE group_members (
    grp       TEXT NOT NULL REFERENCES global_groups (id),
    subsystem TEXT NOT NULL REFERENCES subsystems (id),
    PRIMARY KEY (grp, subsystem)
) STRICT;
CREATE TABLE trusted_cas (
    fingerprint BLOB PRIMARY KEY,
    der         BLOB NOT NULL
) STRICT;

CREATE TABLE requests (
    id           INTEGER PRIMARY KEY,
    kind         INTEGER NOT NULL,
    server       TEXT NOT NULL,
    subsystem    TEXT,
    address      TEXT,
    token_hash   BLOB,
    state        INTEGER NOT NULL,
    submitted_at INTEGER NOT NULL,
    decided_at   INTEGER,
    note         TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX requests_state ON requests (state);
CREATE TABLE request_csrs (
    request_id INTEGER NOT NULL REFERENCES requests (id),
    position   INTEGER NOT NULL,
    is_auth    INTEGER NOT NULL,
    member     TEXT,
    csr        BLOB NOT NULL,
    public_key BLOB NOT NULL,
    PRIMARY KEY (request_id, position)
) STRICT;
CREATE INDEX request_csrs_key ON request_csrs (public_key);

CREATE TABLE certificates (
    fingerprint   BLOB PRIMARY KEY,
    der           BLOB NOT NULL,
    public_key    BLOB NOT NULL,
    auth_server   TEXT,
    signing_member TEXT,
    request_id    INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT
) STRICT;
CREATE INDEX certificates_key ON certificates (public_key);
CREATE INDEX certificates_server ON certificates (auth_server);
CREATE INDEX certificates_member ON certificates (signing_member);
CREATE INDEX certificates_request ON certificates (request_id, position);
-- Fingerprints revoked that this registry did not issue (external CAs).
CREATE TABLE revoked_external (
    fingerprint BLOB PRIMARY KEY,
    reason      TEXT NOT NULL
) STRICT;

CREATE TABLE enrollment_tokens (
    hash            BLOB PRIMARY KEY,
    server          TEXT NOT NULL,
    expires_at      INTEGER NOT NULL,
    used_by_request INTEGER
) STRICT;

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    result TEXT NOT NULL
) STRICT;
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_actor ON audit (actor, at);

CREATE TABLE publications (
    version    INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    seq        INTEGER NOT NULL
) STRICT;
