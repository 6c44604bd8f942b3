-- When an SSH login with a connection's key last succeeded, and for which
-- key and bastion ("SHA256:... user@host:port"): the connection page keeps
-- the key installation guide open until the key has worked.
ALTER TABLE pgrelay_connections ADD COLUMN key_used_at timestamptz;
ALTER TABLE pgrelay_connections ADD COLUMN key_used_for text NOT NULL DEFAULT '';
