package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// runSetupEnv runs a bastion setup script as root with env added to the
// test's environment, and returns what it printed.
func runSetupEnv(t *testing.T, script string, env ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "setup.sh")
	if err := os.WriteFile(p, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", p)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("setup script with %q: %v\n%s", env, err, out)
	}
	return string(out)
}

// writeKeys replaces the authorized_keys file at path with lines.
func writeKeys(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// expiryRE is the expiry-time option the setup script writes: the local
// time form, which every OpenSSH since 7.7 reads (no trailing Z).
var expiryRE = regexp.MustCompile(`^expiry-time="([0-9]{14})",`)

// rotationUnderWay makes a connection through b for the setup user name,
// runs its setup script, and starts a key rotation whose old key expires
// in 2 hours. It returns the service, the current key and its restricted
// line, and the rotation.
func rotationUnderWay(t *testing.T, b *testenv.Bastion, name, conn string, env ...string) (*fixture, ssh.Signer, string, *app.KeyRotation) {
	t.Helper()
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: conn, Host: "127.0.0.1", Port: 5432, Database: "db",
		User: "u", Password: secret.New("p"), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: name}}); err != nil {
		t.Fatal(err)
	}
	script, err := f.svc.BastionSetup(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	runSetupEnv(t, script, env...)
	old := currentKey(t, f.store, conn)
	restricted, err := f.svc.PublicKey(ctx, conn, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Login(old); err != nil {
		t.Fatalf("login with the key the setup script installed: %v\n%s", err, b.LogTail())
	}
	rot, err := f.svc.RotateKeyStart(ctx, conn, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return f, old, restricted, rot
}

// sshdExpiry is at as sshd reads an expiry-time without Z in loc: the
// clock time in loc's standard time (OpenSSH parses it with tm_isdst 0),
// the standard offset being the lowest within half a year, as the setup
// script takes it.
func sshdExpiry(at time.Time, loc *time.Location) string {
	std := 0
	for k := -6; k <= 6; k++ {
		_, off := at.Add(time.Duration(k) * 2629800 * time.Second).In(loc).Zone()
		if k == -6 || off < std {
			std = off
		}
	}
	return at.UTC().Add(time.Duration(std) * time.Second).Format(sshkey.LocalExpiryTimeFormat)
}

// TestBastionSetupExpiryInLocalTime: during a key rotation the setup
// script gives the current key's line its expiry-time without a trailing
// Z (sshd before 8.5, such as Debian 11's 8.4, refuses the UTC form "…Z"
// and with it the whole line, so the old key stopped working at once),
// computed by the bastion in its zone: here an sshd and a script both in
// UTC+5:30, once without daylight saving time and once with it in effect
// (UTC+6:30), when sshd reads the time as standard time. The line denotes
// the rotation's expiry instant, and sshd accepts the old key with it now.
func TestBastionSetupExpiryInLocalTime(t *testing.T) {
	std := time.FixedZone("XST", 5*3600+30*60)
	// Daylight saving time from 3 days ago to 3 days ahead (POSIX TZ,
	// zero-based days of the year; a range across the new year wraps).
	n := time.Now().UTC().YearDay() - 1
	dst := fmt.Sprintf("XST-5:30XDT-6:30,%d/0,%d/0", (n+362)%365, (n+3)%365)
	for _, tc := range []struct {
		name, tag, tz string
		also          string // another TZ naming the same zone
		dst           bool
	}{
		{name: "no DST", tag: "z", tz: "XST-5:30", also: "Asia/Kolkata"},
		{name: "DST in effect", tag: "y", tz: dst, dst: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := setupUser(t, tc.tag)
			t.Parallel()
			b := testenv.StartBastion(t, testenv.BastionOptions{SystemUser: name, TZ: tc.tz})
			f, old, restricted, rot := rotationUnderWay(t, b, name, "bs"+tc.tag, "TZ="+tc.tz)
			script, err := f.svc.BastionSetup(context.Background(), "bs"+tc.tag)
			if err != nil {
				t.Fatal(err)
			}
			keys := authorizedKeys(t, name)
			check := func(env string) {
				t.Helper()
				runSetupEnv(t, script, env)
				got := keyLinesOf(t, keys, old)
				if len(got) != 1 {
					t.Fatalf("old key's lines after the script with %s: %q, want one", env, got)
				}
				if err := b.Login(old); err != nil {
					t.Fatalf("sshd refused the old key before its expiry-time (%s, line %q): %v\n%s", env, got[0], err, b.LogTail())
				}
				m := expiryRE.FindStringSubmatch(got[0])
				if m == nil {
					t.Fatalf("old key's line after the script with %s: %q, want it to start with expiry-time=\"YYYYMMDDHHMMSS\" (local time, no Z)", env, got[0])
				}
				at, err := time.ParseInLocation(sshkey.LocalExpiryTimeFormat, m[1], std)
				if err != nil || !at.Equal(*rot.OldKeyExpiresAt) {
					t.Fatalf("expiry-time %s read as UTC+5:30 is %v (%v), want the rotation's %v", m[1], at, err, rot.OldKeyExpiresAt.UTC())
				}
				if want := sshkey.WithExpiryValue(restricted, m[1]); got[0] != want {
					t.Fatalf("old key's line after the script with %s: %q, want %q", env, got[0], want)
				}
			}
			check("TZ=" + tc.tz)
			if _, err := os.Stat("/usr/share/zoneinfo/" + tc.also); tc.also != "" && err == nil {
				check("TZ=" + tc.also)
			}

			// sshd enforces a time of this form as standard time in its zone:
			// a minute past refuses the old key, while in daylight saving
			// time the clock time of a minute past still lets it in.
			minuteAgo := time.Now().Add(-time.Minute)
			past := sshkey.WithExpiryValue(restricted, minuteAgo.In(std).Format(sshkey.LocalExpiryTimeFormat))
			writeKeys(t, keys, past, rot.Hops[0].Line)
			if err := b.Login(old); err == nil {
				t.Errorf("sshd accepted the old key after its expiry-time: %s", past)
			}
			if tc.dst {
				clock := sshkey.WithExpiryValue(restricted, minuteAgo.In(time.FixedZone("XDT", 6*3600+30*60)).Format(sshkey.LocalExpiryTimeFormat))
				writeKeys(t, keys, clock, rot.Hops[0].Line)
				if err := b.Login(old); err != nil {
					t.Errorf("sshd refused the old key with the clock time of a minute ago in daylight saving time (%s), "+
						"which it reads as standard time, an hour later: %v", clock, err)
				}
			}
		})
	}
}

// TestBastionSetupExpiryDateForms runs the setup script during a key
// rotation with date commands of other kinds: a BSD-like one (-r SECONDS,
// no -d @SECONDS) gives the same line as GNU's; with one that takes
// neither, the script refuses to write an expiry-time it cannot compute,
// installs the old key's line without it (the old key keeps working) and
// says to remove that line once the new key is promoted.
func TestBastionSetupExpiryDateForms(t *testing.T) {
	name := setupUser(t, "d")
	t.Parallel()
	realDate, err := exec.LookPath("date")
	if err != nil {
		t.Skip("no date command")
	}
	b := testenv.StartBastion(t, testenv.BastionOptions{SystemUser: name})
	f, old, restricted, rot := rotationUnderWay(t, b, name, "bsd")
	script, err := f.svc.BastionSetup(context.Background(), "bsd")
	if err != nil {
		t.Fatal(err)
	}
	keys := authorizedKeys(t, name)
	stub := func(body string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "date"), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return "PATH=" + dir + ":" + os.Getenv("PATH")
	}
	want := sshkey.WithExpiryValue(restricted, sshdExpiry(*rot.OldKeyExpiresAt, time.Local))

	// BSD date: -d is not a date to show (usage error), -r SECONDS is.
	bsd := stub(`u=
[ "$1" = -u ] && { u=-u; shift; }
case $1 in
-r) exec ` + realDate + ` $u -d "@$2" "$3" ;;
*) echo "usage: date [-jnRu] [-r seconds] [+format]" >&2; exit 1 ;;
esac
`)
	runSetupEnv(t, script, bsd)
	if got := keyLinesOf(t, keys, old); len(got) != 1 || got[0] != want {
		t.Fatalf("old key's lines after the script with a BSD date: %q, want only %q", got, want)
	}
	if err := b.Login(old); err != nil {
		t.Fatalf("old key refused before its expiry-time: %v\n%s", err, b.LogTail())
	}

	// A date that shows no given time at all.
	none := stub("echo 'date: invalid option' >&2\nexit 1\n")
	out := runSetupEnv(t, script, none)
	for _, s := range []string{"NOT giving the current key's line its expiry-time", "remove this line from " + keys, restricted,
		rot.OldKeyExpiresAt.UTC().Format(sshkey.LocalExpiryTimeFormat) + " UTC"} {
		if !strings.Contains(out, s) {
			t.Errorf("script output with a date that takes neither form lacks %q:\n%s", s, out)
		}
	}
	if got := keyLinesOf(t, keys, old); len(got) != 1 || got[0] != restricted {
		t.Fatalf("old key's lines after the script with no usable date: %q, want only its line without expiry-time %q", got, restricted)
	}
	c, err := f.store.GetConnection(context.Background(), "bsd")
	if err != nil {
		t.Fatal(err)
	}
	newKey := openSealedKey(t, c.SealedPendingPrivateKey, "pgrelay/connection/"+c.ID+"/ssh_pending_private_key")
	if got := keyLinesOf(t, keys, newKey); len(got) != 1 || got[0] != rot.Hops[0].Line {
		t.Fatalf("new key's lines after the script with no usable date: %q, want only %q", got, rot.Hops[0].Line)
	}
	if err := b.Login(old); err != nil {
		t.Fatalf("old key refused after the script installed its line without expiry-time: %v\n%s", err, b.LogTail())
	}
}

