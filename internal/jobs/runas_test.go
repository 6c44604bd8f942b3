package jobs_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestRunAsContainsCommands runs command steps as a throwaway unprivileged
// user: they work over the run's endpoint and files, but cannot read the
// master key, the store or the server's environment, get none of the
// server's variables, run in their own process group and have a private
// TMPDIR. (Not parallel: it sets PGRELAY_MASTER_KEY in this process, the
// "server", whose environment the step must not see.)
func TestRunAsContainsCommands(t *testing.T) {
	u := testenv.NewOSUser(t)
	t.Setenv(secret.MasterKeyEnv, "canary-master-key-not-for-commands")
	e := setup(t, 30*time.Second, 10)
	ra, err := jobs.LookupRunAs(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	// A data dir as pgrelay makes it (mode 0700, master.key 0600), in a
	// directory every user may enter.
	base, err := os.MkdirTemp("", "pgrelay-runas-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(base, "data")
	if _, err := secret.LoadMasterKey("", dataDir); err != nil {
		t.Fatal(err)
	}
	masterKey := filepath.Join(dataDir, secret.MasterKeyFile)
	if err := ra.CheckNoAccess(dataDir); err != nil {
		t.Fatalf("data dir: %v", err)
	}
	r := e.runner(t)
	r.Commands.RunAs = ra
	script := strings.Join([]string{
		`echo "uid=$(id -u) gid=$(id -g)"`,
		`for f in ` + masterKey + ` ` + e.storeFile + ` /proc/` + strconv.Itoa(os.Getpid()) + `/environ; do`,
		`  if cat "$f" >/dev/null 2>&1; then echo "READ $f"; else echo "denied $f"; fi`,
		`done`,
		`echo "pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$"`,
		`echo "tmp=$(stat -c '%u %a' "$TMPDIR") home=$HOME pwd=$(pwd)"`,
		`env | cut -d= -f1 | sort | tr '\n' ' ' | sed 's/^/envkeys=/'; echo`,
		`grep -c 'type: postgres' "$DBT_PROFILES_DIR/profiles.yml"`,
	}, "\n")
	var rec recorder
	res := r.Run(context.Background(), job("wh",
		jobs.Step{Command: []string{"sh", "-c", script}},
		jobs.Step{Command: []string{"psql", "-X", "-At", "-c", "select 'psql as ' || current_user"}}), rec.hooks())
	log := rec.text()
	if res.Status != jobs.Succeeded {
		t.Fatalf("run %+v\n%s", res, log)
	}
	want := []string{
		"uid=" + strconv.Itoa(u.UID) + " gid=" + strconv.Itoa(u.GID),
		"denied " + masterKey, "denied " + e.storeFile, "denied /proc/" + strconv.Itoa(os.Getpid()) + "/environ",
		"tmp=" + strconv.Itoa(u.UID) + " 700 ",
		"[0 stdout] 1", "psql as " + e.user,
	}
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("log lacks %q", w)
		}
	}
	for _, l := range rec.linesOf(0, "stdout") {
		if strings.HasPrefix(l, "READ ") {
			t.Errorf("the command could %s", l)
		}
	}
	// Its own process group, not the server's.
	var pgid, pid int
	for _, l := range rec.linesOf(0, "stdout") {
		if strings.HasPrefix(l, "pgid=") {
			parts := strings.Fields(l)
			pgid, _ = strconv.Atoi(strings.TrimPrefix(parts[0], "pgid="))
			pid, _ = strconv.Atoi(strings.TrimPrefix(parts[1], "pid="))
		}
		if keys, ok := strings.CutPrefix(l, "envkeys="); ok {
			for _, k := range strings.Fields(keys) {
				allowed := []string{"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "TZ", "PWD", "SHLVL", "_",
					"DBT_PROFILES_DIR", "DBT_PROFILE", "DBT_TARGET"}
				if !slices.Contains(allowed, k) && !strings.HasPrefix(k, "PG") && !strings.HasPrefix(k, "LC_") {
					t.Errorf("the command's environment has %s from the server", k)
				}
				if strings.HasPrefix(k, "PGRELAY_") && k != jobs.RunMarkEnv {
					t.Errorf("the command's environment has %s", k)
				}
			}
		}
		if strings.HasPrefix(l, "tmp=") && strings.Contains(l, "home=/root") {
			t.Errorf("HOME is the server's: %s", l)
		}
	}
	if pgid == 0 || pgid != pid || pgid == syscall.Getpgrp() {
		t.Errorf("process group %d of command %d (server's %d)", pgid, pid, syscall.Getpgrp())
	}
	if t.Failed() {
		t.Logf("log:\n%s", log)
	}

	// A data dir the user can read is refused, with the reason.
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ra.CheckNoAccess(dataDir); err == nil || !strings.Contains(err.Error(), "user "+u.Name+" can read "+dataDir+" (mode 0755") {
		t.Errorf("readable data dir: %v", err)
	}
	if err := ra.CheckNoAccess(masterKey); err != nil {
		t.Errorf("master.key (0600) in a readable dir: %v", err)
	}
	// A data dir the user owns is open to it whatever its mode (mode 0000
	// here): its owner may chmod it.
	owned := filepath.Join(base, "owned")
	if err := os.Mkdir(owned, 0o000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	var ae *jobs.AccessError
	if err := ra.CheckNoAccess(owned); !errors.As(err, &ae) || !ae.Owned || !strings.Contains(err.Error(), "owned by "+u.Name) {
		t.Errorf("a data dir owned by the user, mode 0000: %v, want an AccessError saying the user owns it", err)
	}
	// The run-as user must be able to reach its workdir.
	private := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	res = r.Run(context.Background(), job("direct", jobs.Step{Command: []string{"sh", "-c", "pwd"}, Workdir: private}), jobs.Hooks{})
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "as user "+u.Name) || !strings.Contains(res.Reason, "permission denied") {
		t.Errorf("unreachable workdir: %+v", res)
	}
}

