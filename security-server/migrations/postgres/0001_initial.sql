-- The rules' version, access rights and backends. (Node settings — the
-- server's identity, its registration requests — stay in each node's own
-- server.db: the nodes of a cluster share everything else.)
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('rules_version', 0);
CREATE TABLE access_rules (
    subject  TEXT NOT NULL,
    provider TEXT NOT NULL,
    service  TEXT NOT NULL,
    method   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (subject, provider, service, method)
);
CREATE TABLE backends (
    provider   TEXT NOT NULL,
    service    TEXT NOT NULL,
    url        TEXT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, service)
);
