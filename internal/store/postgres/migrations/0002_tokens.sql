-- API tokens: only the SHA-256 hash of a token is kept. A name is unique
-- among tokens that are not revoked.
CREATE TABLE pgrelay_tokens (
    id           text COLLATE "C" PRIMARY KEY,
    name         text COLLATE "C" NOT NULL,
    role         text NOT NULL,
    hash         text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT pgrelay_tokens_hash_key UNIQUE (hash)
);
CREATE UNIQUE INDEX pgrelay_tokens_active_name ON pgrelay_tokens (name) WHERE revoked_at IS NULL;