// TestRunAsUserCannotRedirectRunFiles: once the run's directory is the
// run-as user's, a command of that user (of another run, say) may put
// symlinks in it. pgrelay, running as root, must have written and given
// away the run's files (profiles.yml, the endpoint's CA certificate) by
// then: written after, through such a symlink, they would overwrite a
// file of root's and make it the user's (/etc/shadow, master.key).
func TestRunAsUserCannotRedirectRunFiles(t *testing.T) {
	u := testenv.NewOSUser(t)
	e := setup(t, 30*time.Second, 10)
	ra, err := jobs.LookupRunAs(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	const want = "root's own file\n"
	canary := filepath.Join(t.TempDir(), "canary")
	if err := os.WriteFile(canary, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.runner(t)
	r.Commands.RunAs = ra
	var planted []string
	jobs.SetOnHandOver(r, func(dir string) {
		// What the user may do in its directory: replace its entries.
		for _, name := range []string{"profiles.yml", "root.crt"} {
			link := filepath.Join(dir, name)
			cmd := exec.Command("ln", "-sfn", canary, link)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("as user %s: ln -sfn %s %s: %v: %s", u.Name, canary, link, err, out)
				continue
			}
			planted = append(planted, link)
		}
	})
	var rec recorder
	res := r.Run(context.Background(), job("direct", jobs.Step{Command: []string{"sh", "-c", "id -u"}}), rec.hooks())
	if res.Status != jobs.Succeeded {
		t.Errorf("run %+v\n%s", res, rec.text())
	}
	if len(planted) != 2 {
		t.Fatalf("the run's directory was not handed over with its files (planted %v)", planted)
	}
	got, err := os.ReadFile(canary)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("root's file was written through the user's symlink: it now holds %q", got)
	}
	fi, err := os.Stat(canary)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
		t.Errorf("root's file was given to the run-as user through a symlink: owner %d:%d", st.Uid, st.Gid)
	}
}

