package jobs

import (
	"errors"
	"io"
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

// TestRunAsNeedsRootWithCapKill: --run-as is refused to a process that is
// not root, even with CAP_SETUID and the others (it would pass them on to
// every command, which could then become root), and to root without
// CAP_KILL, which could not signal the commands: cancels, time limits and
// the end of a step would leave them running.
func TestRunAsNeedsRootWithCapKill(t *testing.T) {
	t.Parallel()
	status := func(capEff string) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("Name:\tpgrelay\nCapEff:\t" + capEff + "\n")), nil
		}
	}
	// CAP_CHOWN (0), CAP_KILL (5), CAP_SETGID (6), CAP_SETUID (7).
	if err := checkRunAsCaps(1000, status("00000000000000e1")); err == nil || !strings.Contains(err.Error(), "needs pgrelay to run as root") {
		t.Fatalf("not root, with all four: %v", err)
	}
	err := checkRunAsCaps(0, status("00000000000000c1"))
	if err == nil || !strings.Contains(err.Error(), "without CAP_KILL") {
		t.Fatalf("root without CAP_KILL: %v", err)
	}
	if err := checkRunAsCaps(0, status("00000000000000e1")); err != nil {
		t.Fatalf("root with all four: %v", err)
	}
	if err := checkRunAsCaps(0, status("000001ffffffffff")); err != nil {
		t.Fatalf("root with every capability: %v", err)
	}
	if err := checkRunAsCaps(0, func() (io.ReadCloser, error) { return nil, errors.New("no /proc") }); err == nil {
		t.Fatal("capabilities unreadable: no error")
	}
}