// TestBastionSetupExpiryNegativeDST: in Europe/Dublin tz data makes Irish
// Standard Time (UTC+1, the summer's) the standard time and winter's GMT
// the daylight saving one, so sshd, which reads an expiry-time without Z
// as standard time (mktime with tm_isdst 0), reads it as UTC+1 in every
// season. The setup script took the zone's lowest offset (UTC+0) as its
// standard time, and the old key stopped an hour before the rotation's
// expiry: it now asks awk's mktime, the C library's, as sshd does.
func TestBastionSetupExpiryNegativeDST(t *testing.T) {
	const zone = "Europe/Dublin"
	if _, err := os.Stat("/usr/share/zoneinfo/" + zone); err != nil {
		t.Skip("no tz data for " + zone)
	}
	if _, err := exec.LookPath("awk"); err != nil {
		t.Skip("no awk")
	}
	name := setupUser(t, "n")
	t.Parallel()
	b := testenv.StartBastion(t, testenv.BastionOptions{SystemUser: name, TZ: zone})
	f, old, restricted, rot := rotationUnderWay(t, b, name, "bsn", "TZ="+zone)
	script, err := f.svc.BastionSetup(context.Background(), "bsn")
	if err != nil {
		t.Fatal(err)
	}
	keys := authorizedKeys(t, name)
	ist := time.FixedZone("IST", 3600)

	// The real sshd in Europe/Dublin reads a clock time as UTC+1 even in
	// winter: the clock time of half an hour ahead in UTC+0 is past for it.
	ahead := sshkey.WithExpiryValue(restricted, time.Now().Add(30*time.Minute).UTC().Format(sshkey.LocalExpiryTimeFormat))
	writeKeys(t, keys, ahead, rot.Hops[0].Line)
	if err := b.Login(old); err == nil {
		t.Fatalf("sshd in %s accepted the old key with %s, the UTC+0 clock time of half an hour ahead: it does not read such a time as UTC+1", zone, ahead)
	}
	inIST := sshkey.WithExpiryValue(restricted, time.Now().Add(30*time.Minute).In(ist).Format(sshkey.LocalExpiryTimeFormat))
	writeKeys(t, keys, inIST, rot.Hops[0].Line)
	if err := b.Login(old); err != nil {
		t.Fatalf("sshd in %s refused the old key with %s, the UTC+1 clock time of half an hour ahead: %v\n%s", zone, inIST, err, b.LogTail())
	}

	runSetupEnv(t, script, "TZ="+zone)
	want := sshkey.WithExpiryValue(restricted, rot.OldKeyExpiresAt.In(ist).Format(sshkey.LocalExpiryTimeFormat))
	if got := keyLinesOf(t, keys, old); len(got) != 1 || got[0] != want {
		t.Fatalf("old key's lines after the script in %s: %q, want only %q (the expiry in UTC+1, as sshd reads it there)", zone, got, want)
	}
	if err := b.Login(old); err != nil {
		t.Fatalf("sshd refused the old key before its expiry-time: %v\n%s", err, b.LogTail())
	}
}
