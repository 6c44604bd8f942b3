-- SSH hops after the first (their host key pins, by address), and a key
-- rotation with two live keys: the new key pair (private key sealed) and
-- the times of the rotation.
ALTER TABLE pgrelay_connections ADD COLUMN hop_host_keys jsonb NOT NULL DEFAULT '[]';
ALTER TABLE pgrelay_connections ADD COLUMN pending_public_key text NOT NULL DEFAULT '';
ALTER TABLE pgrelay_connections ADD COLUMN sealed_pending_private_key bytea;
ALTER TABLE pgrelay_connections ADD COLUMN key_rotation jsonb NOT NULL DEFAULT '{}';
