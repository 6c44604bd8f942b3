-- Each connection's recent tests, runs and uses, for its health: how they
-- went, newest kept (the store prunes each kind to a few dozen).
CREATE TABLE pgrelay_connection_checks (
    id            bigserial PRIMARY KEY,
    connection_id text COLLATE "C" NOT NULL REFERENCES pgrelay_connections (id) ON DELETE CASCADE,
    kind          text NOT NULL,
    at            timestamptz NOT NULL,
    ok            boolean NOT NULL,
    source        text NOT NULL,
    step          text NOT NULL,
    detail        text NOT NULL,
    duration_ms   bigint NOT NULL
);
CREATE INDEX pgrelay_connection_checks_conn ON pgrelay_connection_checks (connection_id, kind, id);
