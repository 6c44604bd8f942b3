-- Web UI sessions: the signed cookie names a session ID; signing out
-- deletes the row, so a copied cookie stops working at once.
CREATE TABLE pgrelay_sessions (
    id         text COLLATE "C" PRIMARY KEY,
    token_id   text COLLATE "C" NOT NULL REFERENCES pgrelay_tokens (id),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX pgrelay_sessions_expires_at ON pgrelay_sessions (expires_at);
