-- 2: witnessed message-log checkpoints and the alarms of refused ones.
CREATE TABLE checkpoints (
    server       TEXT NOT NULL,
    tree_size    INTEGER NOT NULL,
    root         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    signature    BLOB NOT NULL,
    witnessed_at INTEGER NOT NULL,
    PRIMARY KEY (server, tree_size)
) STRICT;
CREATE TABLE alarms (
    id     INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    at     INTEGER NOT NULL,
    reason TEXT NOT NULL
) STRICT;
