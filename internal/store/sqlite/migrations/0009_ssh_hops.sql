-- SSH hops after the first (their host key pins, by address), and a key
-- rotation with two live keys: the new key pair (private key sealed) and
-- the times of the rotation.
ALTER TABLE connections ADD COLUMN hop_host_keys TEXT NOT NULL DEFAULT '[]';
ALTER TABLE connections ADD COLUMN pending_public_key TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN sealed_pending_private_key BLOB;
ALTER TABLE connections ADD COLUMN key_rotation TEXT NOT NULL DEFAULT '{}';
