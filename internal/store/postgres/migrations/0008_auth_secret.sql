-- The sealed secret of a connection's credential source: the Lakebase
-- OAuth client secret or the AlloyDB service-account key (auth kinds
-- lakebase and alloydb-iam); the other auth settings live in the spec.
ALTER TABLE pgrelay_connections ADD COLUMN sealed_auth_secret bytea;
