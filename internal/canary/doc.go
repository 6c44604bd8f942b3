// Package canary holds pgrelay's secrets canary and server-side trust
// tests. It has no code of its own besides this comment: everything is in
// its tests.
//
// The secrets canary (TestSecretsCanary) saves connections and jobs with
// unique canary values — database passwords (a second one set by update),
// the generated SSH private keys (read back only inside the test, by
// opening the store with the master key), API tokens of every role and the
// master key — then exercises pgrelay the way users do, with real
// processes: every CLI command locally and against a server
// (--log-level debug), `pgrelay serve` with text and JSON logs, every REST
// API route with its error paths, every web UI page with a signed-in
// session and the forms that show errors, jobs whose command step prints
// its environment and whose SQL step fails. It then searches everything
// those produced for the canaries, plain and in simple encodings (base64,
// URL encoding): stdout and stderr of every process, HTTP response bodies
// and headers, the store files (with the WAL), every file under the data
// directory and the runs' temporary directories, and the environment of
// the server and of its children that are not command steps. None may
// appear.
//
// The token canary (TestTokenCanary) does the same for token credentials:
// connections whose password is a token from a command, from Databricks
// Lakebase (an OAuth client secret) and from AlloyDB IAM (a
// service-account key, against local token servers), used through every
// face; the client secrets, the key and every OAuth access token and
// database token handed out are then searched for.
//
// The trust test (TestTrustServerPaths) puts a man-in-the-middle at a
// pinned bastion's address (same address, another host key) and checks that
// every server path refuses it, naming both fingerprints: API queries,
// API connection tests (when the API serves them), runs worked by the
// server, and the web UI, which shows the key waiting for approval. It
// also revokes a token in use and checks that every API route and every
// web page refuses it at once.
//
// The tests build the pgrelay binary once (TestMain) and talk to a real
// PostgreSQL and a real OpenSSH bastion (package testenv).
package canary
