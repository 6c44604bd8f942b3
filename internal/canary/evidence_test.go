package canary_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"html"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// needle is one form of a canary to search for.
type needle struct {
	// canary names the secret, e.g. "password 1"; outputs allow a
	// canary by this name.
	canary string
	// form says how it is written: "plain", "base64", ...
	form  string
	value []byte
}

// canaries is the set of secrets the test searches for. Safe for
// concurrent use.
type canaries struct {
	mu      sync.Mutex
	needles []needle
	seen    map[string]bool
}

// add adds a secret in its plain form only.
func (c *canaries) add(name, form string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(value) < 8 {
		panic("canary " + name + " is too short to search for")
	}
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	k := name + "\x00" + string(value)
	if c.seen[k] {
		return
	}
	c.seen[k] = true
	c.needles = append(c.needles, needle{canary: name, form: form, value: append([]byte(nil), value...)})
}

// addText adds a secret string with its simple encodings: base64
// (standard, URL, unpadded), hex, URL query, path and userinfo escaping.
// A password of newPassword also adds its random core, which finds the
// secret even when its punctuation was mangled (by a format verb, say).
func (c *canaries) addText(name, value string) {
	c.add(name, "plain", []byte(value))
	if i := strings.IndexAny(value, "+/@:%"); i >= 12 {
		c.add(name, "random core", []byte(value[:i]))
	}
	c.addEncodings(name, []byte(value))
	c.add(name, "url query escaped", []byte(url.QueryEscape(value)))
	c.add(name, "url path escaped", []byte(url.PathEscape(value)))
	c.add(name, "url userinfo escaped", []byte(strings.TrimSuffix(url.UserPassword("u", value).String()[2:], "@")))
}

// addEncodings adds the base64 and hex forms of value.
func (c *canaries) addEncodings(name string, value []byte) {
	c.add(name, "base64", []byte(base64.StdEncoding.EncodeToString(value)))
	c.add(name, "base64 unpadded", []byte(base64.RawStdEncoding.EncodeToString(value)))
	c.add(name, "base64url", []byte(base64.URLEncoding.EncodeToString(value)))
	c.add(name, "base64url unpadded", []byte(base64.RawURLEncoding.EncodeToString(value)))
	c.add(name, "hex", []byte(hex.EncodeToString(value)))
}

func (c *canaries) list() []needle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]needle(nil), c.needles...)
}

// count returns how many distinct canaries (by name) there are.
func (c *canaries) count() int {
	names := map[string]bool{}
	for _, n := range c.list() {
		names[n.canary] = true
	}
	return len(names)
}

// newPassword returns a unique password that differs from its URL and
// base64 encodings and survives shells, YAML and SQL quoting.
func newPassword(label string) string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return "cnry" + label + "-" + base64.RawURLEncoding.EncodeToString(b) + "+/@:%x"
}

// item is one piece of evidence: something pgrelay wrote or exposed.
type item struct {
	where string
	data  []byte
	allow map[string]bool
}

// evidence collects everything the test searches. Safe for concurrent use.
type evidence struct {
	mu    sync.Mutex
	items []item
	bytes int
}

