package operations_test

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// repoRoot is the module's root directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// runIn runs a command in dir with a time limit and returns its combined
// output; it fails the test when the command fails.
func runIn(t *testing.T, dir string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

const testVersion = "9.8.7-test"

// TestReleaseBinaries builds the release binary of this platform with
// `make dist` (the others are built the same way, with another GOOS and
// GOARCH) and checks it: static, version and commit stamped, checksums
// right. Then, when podman or buildah is installed, it builds the
// container image with `make image` and runs `serve` from the image's root
// file system (podman cannot run containers in every sandbox), as the
// image's user, until it answers /healthz and the image's health check.
func TestReleaseBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binaries and the image: skipped with -short (make test runs it)")
	}
	t.Parallel()
	root := repoRoot(t)
	dist := t.TempDir()
	arch := runtime.GOARCH
	var commit string
	if out, err := git(root, "rev-parse", "HEAD"); err == nil {
		commit = out
	}
	start := time.Now()
	runIn(t, root, 10*time.Minute, "make", "dist", "PLATFORMS=linux/"+arch, "DIST="+dist, "VERSION="+testVersion)
	t.Logf("make dist (linux/%s) took %v", arch, time.Since(start).Round(time.Second))
	bin := filepath.Join(dist, "pgrelay-"+testVersion+"-linux-"+arch)

	t.Run("Dist", func(t *testing.T) {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v): want a static binary", bin, p.Type)
			}
		}
		_ = f.Close()
		var info struct{ Version, Commit string }
		out := runIn(t, dist, time.Minute, bin, "version", "-o", "json")
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatal(err)
		}
		if info.Version != testVersion || (commit != "" && info.Commit != commit) || info.Commit == "" {
			t.Errorf("version %+v, want %s at commit %s", info, testVersion, commit)
		}
		sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(bin)
		sum := sha256.Sum256(data)
		if want := hex.EncodeToString(sum[:]) + "  " + filepath.Base(bin) + "\n"; string(sums) != want {
			t.Errorf("SHA256SUMS:\n%s\nwant\n%s", sums, want)
		}
	})

	t.Run("ContainerImage", func(t *testing.T) { containerImage(t, root, dist, bin) })
}

