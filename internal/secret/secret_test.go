package secret

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// canary is a secret text that must never appear in output.
const canary = "hunter2-canary-7f3a9c"

func TestValuePrintsRedacted(t *testing.T) {
	t.Parallel()
	v := New(canary)
	for _, verb := range []string{"%v", "%s", "%q", "%+v", "%#v", "%x", "%X", "%d", "%10s", "%-20v", "%T"} {
		got := fmt.Sprintf(verb, v)
		if strings.Contains(got, canary) || strings.Contains(got, fmt.Sprintf("%x", canary)) {
			t.Errorf("Sprintf(%q) = %q reveals the secret", verb, got)
		}
		if verb == "%T" {
			continue
		}
		if got != Redacted {
			t.Errorf("Sprintf(%q) = %q, want %q", verb, got, Redacted)
		}
	}
	// Pointers and the plain print functions too.
	for name, got := range map[string]string{
		"Sprint":      fmt.Sprint(v),
		"Sprintln":    fmt.Sprintln(v),
		"pointer %v":  fmt.Sprintf("%v", &v),
		"pointer %+v": fmt.Sprintf("%+v", &v),
		"String":      v.String(),
		"GoString":    v.GoString(),
		"slice %v":    fmt.Sprintf("%v", []Value{v, v}),
		"map %v":      fmt.Sprintf("%v", map[string]Value{"k": v}),
	} {
		if strings.Contains(got, canary) {
			t.Errorf("%s = %q reveals the secret", name, got)
		}
		if !strings.Contains(got, Redacted) {
			t.Errorf("%s = %q does not contain %q", name, got, Redacted)
		}
	}
}

type holder struct {
	User     string
	Password Value
	Ptr      *Value
}

func TestValueInStruct(t *testing.T) {
	t.Parallel()
	v := New(canary)
	h := holder{User: "alice", Password: v, Ptr: &v}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		got := fmt.Sprintf(verb, h)
		if strings.Contains(got, canary) {
			t.Errorf("Sprintf(%q, struct) = %q reveals the secret", verb, got)
		}
		if !strings.Contains(got, Redacted) {
			t.Errorf("Sprintf(%q, struct) = %q lacks %q", verb, got, Redacted)
		}
		if !strings.Contains(got, "alice") {
			t.Errorf("Sprintf(%q, struct) = %q lost the other fields", verb, got)
		}
	}
	if got, want := fmt.Sprintf("%+v", h.Password), Redacted; got != want {
		t.Errorf("field = %q, want %q", got, want)
	}
}

func TestValueSlog(t *testing.T) {
	t.Parallel()
	handlers := map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	}
	for name, mk := range handlers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(mk(&buf))
			v := New(canary)
			log.Info("connect", "password", v, slog.Any("any_password", v),
				slog.Group("grp", "password", v), "holder", holder{User: "alice", Password: v})
			log.With("with_password", v).Info("again")
			out := buf.String()
			if strings.Contains(out, canary) {
				t.Fatalf("log output reveals the secret:\n%s", out)
			}
			if got := strings.Count(out, Redacted); got < 4 {
				t.Errorf("log output has %d %q, want at least 4:\n%s", got, Redacted, out)
			}
			if name == "json" && !strings.Contains(out, `"password":"[redacted]"`) {
				t.Errorf("json log lacks \"password\":\"[redacted]\":\n%s", out)
			}
			if name == "text" && !strings.Contains(out, "password=[redacted]") {
				t.Errorf("text log lacks password=[redacted]:\n%s", out)
			}
		})
	}
}

func TestValueJSON(t *testing.T) {
	t.Parallel()
	v := New(canary)
	type withJSON struct {
		User     string `json:"user"`
		Password Value  `json:"password"`
		Ptr      *Value `json:"ptr"`
	}
	b, err := json.Marshal(withJSON{User: "alice", Password: v, Ptr: &v})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"user":"alice","password":"[redacted]","ptr":"[redacted]"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	// As a map key (encoding.TextMarshaler) too.
	b, err = json.Marshal(map[Value]int{v: 1})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), canary) || !strings.Contains(string(b), Redacted) {
		t.Errorf("json map key = %s", b)
	}
	if txt, _ := v.MarshalText(); string(txt) != Redacted {
		t.Errorf("MarshalText = %q", txt)
	}
}

