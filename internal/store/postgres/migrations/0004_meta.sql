CREATE TABLE pgrelay_meta (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
