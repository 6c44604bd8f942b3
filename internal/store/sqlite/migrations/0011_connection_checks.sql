-- Each connection's recent tests, runs and uses, for its health: how they
-- went, newest kept (the store prunes each kind to a few dozen).
CREATE TABLE connection_checks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    at            TEXT NOT NULL,
    ok            INTEGER NOT NULL,
    source        TEXT NOT NULL,
    step          TEXT NOT NULL,
    detail        TEXT NOT NULL,
    duration_ms   INTEGER NOT NULL
);
CREATE INDEX connection_checks_conn ON connection_checks (connection_id, kind, id);
