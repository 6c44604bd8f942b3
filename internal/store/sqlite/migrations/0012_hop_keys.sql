-- The key pairs of SSH hops that have their own (ssh_hops.N.own_key): per
-- hop (user@host:port) its public key and its private key sealed, bound to
-- the connection and the hop. A JSON array in the connection's row, so that
-- it is written, copied, backed up and deleted with it.
ALTER TABLE connections ADD COLUMN hop_keys TEXT NOT NULL DEFAULT '[]';