func TestValueReveal(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", canary, "with spaces and ' \" \\", "ünïcødé", "a\x00b"} {
		v := New(s)
		if got := v.Reveal(); got != s {
			t.Errorf("Reveal() = %q, want %q", got, s)
		}
		if got := v.IsZero(); got != (s == "") {
			t.Errorf("New(%q).IsZero() = %v", s, got)
		}
	}
	var zero Value
	if !zero.IsZero() || zero.Reveal() != "" {
		t.Error("zero Value is not empty")
	}
	if got := fmt.Sprint(zero); got != Redacted {
		t.Errorf("zero Value prints %q, want %q", got, Redacted)
	}
}

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newKeyring(t *testing.T) *Keyring {
	t.Helper()
	k, err := NewKeyring(newKey(t))
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func TestKeyringRoundTrip(t *testing.T) {
	t.Parallel()
	k := newKeyring(t)
	tests := []struct {
		name      string
		plaintext []byte
		ad        []byte
	}{
		{"password", []byte(canary), []byte("connection:wh:password")},
		{"empty plaintext", []byte{}, []byte("connection:wh:password")},
		{"nil associated data", []byte("x"), nil},
		{"binary", []byte{0, 1, 2, 255, 0}, []byte{0}},
		{"large", bytes.Repeat([]byte("k"), 1<<16), []byte("connection:wh:ssh_private_key")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sealed, err := k.Seal(tt.plaintext, tt.ad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if len(tt.plaintext) > 4 && bytes.Contains(sealed, tt.plaintext) {
				t.Error("sealed value contains the plaintext")
			}
			if sealed[0] != 1 {
				t.Errorf("sealed version byte = %d, want 1", sealed[0])
			}
			got, err := k.Open(sealed, tt.ad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tt.plaintext) {
				t.Errorf("Open = %q, want %q", got, tt.plaintext)
			}
		})
	}
}

func TestKeyringOpenFails(t *testing.T) {
	t.Parallel()
	k := newKeyring(t)
	ad := []byte("connection:wh:password")
	sealed, err := k.Seal([]byte(canary), ad)
	if err != nil {
		t.Fatal(err)
	}
	other := newKeyring(t)

	tests := []struct {
		name   string
		k      *Keyring
		sealed []byte
		ad     []byte
	}{
		{"other record", k, sealed, []byte("connection:other:password")},
		{"other field", k, sealed, []byte("connection:wh:ssh_private_key")},
		{"no associated data", k, sealed, nil},
		{"other key", other, sealed, ad},
		{"empty", k, nil, ad},
		{"version only", k, sealed[:1], ad},
		{"truncated", k, sealed[:len(sealed)-1], ad},
		{"header only", k, sealed[:1+12+16], ad},
		{"wrong version", k, append([]byte{2}, sealed[1:]...), ad},
		{"extra byte", k, append(bytes.Clone(sealed), 0), ad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.k.Open(tt.sealed, tt.ad)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", got, err)
			}
			if got != nil {
				t.Errorf("Open returned plaintext %q with an error", got)
			}
		})
	}
}

func TestKeyringTamperedByte(t *testing.T) {
	t.Parallel()
	k := newKeyring(t)
	ad := []byte("connection:wh:password")
	sealed, err := k.Seal([]byte(canary), ad)
	if err != nil {
		t.Fatal(err)
	}
	// Every single byte matters: version, nonce, ciphertext and tag.
	for i := range sealed {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			tampered := bytes.Clone(sealed)
			tampered[i] ^= mask
			if got, err := k.Open(tampered, ad); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open with byte %d ^ %#x = %q, %v; want ErrOpen", i, mask, got, err)
			}
		}
	}
	// The original still opens.
	if _, err := k.Open(sealed, ad); err != nil {
		t.Fatalf("Open(original): %v", err)
	}
}

func TestKeyringSealsDiffer(t *testing.T) {
	t.Parallel()
	k := newKeyring(t)
	ad := []byte("ad")
	a, err := k.Seal([]byte(canary), ad)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal([]byte(canary), ad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal")
	}
	if bytes.Equal(a[1:13], b[1:13]) {
		t.Error("two seals reuse the nonce")
	}
	for _, s := range [][]byte{a, b} {
		if got, err := k.Open(s, ad); err != nil || string(got) != canary {
			t.Errorf("Open = %q, %v", got, err)
		}
	}
}

func TestKeyringSameKeyOpens(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	k1, err := NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := NewKeyring(bytes.Clone(key))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k1.Seal([]byte(canary), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k2.Open(sealed, []byte("ad")); err != nil || string(got) != canary {
		t.Fatalf("a keyring with the same key: Open = %q, %v", got, err)
	}
}

func TestNewKeyringKeySize(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 16, 24, 31, 33, 64} {
		k, err := NewKeyring(make([]byte, n))
		if err == nil {
			t.Errorf("NewKeyring(%d bytes) = %v, want error", n, k)
			continue
		}
		for _, want := range []string{"32 bytes", fmt.Sprintf("got %d", n)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("NewKeyring(%d bytes) error %q lacks %q", n, err, want)
			}
		}
	}
	if _, err := NewKeyring(make([]byte, 32)); err != nil {
		t.Errorf("NewKeyring(32 bytes): %v", err)
	}
}

