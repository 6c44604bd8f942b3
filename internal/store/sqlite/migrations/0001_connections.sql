CREATE TABLE connections (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL UNIQUE,
    spec                  TEXT NOT NULL,
    sealed_password       BLOB,
    ssh_public_key        TEXT NOT NULL DEFAULT '',
    sealed_private_key    BLOB,
    previous_public_key   TEXT NOT NULL DEFAULT '',
    host_keys             TEXT NOT NULL DEFAULT '[]',
    host_keys_addr        TEXT NOT NULL DEFAULT '',
    pending_host_key      TEXT NOT NULL DEFAULT '',
    pending_host_key_seen TEXT NOT NULL DEFAULT '',
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    version               INTEGER NOT NULL DEFAULT 1
);
