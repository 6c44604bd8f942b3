package audit_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
)

// memLog is an in-memory log for the chain logic; the stores' own tests
// (storetest) check the same against SQLite and PostgreSQL.
type memLog struct {
	chain audit.Chain
	recs  []audit.Record
}

func (m *memLog) append(r audit.Record) {
	audit.Seal(&r, m.chain)
	m.recs = append(m.recs, r)
	m.chain.HeadSeq, m.chain.HeadHash = r.Seq, r.Hash
}

func (m *memLog) AuditChain(context.Context) (audit.Chain, error) { return m.chain, nil }

func (m *memLog) AuditAfter(_ context.Context, after int64, limit int) ([]audit.Record, error) {
	var out []audit.Record
	for _, r := range m.recs {
		if r.Seq > after && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func sample(i int) audit.Record {
	return audit.Record{Time: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600)).Add(time.Duration(i) * time.Second),
		Actor: audit.Actor{Kind: audit.ActorToken, ID: "tok1", Name: "ci"}, Action: "connection.query",
		TargetKind: audit.TargetConnection, Target: "wh", Outcome: audit.OK, Client: "127.0.0.1:5555",
		Use: &audit.Use{KeyFingerprint: "SHA256:abc", Hops: []string{"u@b:22"}, SQLDigests: []string{"d1"}}}
}

func filled(n int) *memLog {
	m := &memLog{}
	for i := range n {
		m.append(sample(i))
	}
	return m
}

func TestVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := filled(2500)
	v, err := audit.Verify(ctx, m)
	if err != nil || !v.OK || v.Records != 2500 {
		t.Fatalf("intact log: %+v %v", v, err)
	}
	if m.recs[0].PrevHash != "" || m.recs[1].PrevHash != m.recs[0].Hash || m.recs[0].Time.Location() != time.UTC ||
		m.recs[0].Time.Nanosecond()%1000 != 0 {
		t.Fatalf("first records: %+v %+v", m.recs[0], m.recs[1])
	}

	cases := []struct {
		name   string
		tamper func(m *memLog)
		broken int64
	}{
		{"edited", func(m *memLog) { m.recs[1200].Target = "other" }, 1201},
		{"edited use", func(m *memLog) { m.recs[9].Use.SQLDigests[0] = "d2" }, 10},
		{"edited and rehashed", func(m *memLog) {
			m.recs[99].Outcome = audit.Failed
			m.recs[99].Hash = audit.ComputeHash(&m.recs[99])
		}, 101},
		{"deleted", func(m *memLog) { m.recs = append(m.recs[:1500], m.recs[1501:]...) }, 1501},
		{"first deleted", func(m *memLog) { m.recs = m.recs[1:] }, 1},
		{"last deleted", func(m *memLog) { m.recs = m.recs[:len(m.recs)-1] }, 2500},
		{"anchor moved", func(m *memLog) { m.chain.AnchorSeq, m.chain.AnchorHash = 5, m.recs[4].Hash }, 1},
	}
	for _, c := range cases {
		m := filled(2500)
		c.tamper(m)
		v, err := audit.Verify(ctx, m)
		if err != nil || v.OK || v.Broken != c.broken || v.Problem == "" {
			t.Errorf("%s: %+v %v, want broken at %d", c.name, v, err, c.broken)
		}
		if !strings.Contains(v.Error(), "record ") {
			t.Errorf("%s: error %q", c.name, v.Error())
		}
	}

	// Retention: deleting a prefix and moving the anchor keeps it intact.
	m = filled(10)
	m.chain.AnchorSeq, m.chain.AnchorHash = 4, m.recs[3].Hash
	m.recs = m.recs[4:]
	if v, err := audit.Verify(ctx, m); err != nil || !v.OK || v.Records != 6 {
		t.Fatalf("after retention: %+v %v", v, err)
	}
	// An empty log whose records all went.
	m = filled(3)
	m.chain.AnchorSeq, m.chain.AnchorHash = 3, m.recs[2].Hash
	m.recs = nil
	if v, err := audit.Verify(ctx, m); err != nil || !v.OK {
		t.Fatalf("all pruned: %+v %v", v, err)
	}
}

