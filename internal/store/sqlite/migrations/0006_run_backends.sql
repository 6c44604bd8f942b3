-- The PostgreSQL backends each run opened (with their cancel keys), and
-- what was done to stop them when the run ended.
CREATE TABLE run_backends (
    run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    pid        INTEGER NOT NULL,
    secret_key BLOB NOT NULL,
    step       INTEGER NOT NULL,
    usr        TEXT NOT NULL,
    database   TEXT NOT NULL,
    opened_at  TEXT NOT NULL,
    seq        INTEGER PRIMARY KEY AUTOINCREMENT
);
CREATE INDEX run_backends_run ON run_backends (run_id);

CREATE TABLE run_cleanups (
    run_id  TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    cleanup TEXT NOT NULL
);