func containerImage(t *testing.T, root, dist, distBin string) {
	tool := ""
	for _, name := range []string{"podman", "buildah"} {
		if p, err := exec.LookPath(name); err == nil {
			tool = p
			break
		}
	}
	if tool == "" {
		t.Skip("neither podman nor buildah is installed (scripts/install-test-deps.sh installs podman): the container image is not tested")
	}
	// podman wants a short run root (at most 50 characters).
	storage, err := os.MkdirTemp("", "pgr-img-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(storage) })
	flags := []string{"--storage-driver", "vfs", "--root", filepath.Join(storage, "root"), "--runroot", filepath.Join(storage, "run")}
	image := "localhost/pgrelay-test:" + testVersion
	start := time.Now()
	runIn(t, root, 5*time.Minute, "make", "image", "DIST="+dist, "VERSION="+testVersion, "IMAGE="+image,
		"CONTAINER_TOOL="+tool, "CONTAINER_FLAGS="+strings.Join(flags, " "))
	t.Logf("make image took %v", time.Since(start).Round(time.Second))
	ctool := func(args ...string) string {
		t.Helper()
		return runIn(t, storage, 2*time.Minute, tool, append(append([]string(nil), flags...), args...)...)
	}

	var inspect []struct {
		Config struct {
			User       string
			Env        []string
			Entrypoint []string
			Cmd        []string
			Volumes    map[string]any
			WorkingDir string
		}
		HealthCheck *struct{ Test []string } `json:"Healthcheck"`
		Labels      map[string]string
	}
	if err := json.Unmarshal([]byte(ctool("image", "inspect", image)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("image inspect: %v", err)
	}
	cfg := inspect[0].Config
	if !regexp.MustCompile(`^[1-9][0-9]*:[1-9][0-9]*$`).MatchString(cfg.User) {
		t.Errorf("image user %q: want a numeric non-root user and group", cfg.User)
	}
	if _, ok := cfg.Volumes["/var/lib/pgrelay"]; !ok {
		t.Errorf("image volumes %v: want /var/lib/pgrelay", cfg.Volumes)
	}
	if hc := inspect[0].HealthCheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), "healthcheck") {
		t.Errorf("image health check %+v", hc)
	}
	for _, e := range cfg.Env {
		if strings.HasPrefix(e, secret.MasterKeyEnv+"=") || strings.HasPrefix(e, "PGRELAY_STORE=") {
			t.Errorf("the image sets %s", e)
		}
	}
	if inspect[0].Labels["org.opencontainers.image.version"] != testVersion {
		t.Errorf("image labels %v", inspect[0].Labels)
	}

	// The image's root file system, through a container that is created
	// but never started.
	name := "pgrelay-test-" + strconv.Itoa(os.Getpid())
	if !strings.HasSuffix(tool, "podman") {
		t.Skip("the image's file system is read with podman export; buildah built it")
	}
	ctool("create", "--name", name, image)
	t.Cleanup(func() {
		_, _ = exec.Command(tool, append(append([]string(nil), flags...), "rm", "-f", name)...).CombinedOutput()
	})
	// Directories the image's user can enter (t.TempDir's are private).
	top, err := os.MkdirTemp("", "pgr-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(top, "rootfs")
	cmd := exec.Command(tool, append(append([]string(nil), flags...), "export", name)...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	owners, err := untar(stdout, rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(rootfs, "usr/local/bin/pgrelay")
	a, _ := os.ReadFile(bin)
	b, _ := os.ReadFile(distBin)
	if len(a) == 0 || string(a) != string(b) {
		t.Fatal("the image's /usr/local/bin/pgrelay is not the release binary")
	}
	certs, _ := os.ReadFile(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt"))
	if !x509.NewCertPool().AppendCertsFromPEM(certs) {
		t.Error("the image has no CA certificates")
	}
	uid, gid, _ := strings.Cut(cfg.User, ":")
	if o := owners["var/lib/pgrelay"]; strconv.Itoa(o[0]) != uid || strconv.Itoa(o[1]) != gid {
		t.Errorf("/var/lib/pgrelay is owned by %v, want the image's user %s", o, cfg.User)
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp in the image: %v %v, want mode 1777", fi, err)
	}
	passwd, _ := os.ReadFile(filepath.Join(rootfs, "etc/passwd"))
	if !strings.Contains(string(passwd), ":"+uid+":"+gid+":") {
		t.Errorf("/etc/passwd does not name the image's user:\n%s", passwd)
	}

	// Run serve from the root file system as the image would: its
	// environment (the data dir moved to a temporary directory) and its
	// user when this test runs as root.
	data := filepath.Join(top, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/bin:/bin", "PGRELAY_DATA_DIR=" + data, "HOME=" + data}
	for _, e := range cfg.Env {
		if k, _, _ := strings.Cut(e, "="); k == "SSL_CERT_FILE" {
			env = append(env, "SSL_CERT_FILE="+filepath.Join(rootfs, strings.TrimPrefix(e, "SSL_CERT_FILE=")))
		}
	}
	port := testenv.FreePort(t)
	args := append([]string(nil), cfg.Cmd...)
	for i, a := range args {
		if a == "0.0.0.0:8080" {
			args[i] = "127.0.0.1:" + strconv.Itoa(port)
		}
	}
	srv := exec.Command(bin, args...)
	srv.Env = env
	var logs e2etest.Buffer
	srv.Stdout, srv.Stderr = &logs, &logs
	if os.Geteuid() == 0 {
		u, _ := strconv.Atoi(uid)
		g, _ := strconv.Atoi(gid)
		if err := os.Chown(data, u, g); err != nil {
			t.Fatal(err)
		}
		srv.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u), Gid: uint32(g)}}
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
		if t.Failed() {
			t.Logf("serve from the image:\n%s", logs.String())
		}
	})
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve from the image does not answer %s: %v\n%s", url, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	hc := append([]string(nil), inspect[0].HealthCheck.Test...)
	if len(hc) > 0 && (hc[0] == "CMD" || hc[0] == "CMD-SHELL") {
		hc = hc[1:]
	}
	for i, a := range hc {
		hc[i] = strings.Replace(a, "127.0.0.1:8080", "127.0.0.1:"+strconv.Itoa(port), 1)
	}
	if len(hc) == 0 || hc[0] != "/usr/local/bin/pgrelay" {
		t.Fatalf("health check command %v", inspect[0].HealthCheck.Test)
	}
	if out := runIn(t, data, time.Minute, bin, hc[1:]...); !strings.Contains(out, "ok") {
		t.Errorf("the image's health check: %s", out)
	}
	if fi, err := os.Stat(filepath.Join(data, secret.MasterKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("master key made by the image's server: %v %v", fi, err)
	}
}

// untar extracts a tar stream into dir and returns the owner (uid, gid)
// of every entry by its path.
func untar(r io.Reader, dir string) (map[string][2]int, error) {
	owners := map[string][2]int{}
	tr := tar.NewReader(bufio.NewReader(r))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return owners, nil
		}
		if err != nil {
			return nil, err
		}
		name := filepath.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." || strings.HasPrefix(name, "..") {
			continue
		}
		owners[name] = [2]int{h.Uid, h.Gid}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return nil, err
			}
			if err := os.Chmod(p, h.FileInfo().Mode()&(os.ModePerm|os.ModeSticky)); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, h.FileInfo().Mode().Perm())
			if err != nil {
				return nil, err
			}
			_, cerr := io.Copy(f, tr)
			if err := errors.Join(cerr, f.Close()); err != nil {
				return nil, err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("untar: %s: unexpected entry type %c", h.Name, h.Typeflag)
		}
	}
}

