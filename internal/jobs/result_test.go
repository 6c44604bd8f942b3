package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
)

// TestResultErrIsTyped: a run's Result carries why it did not succeed as
// a typed error that code decides by (errors.As), and Reason as its text.
func TestResultErrIsTyped(t *testing.T) {
	t.Parallel()
	failOpen := func(ctx context.Context, _ string) (jobs.Conn, error) {
		if err := context.Cause(ctx); err != nil {
			return nil, err
		}
		return nil, errors.New("no such bastion")
	}
	job := jobs.Job{Name: "j", Connection: "c", Steps: []jobs.Step{{SQL: "select 1"}, {Command: []string{"rm", "-rf", "/"}}}}
	job.ApplyDefaults()

	// A refused command step: a *StepError naming the step, nothing ran.
	res := (&jobs.Runner{Open: failOpen}).Run(context.Background(), job, jobs.Hooks{})
	var se *jobs.StepError
	if !errors.As(res.Err, &se) || !se.Refused || se.Step != 1 || res.Status != jobs.Failed || res.Reason != se.Error() {
		t.Fatalf("refused step: %T %v (reason %q)", res.Err, res.Err, res.Reason)
	}
	var na *jobs.NotAllowedError
	if !errors.As(res.Err, &na) {
		t.Fatalf("the policy's error is not kept under the step's: %v", res.Err)
	}

	job.Steps = job.Steps[:1]
	// Cancelled before the connection opened: a *CancelledError whose
	// text is the reason recorded with the request, as it is.
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&jobs.CancelledError{Reason: "cancelled by alice"})
	res = (&jobs.Runner{Open: failOpen}).Run(ctx, job, jobs.Hooks{})
	var ce *jobs.CancelledError
	if !errors.As(res.Err, &ce) || res.Status != jobs.Cancelled || res.Reason != "cancelled by alice" {
		t.Fatalf("cancelled: %T %v (status %s, reason %q)", res.Err, res.Err, res.Status, res.Reason)
	}

	// Out of time: a *TimeoutError.
	ctx, stop := context.WithTimeoutCause(context.Background(), time.Nanosecond, &jobs.TimeoutError{After: time.Nanosecond})
	defer stop()
	<-ctx.Done()
	res = (&jobs.Runner{Open: failOpen}).Run(ctx, job, jobs.Hooks{})
	var te *jobs.TimeoutError
	if !errors.As(res.Err, &te) || res.Status != jobs.Failed {
		t.Fatalf("timed out: %T %v (status %s)", res.Err, res.Err, res.Status)
	}
}
