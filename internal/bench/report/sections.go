package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// clientSpecs are the real-client benchmarks (BenchmarkClients), each a
// table with the paths a program can take.
var clientSpecs = []benchSpec{
	clientSpec("Clients/copy/small", "psql copy 100 B rows", "`psql -c '\\copy rows_small to /dev/null'`: rows of 100 bytes (COPY text)"),
	clientSpec("Clients/copy/medium", "psql copy 1 kB rows", "`psql -c '\\copy rows_medium to /dev/null'`: rows of 1 kB"),
	clientSpec("Clients/copy/large", "psql copy 1 MB rows", "`psql -c '\\copy rows_large to /dev/null'`: rows of 1 MB"),
	clientSpec("Clients/pg_dump", "pg_dump -Fc", "`pg_dump -Fc` of a pgbench database to a file (pg_dump compresses; the MB are the tables' COPY text)"),
	clientSpec("Clients/pg_restore", "pg_restore", "`pg_restore --no-owner` of that dump into an empty database (COPY FROM STDIN, then the primary keys)"),
}

func clientSpec(group, short, title string) benchSpec {
	return benchSpec{
		Group: group, Short: short, Title: title,
		Unit: "MB/s", Scale: 1, Shown: "MB/s", Decimals: 0, Higher: true,
		Paths:    []string{pathDirect, pathOpenSSH, pathProxy, pathProxyBase, pathExec},
		CPUScale: 1e9, CPUShown: "s", CPUOp: "GB", CPUPer: "GB",
	}
}

