package fielderr_test

import (
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/fielderr"
)

func TestErrorNamesItsSubject(t *testing.T) {
	t.Parallel()
	one := fielderr.New(fielderr.Job, fielderr.Problem{Field: "steps[0].sql", Problem: "empty"})
	if got, want := one.Error(), "invalid job: steps[0].sql: empty"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	two := &fielderr.Error{Problems: one.Prefixed("jobs[1](n).")}
	two.Problems = append(two.Problems, fielderr.Problem{Field: "x", Problem: "bad"})
	if got, want := two.Error(), "invalid request (2 problems):\n  jobs[1](n).steps[0].sql: empty\n  x: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := two.Format(strings.ToUpper); !strings.Contains(got, "JOBS[1](N).STEPS[0].SQL: empty") {
		t.Errorf("Format names fields by the face's words: %q", got)
	}
}
