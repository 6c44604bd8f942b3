package jobs

import (
	"strings"
	"testing"
)

func TestEffectiveCaps(t *testing.T) {
	t.Parallel()
	caps, err := effectiveCaps(strings.NewReader("Name:\tpgrelay\nCapInh:\t0000000000000000\nCapEff:\t00000000000000c0\n"))
	if err != nil || caps&(1<<capSetUID) == 0 || caps&(1<<capSetGID) == 0 {
		t.Fatalf("CAP_SETUID and CAP_SETGID: %x, %v", caps, err)
	}
	caps, err = effectiveCaps(strings.NewReader("CapEff:\t0000000000000080\n"))
	if err != nil || caps&(1<<capSetGID) != 0 {
		t.Fatalf("CAP_SETUID only: %x, %v", caps, err)
	}
	if _, err := effectiveCaps(strings.NewReader("Name:\tx\n")); err == nil {
		t.Fatal("no CapEff line: no error")
	}
}

func TestWithin(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		root, path string
		want       bool
	}{
		{"/srv/dbt", "/srv/dbt", true},
		{"/srv/dbt", "/srv/dbt/project", true},
		{"/srv/dbt", "/srv/dbt-other", false},
		{"/srv/dbt", "/srv", false},
		{"/srv/dbt", "/srv/dbt/../etc", false},
		{"/", "/etc", true},
	} {
		if got := within(tt.root, tt.path); got != tt.want {
			t.Errorf("within(%q, %q) = %v", tt.root, tt.path, got)
		}
	}
}