// add records data found at where; allow names canaries that may appear
// there (e.g. the token that `token create` shows once).
func (e *evidence) add(where string, data []byte, allow ...string) {
	it := item{where: where, data: append([]byte(nil), data...), allow: map[string]bool{}}
	for _, a := range allow {
		it.allow[a] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.items = append(e.items, it)
	e.bytes += len(data)
}

// addTree records every regular file under root.
func (e *evidence) addTree(t *testing.T, label, root string, allow func(path string) []string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed while we walk (a run ending)
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		var a []string
		if allow != nil {
			a = allow(path)
		}
		rel, _ := filepath.Rel(root, path)
		e.add(label+" file "+rel, b, a...)
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return n
}

// unescaper undoes the escapes of HTML, JSON and JavaScript string
// contexts that would hide a secret from a byte search.
var unescaper = strings.NewReplacer(`\u002b`, "+", `\u002B`, "+", `\x2b`, "+", `\/`, "/", `\u0026`, "&",
	`\u003c`, "<", `\u003e`, ">", `\u003d`, "=", `\x3d`, "=", `\u0040`, "@", `\u0025`, "%", `\x25`, "%")

// check searches every item for every canary and reports each hit
// (without the secret: the context shows it as «CANARY»).
func (e *evidence) check(t *testing.T, c *canaries) {
	t.Helper()
	hits := e.hits(c)
	for _, h := range hits {
		t.Error(h)
	}
	e.mu.Lock()
	n := len(e.items)
	e.mu.Unlock()
	t.Logf("searched %d items (%d KiB) for %d canaries in %d forms: %d hits",
		n, e.size()/1024, c.count(), len(c.list()), len(hits))
}

// hits searches every item for every canary and describes each hit.
func (e *evidence) hits(c *canaries) []string {
	e.mu.Lock()
	items := append([]item(nil), e.items...)
	e.mu.Unlock()
	needles := c.list()
	var hits []string
	for _, it := range items {
		forms := [][]byte{it.data}
		if u := []byte(unescaper.Replace(html.UnescapeString(string(it.data)))); !bytes.Equal(u, it.data) {
			forms = append(forms, u)
		}
		reported := map[string]bool{}
		for _, n := range needles {
			if it.allow[n.canary] || reported[n.canary] {
				continue
			}
			for _, f := range forms {
				i := bytes.Index(f, n.value)
				if i < 0 {
					continue
				}
				reported[n.canary] = true
				lo, hi := max(0, i-120), min(len(f), i+len(n.value)+120)
				ctx := string(f[lo:i]) + "«CANARY»" + string(f[i+len(n.value):hi])
				ctx = strings.ToValidUTF8(ctx, "?")
				hits = append(hits, "LEAK: "+n.canary+" ("+n.form+") in "+it.where+":\n    …"+ctx+"…")
				break
			}
		}
	}
	sort.Strings(hits)
	return hits
}

func (e *evidence) size() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bytes
}

// has reports whether an item was recorded whose label contains sub.
func (e *evidence) has(sub string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, it := range e.items {
		if strings.Contains(it.where, sub) {
			return true
		}
	}
	return false
}

// TestEvidenceFindsPlantedSecrets checks the search itself: a secret
// planted in each simple encoding, or escaped as HTML or JSON would write
// it, is found; allowed canaries and other text are not reported.
func TestEvidenceFindsPlantedSecrets(t *testing.T) {
	t.Parallel()
	pw := newPassword("p")
	c := &canaries{}
	c.addText("password", pw)
	c.add("key", "raw bytes", []byte{0, 1, 2, 3, 250, 251, 252, 253})
	planted := map[string]string{
		"plain":          "x" + pw + "y",
		"base64":         base64.StdEncoding.EncodeToString([]byte(pw)),
		"base64url":      base64.RawURLEncoding.EncodeToString([]byte(pw)),
		"hex":            hex.EncodeToString([]byte(pw)),
		"query escaped":  "?p=" + url.QueryEscape(pw),
		"in a URL":       (&url.URL{Scheme: "postgres", User: url.UserPassword("u", pw), Host: "h"}).String(),
		"HTML attribute": `value="` + strings.NewReplacer("+", "&#43;", "%", "&#37;").Replace(pw) + `"`,
		"JSON escaped":   `{"p": "` + strings.NewReplacer("+", `\u002b`, "/", `\/`).Replace(pw) + `"}`,
		"format mangled": strings.ReplaceAll(pw, "%x", "%!x(MISSING)"),
		"raw bytes":      string([]byte{9, 0, 1, 2, 3, 250, 251, 252, 253, 9}),
	}
	e := &evidence{}
	for where, data := range planted {
		e.add(where, []byte(data))
	}
	e.add("allowed", []byte(pw), "password")
	e.add("clean", []byte("cnryp-nothing-here [redacted]"))
	hits := e.hits(c)
	if len(hits) != len(planted) {
		t.Errorf("%d hits for %d planted secrets:\n%s", len(hits), len(planted), strings.Join(hits, "\n"))
	}
	for where := range planted {
		found := false
		for _, h := range hits {
			found = found || strings.Contains(h, " in "+where+":")
		}
		if !found {
			t.Errorf("the secret planted %s was not found", where)
		}
	}
}