// TestRunAsCommandsGetNoInheritedFiles: a file this process was started
// with (its parent left it open: a master key given as /dev/fd/N, say) does
// not pass on to the commands run as the user of --run-as, who could read
// through it what its own permissions do not let it open. Go marks only
// the files it opens itself close-on-exec.
func TestRunAsCommandsGetNoInheritedFiles(t *testing.T) {
	u := testenv.NewOSUser(t)
	e := setupDirect(t)
	secretFile := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(secretFile, []byte("root's own secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// As a parent process would leave it: open, not close-on-exec.
	fd, err := syscall.Open(secretFile, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	ra, err := jobs.LookupRunAs(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	r := e.runner(t)
	r.Commands.RunAs = ra
	var rec recorder
	n := strconv.Itoa(fd)
	// (A shell reads through it only if it can seek back to its start,
	// e.g. tail -c on the descriptor; that it is open at all is the leak.)
	res := r.Run(context.Background(), job("direct", jobs.Step{Command: []string{"sh", "-c",
		"readlink /proc/$$/fd/" + n + " || echo closed"}}), rec.hooks())
	log := rec.text()
	if res.Status != jobs.Succeeded {
		t.Fatalf("run %+v\n%s", res, log)
	}
	if strings.Contains(log, secretFile) || !strings.Contains(log, "closed") {
		t.Fatalf("a command run as user %s has file descriptor %d, which this process inherited:\n%s", u.Name, fd, log)
	}
}

// TestRunAsWorkdirCheckedAsTheUser: with --run-as, a step's workdir is
// resolved and checked with the run-as user's permissions, not pgrelay's
// (root's): in a directory that user cannot enter, an editor learns from
// the run's reason neither whether a path exists nor where a symlink
// points, and a symlink there into an allowed directory does not let the
// step run. What the user can see is reported as before: a missing
// workdir, a symlink out of --allow-workdir.
func TestRunAsWorkdirCheckedAsTheUser(t *testing.T) {
	u := testenv.NewOSUser(t)
	e := setupDirect(t)
	ra, err := jobs.LookupRunAs(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	// Directories every user may enter, but for private (root's, 0700).
	base, err := os.MkdirTemp("", "pgrelay-workdir-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if base, err = filepath.EvalSymlinks(base); err != nil {
		t.Fatal(err)
	}
	allowed, outside := filepath.Join(base, "allowed"), filepath.Join(base, "outside")
	private := filepath.Join(allowed, "private")
	project := filepath.Join(allowed, "project")
	for _, d := range []string{base, allowed, outside, project, private, filepath.Join(private, "exists")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		filepath.Join(private, "to-outside"): outside,
		filepath.Join(private, "to-project"): project,
		filepath.Join(allowed, "escape"):     outside,
	} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	wds, err := jobs.ResolveWorkdirs([]string{allowed})
	if err != nil {
		t.Fatal(err)
	}
	r := e.runner(t)
	r.Commands.RunAs = ra
	r.Commands.Workdirs = wds
	run := func(workdir string) (jobs.Result, string) {
		t.Helper()
		var rec recorder
		res := r.Run(context.Background(), job("direct", jobs.Step{Command: []string{"sh", "-c", "pwd"}, Workdir: workdir}), rec.hooks())
		return res, rec.text()
	}

	// What the user may see: as before.
	if res, log := run(project); res.Status != jobs.Succeeded || !strings.Contains(log, "[0 stdout] "+project) {
		t.Errorf("allowed workdir: %+v\n%s", res, log)
	}
	gone := filepath.Join(allowed, "gone")
	if res, _ := run(gone); res.Status != jobs.Failed ||
		!strings.Contains(res.Reason, "workdir "+gone+": lstat "+gone+": no such file or directory") {
		t.Errorf("missing workdir the user can see: %+v", res)
	}
	escape := filepath.Join(allowed, "escape")
	if res, _ := run(escape); res.Status != jobs.Failed || !strings.Contains(res.Reason,
		"refused, nothing was run: workdir "+escape+" is not allowed (it resolves to "+outside+"): "+
			"command steps run only inside the directories given with --allow-workdir ("+allowed+")") {
		t.Errorf("symlink out of the allowed directory: %+v", res)
	}

	// What only root may see: one answer for all, the user's.
	private1 := func(policy string) {
		t.Helper()
		reasons := map[string][]string{}
		for _, name := range []string{"exists", "missing", "to-outside", "to-project"} {
			w := filepath.Join(private, name)
			res, log := run(w)
			if res.Status != jobs.Failed || strings.Contains(log, "[0 stdout]") {
				t.Errorf("%s: workdir %s the user cannot reach: %+v\n%s", policy, w, res, log)
			}
			for _, leak := range []string{"no such file", outside, project, "not allowed"} {
				if strings.Contains(res.Reason, leak) {
					t.Errorf("%s: workdir %s: the reason tells %q: %s", policy, w, leak, res.Reason)
				}
			}
			if !strings.Contains(res.Reason, "permission denied") || !strings.Contains(res.Reason, "user "+u.Name) {
				t.Errorf("%s: workdir %s: the reason does not say the user cannot enter it: %s", policy, w, res.Reason)
			}
			r := strings.ReplaceAll(res.Reason, w, "WORKDIR")
			reasons[r] = append(reasons[r], name)
		}
		if len(reasons) != 1 {
			t.Errorf("%s: an editor can tell these workdirs apart by the run's reason:", policy)
			for r, names := range reasons {
				t.Errorf("  %v: %s", names, r)
			}
		}
	}
	private1("--allow-workdir")
	// Without --allow-workdir, the command's own chdir (as the user)
	// is the only check.
	r.Commands.Workdirs = nil
	private1("no --allow-workdir")
}

func TestLookupRunAsRefusesRoot(t *testing.T) {
	t.Parallel()
	if _, err := jobs.LookupRunAs("root"); err == nil || !strings.Contains(err.Error(), "--run-as root: that is root") {
		t.Errorf("root: %v", err)
	}
	if _, err := jobs.LookupRunAs("no-such-user-pgrelay"); err == nil || !strings.Contains(err.Error(), "useradd") {
		t.Errorf("unknown user: %v", err)
	}
}

// TestVerifyFullForCommands: with sslmode verify-full, command steps (psql,
// and a libpq client given the generated profiles.yml as dbt is) check the
// server's certificate against the server's name, not the local endpoint's
// address.
func TestVerifyFullForCommands(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, verifyFullOptions())
	d := pg.NewDatabase(t)
	svc := newService(t)
	for name, host := range map[string]string{"right": "localhost", "wrong": "127.0.0.1"} {
		if _, err := svc.CreateConnection(context.Background(), connection.Spec{Name: name, Host: host, Port: pg.Port,
			Database: d.Name, User: d.User, Password: secret.New(d.Password), SSLMode: connection.SSLVerifyFull,
			SSLRootCert: string(pg.CAPEM)}); err != nil {
			t.Fatal(err)
		}
	}
	r := &jobs.Runner{
		Open:     func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		Commands: jobs.CommandPolicy{Allow: allowlist(t, "sh", "psql")},
	}
	// The profile's host, port, sslmode and sslrootcert, as dbt-postgres
	// passes them to libpq (PGHOSTADDR comes from the environment).
	profile := `p="$DBT_PROFILES_DIR/profiles.yml"
host=$(sed -n 's/^ *host: "\(.*\)"$/\1/p' "$p"); port=$(sed -n 's/^ *port: //p' "$p")
mode=$(sed -n 's/^ *sslmode: //p' "$p"); root=$(sed -n 's/^ *sslrootcert: "\(.*\)"$/\1/p' "$p")
echo "profile host=$host mode=$mode"
psql -X -At "host=$host port=$port dbname=` + d.Name + ` user=` + d.User + ` sslmode=$mode sslrootcert=$root" -c "select 'profile ok'"`
	steps := []jobs.Step{
		{Command: []string{"psql", "-X", "-At", "-c", "select 'psql ok ' || ssl from pg_stat_ssl where pid = pg_backend_pid()"}},
		{Command: []string{"sh", "-c", profile}},
	}
	var rec recorder
	res := r.Run(context.Background(), job("right", steps...), rec.hooks())
	if res.Status != jobs.Succeeded {
		t.Fatalf("verify-full with the server's name: %+v\n%s", res, rec.text())
	}
	for _, w := range []string{"psql ok t", "profile host=localhost mode=verify-full", "profile ok"} {
		if !strings.Contains(rec.text(), w) {
			t.Errorf("log lacks %q:\n%s", w, rec.text())
		}
	}
	for i := range steps {
		var wrong recorder
		res = r.Run(context.Background(), job("wrong", steps[i]), wrong.hooks())
		// pgrelay checks the real hop (verify-full against the name the
		// connection gives) as it logs in itself, and tells the client
		// why it refused.
		if res.Status != jobs.Failed || !strings.Contains(wrong.text(), "failed to verify certificate") ||
			!strings.Contains(res.Reason, "pgrelay could not log in to the database server") {
			t.Errorf("step %d: verify-full against a certificate for another name: %+v\n%s", i+1, res, wrong.text())
		}
	}
}
