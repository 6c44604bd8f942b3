// Package childenv gives the programs pgrelay starts (command steps, SSH
// proxy commands, token commands) its environment without what belongs to
// pgrelay itself: its own settings and secrets (PGRELAY_*, the master key
// and API token among them) and the PostgreSQL and dbt variables of the
// process (PGPASSWORD, say, which may hold the store's password), so that
// a program sees only what pgrelay gives it for its connection.
package childenv

import "strings"

// Clean returns env without pgrelay's own variables (PGRELAY_*), any
// PG* variable and dbt's DBT_PROFILES_DIR, DBT_PROFILE and DBT_TARGET.
func Clean(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PGRELAY_"), strings.HasPrefix(k, "PG"), k == "DBT_PROFILES_DIR",
			k == "DBT_PROFILE", k == "DBT_TARGET":
			continue
		}
		out = append(out, kv)
	}
	return out
}
