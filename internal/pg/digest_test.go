package pg_test

import (
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/pg"
)

func TestNormalize(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{"SELECT 1", "select ?"},
		{"select * from t where a = 'secret' and b = 42.5e-3", "select * from t where a = ? and b = ?"},
		{"select 'it''s' , E'a\\'b', B'1010', X'ff', U&'d\\0061t'", "select ? , ?, ?, ?, ?"},
		{"select $$dollar 'x' $$, $tag$ a $$ b $tag$ from t1", "select ?, ? from t1"},
		{"select $1, col$2 from \"Mixed Case\"\"q\"", "select $1, col$2 from \"Mixed Case\"\"q\""},
		{"select 1 -- password=hunter2\n, 2 /* a /* nested */ hunter2 */ from x", "select ? , ? from x"},
		{"insert into t values (0x1F, 1_000, .5)", "insert into t values (?, ?, ?)"},
		{"  SELECT\n\tA\r\nFROM  T  ", "select a from t"},
		{"select 'unterminated", "select ?"},
	}
	for _, c := range cases {
		if got := pg.Normalize(c.in); got != c.want {
			t.Errorf("Normalize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestDigest: the same statement with other values has the same digest,
// another statement another one, and the digest carries no literal.
func TestDigest(t *testing.T) {
	t.Parallel()
	a := pg.Digest("select * from users where ssn = '123-45-6789'")
	b := pg.Digest("SELECT *  FROM users WHERE ssn = 'other'")
	c := pg.Digest("select * from accounts where ssn = '123-45-6789'")
	if a != b || a == c || len(a) != 32 {
		t.Fatalf("digests %s %s %s", a, b, c)
	}
	if strings.Contains(a, "123") && strings.Contains(pg.Normalize("select '123-45-6789'"), "123") {
		t.Fatal("literal kept")
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"select 'a'", "$$", "$a$ b", "E'\\", "/* /*", "1e", "\"", "U&'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := pg.Normalize(s)
		if strings.Contains(s, "'") && !strings.Contains(s, "\"") && !strings.Contains(s, "--") &&
			!strings.Contains(s, "/*") && strings.Contains(out, "'") {
			t.Fatalf("a quote survived: %q -> %q", s, out)
		}
	})
}

func TestCopiesFromStdin(t *testing.T) {
	t.Parallel()
	for sql, want := range map[string]bool{
		"COPY t FROM STDIN":                                   true,
		"copy t (a, b) from stdin with (format csv)":          true,
		"select 1;\n  Copy public.t FROM stdin;":              true,
		"/* c */ COPY t FROM\n\tSTDIN":                        true,
		"COPY t TO STDOUT":                                    false,
		"COPY t FROM '/tmp/data.csv'":                         false,
		"select 'copy t from stdin'":                          false,
		"-- copy t from stdin\nselect 1":                      false,
		"select $$copy t from stdin$$":                        false,
		`create table "copy; x" (n int); select 1 from stdin`: false,
		"insert into t select * from stdin":                   false,
	} {
		if got := pg.CopiesFromStdin(sql); got != want {
			t.Errorf("CopiesFromStdin(%q) = %v, want %v", sql, got, want)
		}
	}
}
