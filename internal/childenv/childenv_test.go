package childenv_test

import (
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/childenv"
)

func TestCleanDropsPgrelaySecrets(t *testing.T) {
	t.Parallel()
	got := childenv.Clean([]string{"PATH=/usr/bin", "PGRELAY_MASTER_KEY=k", "PGRELAY_TOKEN=t", "PGPASSWORD=p",
		"DBT_PROFILES_DIR=/x", "LANG=C.UTF-8"})
	if strings.Join(got, " ") != "PATH=/usr/bin LANG=C.UTF-8" {
		t.Fatalf("Clean = %q", got)
	}
}