func TestLoadMasterKeyEnv(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	valid := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		name    string
		env     string
		wantErr []string
	}{
		{name: "valid", env: valid},
		{name: "valid with newline", env: valid + "\n"},
		{name: "valid with spaces", env: "  " + valid + " "},
		{name: "invalid base64", env: "not base64!!", wantErr: []string{MasterKeyEnv, "base64", "32", "openssl rand -base64 32"}},
		{name: "url-safe alphabet", env: strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16))), wantErr: []string{MasterKeyEnv, "base64"}},
		{name: "16 bytes", env: base64.StdEncoding.EncodeToString(key[:16]), wantErr: []string{MasterKeyEnv, "16 bytes", "expected 32", "openssl rand -base64 32"}},
		{name: "33 bytes", env: base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 1)), wantErr: []string{MasterKeyEnv, "33 bytes", "expected 32"}},
		{name: "raw 32 characters", env: strings.Repeat("k", 32), wantErr: []string{MasterKeyEnv, "24 bytes", "expected 32"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			got, err := LoadMasterKey(tt.env, dir)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("LoadMasterKey = %x, want error", got)
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tt.env)) {
					t.Errorf("error %q repeats the key material", err)
				}
			} else {
				if err != nil {
					t.Fatalf("LoadMasterKey: %v", err)
				}
				if !bytes.Equal(got, key) {
					t.Errorf("key = %x, want %x", got, key)
				}
			}
			// The env value never touches the data directory.
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data dir was created (stat: %v)", err)
			}
		})
	}
}

func TestLoadMasterKeyFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nested", "data")
	first, err := LoadMasterKey("", dir)
	if err != nil {
		t.Fatalf("first LoadMasterKey: %v", err)
	}
	if len(first) != KeySize {
		t.Fatalf("key is %d bytes, want %d", len(first), KeySize)
	}
	if bytes.Equal(first, make([]byte, KeySize)) {
		t.Fatal("key is all zeros")
	}
	path := filepath.Join(dir, MasterKeyFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("master key file: %v", err)
	}
	if mode := fi.Mode(); mode != 0o600 {
		t.Errorf("master key file mode = %v, want -rw-------", mode)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !di.IsDir() || di.Mode().Perm()&0o077 != 0 {
		t.Errorf("data dir mode = %v, want a directory private to its owner", di.Mode())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.StdEncoding.EncodeToString(first) + "\n"; string(data) != want {
		t.Errorf("file content = %q, want %q", data, want)
	}

	second, err := LoadMasterKey("", dir)
	if err != nil {
		t.Fatalf("second LoadMasterKey: %v", err)
	}
	if !bytes.Equal(first, second) {
		t.Error("second call returned another key")
	}

	// Another data dir gets another key.
	other, err := LoadMasterKey("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, other) {
		t.Error("two data dirs got the same key")
	}

	// The environment takes precedence over the file.
	envKey := newKey(t)
	got, err := LoadMasterKey(base64.StdEncoding.EncodeToString(envKey), dir)
	if err != nil {
		t.Fatalf("LoadMasterKey(env): %v", err)
	}
	if !bytes.Equal(got, envKey) {
		t.Error("env key did not take precedence over the file")
	}
	// And an invalid env value is an error, not a fallback to the file.
	if got, err := LoadMasterKey("bad!", dir); err == nil {
		t.Errorf("LoadMasterKey(invalid env) = %x with a valid file, want error", got)
	}
	after, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(after, data) {
		t.Errorf("file changed after env loads: %q, %v", after, err)
	}
}

func TestLoadMasterKeyFileWritten(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	tests := []struct {
		name    string
		content string
		wantErr []string
	}{
		{name: "valid", content: base64.StdEncoding.EncodeToString(key) + "\n"},
		{name: "valid without newline", content: base64.StdEncoding.EncodeToString(key)},
		{name: "valid with CRLF", content: base64.StdEncoding.EncodeToString(key) + "\r\n"},
		{name: "empty", content: "", wantErr: []string{"master key file", MasterKeyFile, "0 bytes", "expected 32"}},
		{name: "not base64", content: "this is not a key\n", wantErr: []string{"master key file", MasterKeyFile, "base64", "32"}},
		{name: "wrong length", content: base64.StdEncoding.EncodeToString(key[:20]), wantErr: []string{"master key file", MasterKeyFile, "20 bytes", "expected 32"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, MasterKeyFile)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadMasterKey("", dir)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("LoadMasterKey: %v", err)
				}
				if !bytes.Equal(got, key) {
					t.Errorf("key = %x, want %x", got, key)
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadMasterKey = %x, want error", got)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			// An invalid file is reported, never replaced.
			after, rerr := os.ReadFile(path)
			if rerr != nil || string(after) != tt.content {
				t.Errorf("file was changed to %q (%v)", after, rerr)
			}
		})
	}
}

func TestLoadMasterKeyUnreadable(t *testing.T) {
	t.Parallel()
	// master.key is a directory: reading it fails with something other
	// than "not exist", which must be reported rather than overwritten.
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, MasterKeyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadMasterKey("", dir); err == nil {
		t.Fatalf("LoadMasterKey = %x, want error", got)
	} else if !strings.Contains(err.Error(), "master key") {
		t.Errorf("error %q does not say what failed", err)
	}
}