// hasGroup reports whether any sample's benchmark name starts with
// prefix.
func hasGroup(res *results, prefix string) bool {
	for name := range res.samples {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// tunnelCPU is the CPU of the tunnel's own process per unit (ssh's or
// pgrelay's; the other is 0), median over rounds.
func tunnelCPU(res *results, group, path, per string) float64 {
	return median(sumRounds(res, group, path, "cpu-ssh-ns/"+per, "cpu-pgrelay-ns/"+per))
}

// renderClients writes the real-client section.
func renderClients(w io.Writer, res *results) {
	if !hasGroup(res, "Clients/") {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## Real clients: psql, pg_dump and pg_restore")
	p("")
	p("The programs users move data with, run once per round against each path: `direct`, the long-lived `ssh -N -L` " +
		"(`openssh`), `pgrelay proxy` (`pgrelay_proxy`; `pgrelay_proxy_base` is the previous release's, when measured) " +
		"and `pgrelay exec` running the program with its per-run endpoint (`pgrelay_exec`: each run opens its tunnel, so " +
		"its time includes the tunnel's setup, as a job's does). The per-run endpoint and `pgrelay proxy` both go through " +
		"internal/relay, which reads each session's startup phase and then splices raw bytes. MB/s is of the tables' COPY " +
		"text (10⁶ bytes per MB); CPU is per GB of it: the tunnel's own process (ssh, or pgrelay's proxy or exec without " +
		"the program) side by side, then the bastion's sshd and the program itself (the same on every path).")
	p("")
	p("| program | openssh MB/s | proxy × OpenSSH | exec × OpenSSH | CPU s per GB: ssh / proxy / exec | sshd s per GB: openssh / proxy / exec | program s per GB |")
	p("|---|---:|---:|---:|---:|---:|---:|")
	for _, s := range clientSpecs {
		base := median(res.get(s.Group, pathOpenSSH, s.Unit))
		if base <= 0 {
			continue
		}
		cell := func(path string) string {
			m := median(res.get(s.Group, path, s.Unit))
			if m <= 0 {
				return "—"
			}
			return ratioCell(m/base, roundRatios(res, s.Group, path, pathOpenSSH, s.Unit))
		}
		cpu := func(path string) string {
			v := tunnelCPU(res, s.Group, path, "GB")
			if v <= 0 {
				return "—"
			}
			return num(v/1e9, 2)
		}
		sshd := func(path string) string { return num(median(res.get(s.Group, path, "cpu-sshd-ns/GB"))/1e9, 2) }
		p("| %s | %s | %s | %s | %s / %s / %s | %s / %s / %s | %s |", s.Short, num(base, 0), cell(pathProxy), cell(pathExec),
			cpu(pathOpenSSH), cpu(pathProxy), cpu(pathExec), sshd(pathOpenSSH), sshd(pathProxy), sshd(pathExec),
			num(median(res.get(s.Group, pathOpenSSH, "cpu-tool-ns/GB"))/1e9, 2))
	}
	p("")
	p("Ratios are of medians, with their range over the rounds in brackets. CPU is measured per process from `/proc` and " +
		"`getrusage` in ticks of 10 ms, so small copies give coarse figures.")
	p("")
	for _, s := range clientSpecs {
		if len(res.get(s.Group, pathOpenSSH, s.Unit)) == 0 {
			continue
		}
		p("### %s", s.Title)
		p("")
		renderRows(w, res, s)
	}
}

// farDelaysIn returns the delays of the far-bastion results, shortest
// first, as the benchmarks name them ("5ms").
func farDelaysIn(res *results) []string {
	seen := map[string]time.Duration{}
	for name := range res.samples {
		rest, ok := strings.CutPrefix(name, "Far/")
		if !ok {
			continue
		}
		d, _, _ := strings.Cut(rest, "/")
		if v, err := time.ParseDuration(d); err == nil {
			seen[d] = v
		}
	}
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b string) int { return int(seen[a] - seen[b]) })
	return out
}

// renderFar writes the far-bastion section.
func renderFar(w io.Writer, res *results) {
	delays := farDelaysIn(res)
	if len(delays) == 0 {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## A bastion far away")
	p("")
	p("A userspace relay in the benchmark (`internal/bench.LatencyRelay`) sits in front of the bastion and delays every " +
		"byte by a fixed time in each direction (a round trip costs twice the delay); the direct path gets one in front of " +
		"PostgreSQL, as far away. The relay terminates TCP and acknowledges at once, so the TCP handshake's own round trip " +
		"and the interplay of Nagle's algorithm with delayed acknowledgements on a real long path are not modelled " +
		"(the same for every path). Round trips are the client's flights through the relay per setup: the times it sent " +
		"after last hearing from the server.")
	p("")
	for _, d := range delays {
		g := "Far/" + d
		p("### %s one way", d)
		p("")
		p("Time to the first row of `SELECT 1`, from nothing (median of the setups of each round, then of the rounds): " +
			"`pgrelay` is `tunnel.Dial` + pgx through it, `openssh` spawning `ssh -N -L` (polling its port) + pgx through it; " +
			"`pgrelay_warm` is a run of `serve --ssh-warm` after an earlier run of the connection: the tunnel kept open is checked " +
			"with one keepalive and reused, then pgx through it; " +
			"`pgrelay_exec` is `pgrelay exec -- psql -c 'select 1'` as a whole, `openssh_psql` spawning `ssh -N -L`, then the " +
			"same psql through it (its count includes the channel opened by the readiness probe).")
		p("")
		p("| path | median ms | range ms | runs | × OpenSSH | round trips |")
		p("|---|---:|---:|---:|---:|---:|")
		fr := g + "/first_row"
		for _, path := range []string{pathDirect, pathOpenSSH, pathPgrelay, pathWarm, pathOpenSSHPsql, pathExec} {
			xs := res.get(fr, path, "first-row-ms")
			if len(xs) == 0 {
				continue
			}
			base := pathOpenSSH
			if path == pathExec || path == pathOpenSSHPsql {
				base = pathOpenSSHPsql
			}
			vs := "—"
			if path == base {
				vs = "1.00×"
			} else if b := median(res.get(fr, base, "first-row-ms")); b > 0 && path != pathDirect {
				vs = ratioCell(median(xs)/b, roundRatios(res, fr, path, base, "first-row-ms"))
			}
			p("| %s | %s | %s–%s | %d | %s | %s |", path, num(median(xs), 0), num(slices.Min(xs), 0), num(slices.Max(xs), 0),
				len(xs), vs, num(median(res.get(fr, path, "round-trips")), 1))
		}
		p("")
		if len(res.get(fr, pathExec, "first-row-ms")) > 0 {
			p("`pgrelay_exec` and `openssh_psql` are compared with each other.")
			p("")
		}
		for _, part := range []struct{ name, title, unit, shown string }{
			{"session", "A dbt-like session: 4 connections at once, each opened, then 50 statements each in its own BEGIN/COMMIT (simple protocol).", "ms/op", "ms"},
			{"copy", "A 100 MB `COPY ... TO STDOUT` read by pgx on an open connection.", "MB/s", "MB/s"},
		} {
			sg := g + "/" + part.name
			if !hasGroup(res, sg+"/") {
				continue
			}
			p("%s", part.title)
			p("")
			p("| path | median %s | range | runs | × OpenSSH |", part.shown)
			p("|---|---:|---:|---:|---:|")
			base := median(res.get(sg, pathOpenSSH, part.unit))
			for _, path := range []string{pathDirect, pathOpenSSH, pathProxy, pathInProcess} {
				xs := res.get(sg, path, part.unit)
				if len(xs) == 0 {
					continue
				}
				vs := "—"
				if path == pathOpenSSH {
					vs = "1.00×"
				} else if base > 0 {
					vs = ratioCell(median(xs)/base, roundRatios(res, sg, path, pathOpenSSH, part.unit))
				}
				p("| %s | %s | %s–%s | %d | %s |", path, num(median(xs), 0), num(slices.Min(xs), 0), num(slices.Max(xs), 0), len(xs), vs)
			}
			p("")
		}
	}
}

// renderRuns writes the runs-across-processes section.
func renderRuns(w io.Writer, res *results, m machine) {
	if !hasGroup(res, "Runs/") {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## Runs across processes")
	p("")
	p("A batch of short runs (one SQL step, `select 1`, over a connection through the bastion: each run opens its own " +
		"tunnel) submitted at once through the API to 1, 2 and 4 `pgrelay serve` processes sharing one PostgreSQL store " +
		"(a fresh store database for each), each with the default `--max-runs`. Runs per minute are from the first run " +
		"queued to the last ended; queue latency is from queued to started. CPU per run is of the serve processes, " +
		"PostgreSQL (the store and the database the runs query) and the bastion's sshd; the machine's CPU use is over the " +
		"batch, of all cores, other work on the machine included. The ceiling is what the machine's cores could do if " +
		"this CPU per run were the only work. The rows marked `--ssh-warm` run the same batches on processes started with " +
		"`--ssh-warm 60s`: a run takes a tunnel an earlier run of the connection left open (up to `--max-runs` per " +
		"connection and process) instead of logging in to the bastion; their × is against one such process.")
	p("")
	p("| processes | runs/min | × one process | queue p50 ms | queue p99 ms | CPU ms per run: serve / postgres / sshd | machine CPU %% | CPU ceiling runs/min |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, path := range []string{"p1", "p2", "p4", "p1_warm", "p2_warm", "p4_warm"} {
		xs := res.get("Runs", path, "runs/min")
		if len(xs) == 0 {
			continue
		}
		med := median(xs)
		base := "p1"
		if strings.HasSuffix(path, "_warm") {
			base = "p1_warm"
		}
		one := median(res.get("Runs", base, "runs/min"))
		vs := "—"
		if path == base {
			vs = "1.00×"
		} else if one > 0 {
			vs = ratioCell(med/one, roundRatios(res, "Runs", path, base, "runs/min"))
		}
		get := func(u string) float64 { return median(res.get("Runs", path, u)) }
		perRun := get("cpu-serve-ms/run") + get("cpu-postgres-ms/run") + get("cpu-sshd-ms/run")
		ceiling := "—"
		if perRun > 0 && m.Cores > 0 {
			ceiling = num(float64(m.Cores)*60000/perRun, 0)
		}
		label := strings.TrimPrefix(path, "p")
		if n, ok := strings.CutSuffix(label, "_warm"); ok {
			label = n + ", `--ssh-warm`"
		}
		p("| %s | %s%s | %s | %s | %s | %s / %s / %s | %s | %s |", label, num(med, 0),
			rangeNote(xs, 0), vs, num(get("queue-p50-ms"), 0), num(get("queue-p99-ms"), 0),
			num(get("cpu-serve-ms/run"), 1), num(get("cpu-postgres-ms/run"), 1), num(get("cpu-sshd-ms/run"), 1),
			num(get("machine-cpu-%"), 0), ceiling)
	}
	p("")
}

// loginRows are the rows of the bastion login table: BastionLogin's
// sub-benchmarks and what each one is.
var loginRows = []struct{ path, kex, key string }{
	{"pgrelay", "pgrelay's list (X25519 here)", "ed25519 (pgrelay's default)"},
	{"x25519_ed25519", "X25519", "ed25519"},
	{"x25519_rsa3072", "X25519", "RSA 3072 (rsa-sha2-512)"},
	{"x25519_ecdsa256", "X25519", "ECDSA P-256"},
	{"p256_ed25519", "NIST P-256", "ed25519"},
	{"p256_ecdsa256", "NIST P-256", "ECDSA P-256"},
}

// renderLogin writes what one login costs the bastion.
func renderLogin(w io.Writer, res *results) {
	if !hasGroup(res, "BastionLogin/") {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## What a login costs the bastion")
	p("")
	p("One login each: TCP connection, SSH handshake, public key authentication and one channel to PostgreSQL, then " +
		"closing; the bastion's sshd forks for each connection, so this is its CPU per run when every run opens its tunnel. " +
		"`pgrelay` is `tunnel.Dial` with pgrelay's own algorithm lists; the other rows log in with x/crypto directly, " +
		"pgrelay's ciphers, and one key exchange and client key type each. Their login time is not pgrelay's: without " +
		"pgrelay's quick acknowledgements during the handshake (internal/tunnel), each login waits out delayed ACKs.")
	p("")
	p("| login | key exchange | client key | median ms | sshd CPU ms | client CPU ms |")
	p("|---|---|---|---:|---:|---:|")
	sshd := map[string]float64{}
	for _, r := range loginRows {
		xs := res.get("BastionLogin", r.path, "ms/op")
		if len(xs) == 0 {
			continue
		}
		sshd[r.path] = median(res.get("BastionLogin", r.path, "cpu-sshd-ns/op")) / 1e6
		p("| %s | %s | %s | %s%s | %s | %s |", r.path, r.kex, r.key, num(median(xs), 1), rangeNote(xs, 1),
			num(sshd[r.path], 1), num(median(res.get("BastionLogin", r.path, "cpu-client-ns/op"))/1e6, 1))
	}
	p("")
	if x, n := sshd["x25519_ed25519"], sshd["p256_ed25519"]; x > 0 && n > 0 {
		p("- Key exchange: sshd spends %s ms per login with X25519 and %s ms with NIST P-256 (%s×).", num(x, 1), num(n, 1),
			num(n/x, 2))
	}
	if e, r, c := sshd["x25519_ed25519"], sshd["x25519_rsa3072"], sshd["x25519_ecdsa256"]; e > 0 && r > 0 && c > 0 {
		p("- Client key: sshd spends %s ms per login with ed25519, %s ms with RSA 3072 and %s ms with ECDSA P-256.",
			num(e, 1), num(r, 1), num(c, 1))
	}
	p("")
}

// renderCipher writes the cipher comparison.
func renderCipher(w io.Writer, res *results) {
	if !hasGroup(res, "Cipher/") {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## Ciphers: AES-128-GCM and ChaCha20-Poly1305")
	p("")
	p("OpenSSH's `ssh` negotiates ChaCha20-Poly1305 by default (its first choice), pgrelay AES-128-GCM (its first choice; " +
		"internal/tunnel sets the list). The same COPY as the throughput benchmark, over OpenSSH's `ssh -L` with each cipher " +
		"(`-c`) and over pgrelay's in-process tunnel with each (ChaCha20 through a second bastion that offers only it). " +
		"The tunnel's CPU is ssh's for OpenSSH and this process's (pgx and the tunnel) for pgrelay.")
	p("")
	p("| path | median MB/s | range | runs | CPU s per GB: tunnel client | sshd |")
	p("|---|---:|---:|---:|---:|---:|")
	type row struct{ path, client string }
	rows := []row{
		{"openssh_chacha20", "ssh"}, {"openssh_aes128gcm", "ssh"},
		{"pgrelay_aes128gcm", "client"}, {"pgrelay_chacha20", "client"},
	}
	med := map[string]float64{}
	cpu := map[string]float64{}
	for _, r := range rows {
		xs := res.get("Cipher", r.path, "MB/s")
		if len(xs) == 0 {
			continue
		}
		med[r.path] = median(xs)
		cpu[r.path] = median(res.get("Cipher", r.path, "cpu-"+r.client+"-ns/GB"))
		p("| %s | %s | %s–%s | %d | %s | %s |", r.path, num(med[r.path], 0), num(slices.Min(xs), 0), num(slices.Max(xs), 0), len(xs),
			num(cpu[r.path]/1e9, 2), num(median(res.get("Cipher", r.path, "cpu-sshd-ns/GB"))/1e9, 2))
	}
	p("")
	faster := func(impl, aes, chacha string) {
		a, c := med[aes], med[chacha]
		if a <= 0 || c <= 0 {
			return
		}
		which := "AES-128-GCM"
		if c > a {
			which = "ChaCha20-Poly1305"
		}
		p("- %s: %s is faster here (%s against %s MB/s; tunnel CPU %s against %s s per GB).", impl, which,
			num(max(a, c), 0), num(min(a, c), 0), num(cpu[aes]/1e9, 2), num(cpu[chacha]/1e9, 2))
	}
	faster("OpenSSH", "openssh_aes128gcm", "openssh_chacha20")
	faster("pgrelay", "pgrelay_aes128gcm", "pgrelay_chacha20")
	if a, c := med["pgrelay_aes128gcm"], med["pgrelay_chacha20"]; a > 0 && c > 0 {
		if a >= c {
			p("- pgrelay's order (AES-128-GCM first) fits this machine. OpenSSH's default (ChaCha20) is part of the gap between " +
				"the `openssh` and `pgrelay` paths in the throughput figures above; `ssh -c aes128-gcm@openssh.com` narrows it.")
		} else {
			p("- ChaCha20-Poly1305 is faster for pgrelay here: pgrelay should offer it first on such machines.")
		}
	}
	p("")
}

// baselineRows are the benchmarks of the before/after comparison of the
// proxy: every one with a pgrelay_proxy_base path.
func baselineRows() []benchSpec {
	var out []benchSpec
	for _, s := range append(slices.Clone(specs), clientSpecs...) {
		if slices.Contains(s.Paths, pathProxyBase) {
			out = append(out, s)
		}
	}
	return out
}

// renderBaseline writes the proxy's before/after comparison.
func renderBaseline(w io.Writer, res *results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	var rows []benchSpec
	for _, s := range baselineRows() {
		if len(res.get(s.Group, pathProxyBase, s.Unit)) > 0 && len(res.get(s.Group, pathProxy, s.Unit)) > 0 {
			rows = append(rows, s)
		}
	}
	if len(rows) == 0 {
		return
	}
	base := res.config["pgrelay-base"]
	if base == "" {
		base = "the baseline build"
	}
	p("## The proxy against the previous release")
	p("")
	p("`pgrelay proxy` of this build against %s (`pgrelay_proxy_base`), side by side in the same rounds, each on its own "+
		"data dir with the same connection. Since v0.1.0 the proxy reads each session's startup phase with pgproto3 "+
		"(internal/relay) before it splices raw bytes, and reads and writes its sockets and the bastion's directly "+
		"(internal/sockio). The startup phase's parsing is not on the data path, so a session's speed here is the "+
		"copy loop's and the sockets': a loss would be the relay's, a gain is sockio's. Speed is this build's over the "+
		"baseline's (higher is better), with its range over the rounds; CPU is the proxy process's per operation.", base)
	p("")
	p("| benchmark | baseline | this build | speed × baseline | proxy CPU per op: baseline / this build |")
	p("|---|---:|---:|---:|---:|")
	for _, s := range rows {
		b, c := median(res.get(s.Group, pathProxyBase, s.Unit)), median(res.get(s.Group, pathProxy, s.Unit))
		speed := ratioCell(c/b, roundRatios(res, s.Group, pathProxy, pathProxyBase, s.Unit))
		if !s.Higher {
			speed = ratioCell(b/c, roundRatios(res, s.Group, pathProxyBase, pathProxy, s.Unit))
		}
		cpuOf := func(path string) string {
			return num(median(res.get(s.Group, path, s.cpuUnit("pgrelay")))/s.CPUScale, 1) + " " + s.CPUShown
		}
		p("| %s | %s %s | %s %s | %s | %s / %s |", s.Short, num(b/s.Scale, s.Decimals), s.Shown, num(c/s.Scale, s.Decimals), s.Shown,
			speed, cpuOf(pathProxyBase), cpuOf(pathProxy))
	}
	p("")
	p("For the real clients the CPU is per GB. A speed ratio whose range includes 1.00 is within noise.")
	p("")
}