func TestNormalizeRecord(t *testing.T) {
	t.Parallel()
	r := audit.Record{Target: "a\x00b\xff", Use: &audit.Use{}}
	r.Normalize()
	if r.Target != "a\uFFFDb\uFFFD" || r.Use != nil {
		t.Fatalf("normalized: %+v", r)
	}
}

func TestMaskCommand(t *testing.T) {
	t.Parallel()
	tok := "pgr_" + strings.Repeat("A", 43)
	cases := []struct {
		in   []string
		want []string
	}{
		{[]string{"psql", "-c", "select 1", "-p", "5432"}, []string{"psql", "-c", "select 1", "-p", "5432"}},
		{[]string{"tool", "--password=hunter2", "--db-password", "hunter2", "PGPASSWORD=hunter2"},
			[]string{"tool", "--password=[redacted]", "--db-password", "[redacted]", "PGPASSWORD=[redacted]"}},
		{[]string{"psql", "postgresql://u:hunter2@h:5432/db"}, []string{"psql", "postgresql://u:[redacted]@h:5432/db"}},
		{[]string{"psql", "host=h password=hunter2 dbname=d"}, []string{"psql", "host=h password=[redacted] dbname=d"}},
		{[]string{"curl", "-H", "Authorization: Bearer " + tok}, []string{"curl", "-H", "Authorization: Bearer [redacted]"}},
		{[]string{"dbt", "run", "--vars", "{pw: s3cr3tpw}"}, []string{"dbt", "run", "--vars", "{pw: [redacted]}"}},
	}
	for _, c := range cases {
		got := audit.MaskCommand(c.in, "s3cr3tpw")
		if strings.Join(got, "\x00") != strings.Join(c.want, "\x00") {
			t.Errorf("MaskCommand(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestParseSince(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h": now.Add(-24 * time.Hour), "7d": now.Add(-7 * 24 * time.Hour),
		"2026-04-01": time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), "": {},
	} {
		if got, err := audit.ParseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v %v, want %v", in, got, err, want)
		}
	}
	// The message says what is accepted; it does not name the field,
	// which each caller does (--since, the API's fields.since), and
	// so read "since: since \"yesterday\" is not accepted".
	if _, err := audit.ParseSince("yesterday", now); err == nil || !strings.Contains(err.Error(), "7d") ||
		!strings.HasPrefix(err.Error(), `"yesterday" is not accepted`) {
		t.Errorf("bad since: %v", err)
	}
}

// An export quotes text that others wrote: its C1 controls and DEL are
// \u escapes, not raw characters a terminal would act on (the API's
// stream, which a curl prints, as much as the CLI's), and each line
// decodes to the record as sealed, so the hash chain still verifies.
func TestExportEscapesControls(t *testing.T) {
	m := &memLog{}
	for i := range 3 {
		r := sample(i)
		r.Error = "server said \u009b2J\u0085\u009d0;title\a\x7fend"
		r.Use.Commands = [][]string{{"printf", "\u009b31mred"}}
		m.append(r)
	}
	var out strings.Builder
	last, err := audit.Export(context.Background(), m, &out, 0, time.Time{})
	if err != nil || last != 3 {
		t.Fatalf("export: last %d, %v", last, err)
	}
	for _, raw := range []string{"\u009b", "\u0085", "\u009d", "\x7f"} {
		if strings.Contains(out.String(), raw) {
			t.Fatalf("export holds the raw control %q:\n%s", raw, out.String())
		}
	}
	if !strings.Contains(out.String(), `\u009b2J\u0085\u009d0;title\u0007\u007fend`) {
		t.Fatalf("export does not show the controls escaped:\n%s", out.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	back := &memLog{}
	for i, line := range lines {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		if r.Error != m.recs[i].Error || r.Use.Commands[0][1] != m.recs[i].Use.Commands[0][1] || r.Hash != m.recs[i].Hash {
			t.Fatalf("line %d decodes to %+v, want %+v", i+1, r, m.recs[i])
		}
		back.recs = append(back.recs, r)
	}
	back.chain = m.chain
	if v, err := audit.Verify(context.Background(), back); err != nil || !v.OK {
		t.Fatalf("the exported records do not verify: %+v %v", v, err)
	}
}
