-- Job definitions, runs and run logs.
CREATE TABLE pgrelay_jobs (
    name       text COLLATE "C" PRIMARY KEY,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- log_seq is the Seq of the run's last log line: appenders reserve Seqs by
-- incrementing it, which serialises them on the run's row. It is not part
-- of the run record and UpdateRun leaves it alone.
CREATE TABLE pgrelay_runs (
    id               text COLLATE "C" PRIMARY KEY,
    job_name         text COLLATE "C" NOT NULL,
    job              jsonb NOT NULL,
    trigger          text NOT NULL,
    status           text NOT NULL,
    reason           text NOT NULL DEFAULT '',
    queued_at        timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    steps            jsonb NOT NULL DEFAULT '[]',
    worker           text NOT NULL DEFAULT '',
    heartbeat_at     timestamptz,
    attempt          integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    version          bigint NOT NULL DEFAULT 1,
    log_seq          bigint NOT NULL DEFAULT 0
);
CREATE INDEX pgrelay_runs_job_queued ON pgrelay_runs (job_name, queued_at DESC, id DESC);
CREATE INDEX pgrelay_runs_status_queued ON pgrelay_runs (status, queued_at DESC, id DESC);
CREATE INDEX pgrelay_runs_queued ON pgrelay_runs (queued_at DESC, id DESC);

-- Log lines are process output: text is bytea so that any bytes (NUL,
-- invalid UTF-8) come back as they were written.
CREATE TABLE pgrelay_run_logs (
    run_id text COLLATE "C" NOT NULL REFERENCES pgrelay_runs (id) ON DELETE CASCADE,
    seq    bigint NOT NULL,
    ts     timestamptz NOT NULL,
    stream text NOT NULL,
    step   integer NOT NULL,
    text   bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
