-- The PostgreSQL backends each run opened (with their cancel keys), and
-- what was done to stop them when the run ended.
CREATE TABLE pgrelay_run_backends (
    seq        bigserial PRIMARY KEY,
    run_id     text COLLATE "C" NOT NULL REFERENCES pgrelay_runs (id) ON DELETE CASCADE,
    pid        bigint NOT NULL,
    secret_key bytea NOT NULL,
    step       integer NOT NULL,
    usr        text NOT NULL,
    database   text NOT NULL,
    opened_at  timestamptz NOT NULL
);
CREATE INDEX pgrelay_run_backends_run ON pgrelay_run_backends (run_id);

CREATE TABLE pgrelay_run_cleanups (
    run_id  text COLLATE "C" PRIMARY KEY REFERENCES pgrelay_runs (id) ON DELETE CASCADE,
    cleanup jsonb NOT NULL
);
