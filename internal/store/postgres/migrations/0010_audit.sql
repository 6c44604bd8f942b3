-- The audit log (package audit): append-only, hash-chained records. Each
-- record's hash covers its content and the previous record's hash.
-- pgrelay_audit_chain holds the chain's anchor (the last record deleted by
-- retention) and head (the last record appended); an append locks its row,
-- so appends of all processes sharing the store form one chain.
CREATE TABLE pgrelay_audit (
    seq         bigint PRIMARY KEY,
    ts          timestamptz NOT NULL,
    actor_kind  text NOT NULL,
    actor_id    text NOT NULL,
    actor_name  text NOT NULL,
    action      text NOT NULL,
    target_kind text NOT NULL,
    target      text COLLATE "C" NOT NULL,
    outcome     text NOT NULL,
    error       text NOT NULL,
    client      text NOT NULL,
    detail      text NOT NULL,
    use_detail  jsonb,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);
CREATE INDEX pgrelay_audit_ts ON pgrelay_audit (ts);
CREATE INDEX pgrelay_audit_target ON pgrelay_audit (target, seq);
CREATE FUNCTION pgrelay_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only';
END
$$;
CREATE TRIGGER pgrelay_audit_append_only BEFORE UPDATE ON pgrelay_audit
    FOR EACH ROW EXECUTE FUNCTION pgrelay_audit_append_only();
CREATE TABLE pgrelay_audit_chain (
    id          integer PRIMARY KEY CHECK (id = 1),
    anchor_seq  bigint NOT NULL,
    anchor_hash text NOT NULL,
    head_seq    bigint NOT NULL,
    head_hash   text NOT NULL
);
INSERT INTO pgrelay_audit_chain (id, anchor_seq, anchor_hash, head_seq, head_hash) VALUES (1, 0, '', 0, '');
