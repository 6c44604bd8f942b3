CREATE TABLE jobs (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    job_name         TEXT NOT NULL,
    job              TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    status           TEXT NOT NULL,
    reason           TEXT NOT NULL DEFAULT '',
    queued_at        TEXT NOT NULL,
    started_at       TEXT NOT NULL DEFAULT '',
    ended_at         TEXT NOT NULL DEFAULT '',
    steps            TEXT NOT NULL DEFAULT '[]',
    worker           TEXT NOT NULL DEFAULT '',
    heartbeat_at     TEXT NOT NULL DEFAULT '',
    attempt          INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    version          INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX runs_job_queued ON runs (job_name, queued_at);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_queued ON runs (queued_at);

CREATE TABLE run_logs (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    ts     TEXT NOT NULL,
    stream TEXT NOT NULL,
    step   INTEGER NOT NULL,
    text   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
