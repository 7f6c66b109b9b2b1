-- Node settings, the rules' version, access rights and backends.
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
INSERT INTO meta (key, value) VALUES ('rules_version', 0);
CREATE TABLE access_rules (
    subject  TEXT NOT NULL,
    provider TEXT NOT NULL,
    service  TEXT NOT NULL,
    method   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (subject, provider, service, method)
) STRICT;
CREATE TABLE backends (
    provider   TEXT NOT NULL,
    service    TEXT NOT NULL,
    url        TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    PRIMARY KEY (provider, service)
) STRICT;