// TestSystemdUnit checks deploy/systemd/pgrelay.service with
// `systemd-analyze verify` (no warning allowed) and `systemd-analyze
// security` (exposure at most 2.0), checks the hardening the unit must
// have, and runs its command line with its environment, the master key
// handed over as a credential file.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the systemd unit is not checked")
	}
	root := repoRoot(t)
	unit, err := os.ReadFile(filepath.Join(root, "deploy/systemd/pgrelay.service"))
	if err != nil {
		t.Fatal(err)
	}
	directives := map[string][]string{}
	for _, l := range strings.Split(string(unit), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, _ := strings.Cut(l, "=")
		directives[k] = append(directives[k], v)
	}
	one := func(k string) string {
		if len(directives[k]) != 1 {
			t.Errorf("%s is set %d times, want once", k, len(directives[k]))
			return ""
		}
		return directives[k][0]
	}
	for k, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
		"ReadWritePaths": "/var/lib/pgrelay", "User": "pgrelay", "StateDirectory": "pgrelay", "ProtectHome": "yes",
		"CapabilityBoundingSet": "", "UMask": "0077"} {
		if got := one(k); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	env := map[string]string{}
	for _, e := range directives["Environment"] {
		k, v, _ := strings.Cut(e, "=")
		env[k] = v
	}
	cred, credSource, _ := strings.Cut(one("LoadCredential"), ":")
	if env["PGRELAY_DATA_DIR"] != "/var/lib/pgrelay" || env[secret.MasterKeyFileEnv] != "%d/"+cred || credSource == "" {
		t.Errorf("environment %v and LoadCredential %s:%s: want the data dir in /var/lib/pgrelay and the master key read from the credential",
			env, cred, credSource)
	}
	if _, ok := env[secret.MasterKeyEnv]; ok {
		t.Error("the unit sets the master key itself")
	}

	// systemd-analyze needs ExecStart's program to exist: point it at the
	// binary of this test run.
	const installed = "/usr/local/bin/pgrelay"
	execStart := strings.Fields(one("ExecStart"))
	if len(execStart) < 4 || execStart[0] != installed || execStart[1] != "serve" || execStart[2] != "--addr" {
		t.Fatalf("ExecStart=%v: want %s serve --addr ...", execStart, installed)
	}
	dir := t.TempDir()
	local := filepath.Join(dir, "pgrelay.service")
	if err := os.WriteFile(local, []byte(strings.Replace(string(unit), "ExecStart="+installed, "ExecStart="+binary, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", local)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, stderr.String())
	}
	out, err := exec.Command(analyze, "security", "--offline=yes", local).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for pgrelay.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2.0 {
		t.Errorf("exposure level %s, want at most 2.0:\n%s", m[1], out)
	}

	// The command line with the unit's environment: the data dir and the
	// master key in a credentials directory.
	credDir := t.TempDir()
	key, _ := secret.NewMasterKey()
	if err := secret.CreateKeyFile(filepath.Join(credDir, cred), key); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	s := &site{t: t, dir: data, env: e2etest.ProcessEnv("PGRELAY_DATA_DIR="+data,
		secret.MasterKeyFileEnv+"="+strings.Replace(env[secret.MasterKeyFileEnv], "%d", credDir, 1))}
	srv := s.serve("systemd", execStart[4:]...)
	if resp, err := srv.HTTPClient().Get(srv.URL + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	srv.Stop()
	if _, err := os.Stat(filepath.Join(data, secret.MasterKeyFile)); err == nil {
		t.Error("the server made a master.key although the key came from the credential")
	}
	st := opensWithSQLite(t, data, key)
	if !st[0] {
		t.Error("the store is not sealed with the credential's key")
	}
}
