package jobs_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// FuzzParseFile feeds arbitrary documents to the jobs YAML parser: it must
// never panic; what it accepts must be valid and must survive a round trip
// through Marshal; what it rejects must say why.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte("jobs:\n  - name: nightly\n    connection: wh\n    schedule: \"0 3 * * *\"\n    timeout: 2h\n    steps:\n      - sql: select 1\n      - command: [dbt, build]\n        workdir: /srv/dbt\n"))
	f.Add([]byte("jobs: []\n"))
	f.Add([]byte("jobs:\n  - name: x\n    connection: y\n    steps: [{sql: a, command: [b]}]\n"))
	f.Add([]byte("jobs:\n  - {name: a, connection: b, steps: [{sql: x}], unknown: 1}\n"))
	f.Add([]byte("jobs:\n  - {name: a, connection: b, retries: 99, schedule: '@every 1s', steps: [{sql: x}]}\n"))
	f.Add([]byte("\x00\xff: ["))
	f.Fuzz(func(t *testing.T, data []byte) {
		js, err := jobs.ParseFile(bytes.NewReader(data))
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("empty error message")
			}
			var ve *fielderr.Error
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					if p.Field == "" || p.Problem == "" {
						t.Fatalf("problem without field or text: %+v", p)
					}
				}
			}
			return
		}
		for _, j := range js {
			if err := j.Validate(); err != nil {
				t.Fatalf("accepted an invalid job: %v", err)
			}
		}
		out, err := jobs.Marshal(js)
		if err != nil {
			t.Fatalf("marshal accepted jobs: %v", err)
		}
		again, err := jobs.ParseFile(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("round trip rejected:\n%s\n%v", out, err)
		}
		if len(again) != len(js) {
			t.Fatalf("round trip changed the number of jobs")
		}
	})
}

// FuzzParseSchedule: cron specs never panic, and accepted ones have a next
// time.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"0 3 * * *", "* * * * * *", "@hourly", "@every 10m", "61 * * * *", "", "* * * * * * *", "0 0 30 2 *", "@every 0s", "CRON_TZ=UTC @every -1m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := jobs.ParseSchedule(spec)
		if err != nil {
			if !strings.Contains(err.Error(), "accepted") {
				t.Fatalf("error does not say what is accepted: %v", err)
			}
			return
		}
		_ = s.Next(testTime)
		if s.Next(time.Now()).IsZero() {
			t.Fatalf("accepted %q, which never fires", spec)
		}
	})
}
