-- Saved connections. Secrets are sealed by the keyring before they get here.
-- Names and IDs use the "C" collation so that ORDER BY sorts bytewise, as
-- the SQLite store does, whatever the database's default collation is.
CREATE TABLE pgrelay_connections (
    id                    text COLLATE "C" PRIMARY KEY,
    name                  text COLLATE "C" NOT NULL,
    spec                  jsonb NOT NULL,
    sealed_password       bytea,
    ssh_public_key        text NOT NULL DEFAULT '',
    sealed_private_key    bytea,
    previous_public_key   text NOT NULL DEFAULT '',
    host_keys             text[] NOT NULL DEFAULT '{}',
    host_keys_addr        text NOT NULL DEFAULT '',
    pending_host_key      text NOT NULL DEFAULT '',
    pending_host_key_seen timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    version               bigint NOT NULL DEFAULT 1,
    CONSTRAINT pgrelay_connections_name_key UNIQUE (name)
);
