package cli

import (
	"github.com/pgrelay/pgrelay/internal/jsonesc"

	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestShowControls(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, in, want string }{
		{"plain", "dbt build: 12 models OK", "dbt build: 12 models OK"},
		{"empty", "", ""},
		{"newline and tab kept", "a\tb\nc", "a\tb\nc"},
		{"unicode kept", "naïve — 日本 ✓ \uFFFD", "naïve — 日本 ✓ \uFFFD"},
		{"backslash kept", `C:\x1b \\`, `C:\x1b \\`},
		{"CSI colour", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"CSI clear screen, cursor home", "\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"CSI erase line", "\x1b[1A\x1b[2Ksucceeded", `\x1b[1A\x1b[2Ksucceeded`},
		{"OSC 52 clipboard, BEL", "\x1b]52;c;ZWNobyBwd25lZA==\x07", `\x1b]52;c;ZWNobyBwd25lZA==\x07`},
		{"OSC 0 title, ST", "\x1b]0;root@prod\x1b\\", `\x1b]0;root@prod\x1b\`},
		{"C1 CSI as UTF-8", "\u009b31mred", `\u009b31mred`},
		{"C1 OSC and ST as UTF-8", "\u009d52;c;eA==\u009c", `\u009d52;c;eA==\u009c`},
		{"C1 bounds", "\u0080\u009f\u00a0", `\u0080\u009f` + "\u00a0"},
		{"C1 CSI as a lone byte", "\x9b31m", `\x9b31m`},
		{"invalid UTF-8 shown, not dropped", "a\xffb\xc3", `a\xffb\xc3`},
		{"lone CR", "10%\r20%\r", `10%\r20%\r`},
		{"CR overwriting a line", "failed\rsucceeded", `failed\rsucceeded`},
		{"CRLF kept as a line end", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"CR before CRLF", "a\r\r\n", `a\r` + "\r\n"},
		{"other C0 and DEL", "\x00\x01\x08\x0b\x0c\x7f", `\x00\x01\x08\x0b\x0c\x7f`},
	} {
		if got := showControls(c.in); got != c.want {
			t.Errorf("%s: showControls(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

func TestCellText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"a\nb":           `a\nb`,
		"a\r\nb":         `a\r\nb`,
		"a\rb":           `a\rb`,
		"\x1b[2Kok\tyes": `\x1b[2Kok` + "\tyes",
	} {
		if got := cellText(in); got != want {
			t.Errorf("cellText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEscapeJSONControls(t *testing.T) {
	t.Parallel()
	v := map[string]string{"text": "\x1b]52;c;eA==\x07 \u009b2J \x7f ok ✓"}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	got := string(jsonesc.Controls(b))
	want := `{"text":"\u001b]52;c;eA==\u0007 \u009b2J \u007f ok ✓"}`
	if got != want {
		t.Fatalf("jsonesc.Controls: %s, want %s", got, want)
	}
	var back map[string]string
	if err := json.Unmarshal([]byte(got), &back); err != nil || back["text"] != v["text"] {
		t.Fatalf("the escaped JSON does not decode to the same text: %q %v", back["text"], err)
	}
	for i := 0; i < len(got); i++ {
		if c := got[i]; c < 0x20 || c == 0x7f || (c == 0xc2 && got[i+1] < 0xa0) {
			t.Fatalf("control byte %#x at %d in %q", c, i, got)
		}
	}
}

func TestReasonCell(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 76) + "✓✓✓ and more"
	if got, want := reasonCell(long), strings.Repeat("x", 76)+"..."; got != want {
		t.Errorf("reasonCell cuts within a character: %q, want %q", got, want)
	}
	if got, want := reasonCell("sh exited with code 3: \x1b[2Kboom"), `sh exited with code 3: \x1b[2Kboom`; got != want {
		t.Errorf("reasonCell = %q, want %q", got, want)
	}
}

// TestServeJSONLogEscapesControls: serve's JSON log lines, which may quote
// a job's command (a run's reason), carry no C1 control or DEL raw (slog's
// JSON handler escapes only C0 controls), and read back as the same text;
// the text format quotes them all.
func TestServeJSONLogEscapesControls(t *testing.T) {
	const reason = "step 1 failed: \x1b]0;t\x07 \u009b2J \x7f é \\u0080 \u00a0end"
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		slog.New(serveLogHandler(&b, format, nil)).Info("run ended", "reason", reason)
		for _, r := range b.String() {
			if (r < 0x20 && r != '\n') || (r >= 0x7f && r <= 0x9f) {
				t.Fatalf("%s log line holds %U raw: %q", format, r, b.String())
			}
		}
		if format != "json" {
			continue
		}
		var rec struct{ Reason string }
		if err := json.Unmarshal(b.Bytes(), &rec); err != nil || rec.Reason != reason {
			t.Fatalf("JSON log line %q reads back as %q (%v), want %q", b.String(), rec.Reason, err, reason)
		}
	}
}

// TestJSONLinesWriter: JSON lines written in pieces cut anywhere, in the
// middle of a C1 control's two bytes too, come out with every C1 control
// and DEL escaped, meaning the same values.
func TestJSONLinesWriter(t *testing.T) {
	t.Parallel()
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	want := []string{"\u009b2J", "a\u0085b\x7f", "日本 ✓", "\u009d0;x\u009c"}
	for _, s := range want {
		if err := enc.Encode(map[string]string{"detail": s}); err != nil {
			t.Fatal(err)
		}
	}
	in.WriteString(`{"detail":"no line end \u009b"}`) // written by Flush
	want = append(want, "no line end \u009b")
	for _, size := range []int{1, 2, 3, 7, in.Len()} {
		var out bytes.Buffer
		w := &jsonLinesWriter{w: &out}
		for b := in.Bytes(); len(b) > 0; {
			n := min(size, len(b))
			if k, err := w.Write(b[:n]); k != n || err != nil {
				t.Fatalf("write: %d %v", k, err)
			}
			b = b[n:]
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if i := bytes.IndexFunc(out.Bytes(), func(r rune) bool { return r == 0x7f || (r >= 0x80 && r <= 0x9f) }); i >= 0 {
			t.Fatalf("pieces of %d: a control character at byte %d: %q", size, i, out.String())
		}
		dec := json.NewDecoder(&out)
		for _, s := range want {
			var v map[string]string
			if err := dec.Decode(&v); err != nil || v["detail"] != s {
				t.Fatalf("pieces of %d: %q %v, want %q", size, v["detail"], err, s)
			}
		}
	}
}
