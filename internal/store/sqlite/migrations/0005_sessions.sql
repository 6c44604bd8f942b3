-- Web UI sessions: the signed cookie names a session ID; signing out
-- deletes the row, so a copied cookie stops working at once.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL REFERENCES tokens (id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
