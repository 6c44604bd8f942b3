package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// ErrNoKeyPair is the ssh_auth failure of a draft tested without a key
// pair: keys are generated when a connection is saved.
var ErrNoKeyPair = errors.New("this connection has no SSH key pair yet (one is generated when the connection is saved)")

// sshProgress records how far tunnel.Dial got, from its hooks.
type sshProgress struct {
	mu       sync.Mutex
	tcpAt    time.Time // TCP connection made
	local    net.Addr  // local address of that connection
	keyAt    time.Time // host key accepted
	key      ssh.PublicKey
	firstUse bool
	algos    *tunnel.Negotiated // once the key exchange settled
}

func (p *sshProgress) snapshot() sshProgress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sshProgress{tcpAt: p.tcpAt, local: p.local, keyAt: p.keyAt, key: p.key, firstUse: p.firstUse, algos: p.algos}
}

// hopState is the hop whose steps run.
type hopState struct {
	i, n int
	hop  connection.Hop
	in   HopInput
}

// hops runs the SSH steps of every hop in order (resolve for the first;
// bastion_tcp, ssh_handshake and ssh_auth for each) and returns the hops
// that came up; ok is true when all did.
func (r *runner) hops(ctx context.Context) ([]*tunnel.Tunnel, bool) {
	hops := r.spec.Hops()
	var up []*tunnel.Tunnel
	defer func() { r.cur = nil }()
	for i, h := range hops {
		r.cur = &hopState{i: i, n: len(hops), hop: h, in: r.in.hopInput(i)}
		var prev *tunnel.Tunnel
		if i > 0 {
			prev = up[i-1]
		}
		t, ok := r.hop(ctx, prev)
		if !ok {
			return up, false
		}
		up = append(up, t)
	}
	return up, true
}

// hop runs the steps of the current hop, reached directly (prev nil) or
// through prev, and returns its tunnel when all passed.
func (r *runner) hop(ctx context.Context, prev *tunnel.Tunnel) (*tunnel.Tunnel, bool) {
	cur := r.cur
	h := cur.hop
	addr := h.Addr()
	start := time.Now()

	var dial func(ctx context.Context, network, addr string) (net.Conn, error)
	var tcpDetail func(net.Conn) string
	switch {
	case prev != nil:
		dial = func(ctx context.Context, network, a string) (net.Conn, error) {
			// The hop before resolves a name; an IP literal is checked here.
			if err := r.in.Network.CheckHostPort(a); err != nil {
				return nil, err
			}
			return prev.DialContext(ctx, network, a)
		}
		tcpDetail = func(net.Conn) string {
			return fmt.Sprintf("hop %d opened a channel to %s", cur.i, addr)
		}
	case r.in.FirstHopDial != nil:
		r.notRequested(StepResolve, "not needed: the proxy command reaches the bastion")
		dial = r.in.FirstHopDial
		tcpDetail = func(c net.Conn) string { return fmt.Sprintf("the proxy command %s is connected", c.RemoteAddr()) }
	default:
		ips, detail, err := r.resolve(ctx, h.Host)
		if err == nil {
			ips, detail, err = r.permit(h.Host, ips, h.Port, detail)
		}
		if err != nil {
			r.fail(StepResolve, start, err, r.hintResolve(h.Host, err, true))
			return nil, false
		}
		r.ok(StepResolve, start, detail, "")
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialIPs(ctx, r.in.Network, ips, h.Port)
		}
		tcpDetail = func(c net.Conn) string { return fmt.Sprintf("connected to %s from %s", addr, c.LocalAddr()) }
	}
	start = time.Now()

	signer := cur.in.Signer
	if signer == nil {
		// A draft without a key pair still gets through TCP and the
		// handshake; the bastion refuses this key at ssh_auth.
		var err error
		if signer, err = ephemeralSigner(); err != nil {
			r.fail(StepBastionTCP, time.Now(), err, "")
			return nil, false
		}
	}

	prog := &sshProgress{}
	wd := newWatchdog(ctx, r.in.StepTimeout)
	defer wd.stop()
	var tcpConn net.Conn
	cfg := tunnel.Config{
		Addr:      addr,
		User:      h.User,
		Signer:    signer,
		Fallback:  cur.in.Fallback,
		HostKeys:  cur.in.HostKeys,
		HostTrust: r.in.HostTrust,
		Clock:     r.in.Clock,
		// The watchdog bounds each of TCP, handshake and authentication;
		// this only bounds the three together.
		DialTimeout:       3 * r.in.StepTimeout,
		KeepaliveInterval: r.spec.Tunnel.KeepaliveInterval.Duration(),
		KeepaliveCountMax: r.spec.Tunnel.KeepaliveCountMax,
		Logger:            r.log,
		Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := dial(ctx, network, a)
			if err == nil {
				prog.mu.Lock()
				prog.tcpAt, prog.local = time.Now(), c.LocalAddr()
				tcpConn = c
				prog.mu.Unlock()
				wd.reset()
			}
			return c, err
		},
		HostKeyAccepted: func(key ssh.PublicKey) {
			prog.mu.Lock()
			prog.keyAt, prog.key = time.Now(), key
			prog.mu.Unlock()
			wd.reset()
		},
		OnNegotiated: func(n tunnel.Negotiated) {
			prog.mu.Lock()
			prog.algos = &n
			prog.mu.Unlock()
		},
	}
	if len(cur.in.HostKeys) == 0 && !r.in.ApproveHostKeys {
		cfg.OnFirstUse = func(ssh.PublicKey) error {
			prog.mu.Lock()
			prog.firstUse = true
			prog.mu.Unlock()
			return nil
		}
	}
	t, err := tunnel.Dial(wd.ctx, cfg)
	end := time.Now()
	p := prog.snapshot()
	if err == nil && p.keyAt.IsZero() {
		// Every accepted key passes through HostKeyAccepted; should a
		// tunnel ever come up without it, count the handshake as done.
		p.keyAt, p.key = end, t.HostKey()
	}
	if err == nil && p.algos == nil {
		n := t.Negotiated()
		p.algos = &n
	}
	if cur.i == 0 {
		r.report.SSH = p.algos
	}

	// bastion_tcp
	if p.tcpAt.IsZero() {
		if err == nil {
			err = errors.New("tunnel up without a TCP connection (bug)")
		}
		if wd.timedOut() {
			err = &StepTimeoutError{Step: StepBastionTCP, After: r.in.StepTimeout, Err: err}
		}
		r.failAt(StepBastionTCP, start, end, err, r.hintBastionTCP(addr, err))
		return nil, false
	}
	prog.mu.Lock()
	detail := tcpDetail(tcpConn)
	prog.mu.Unlock()
	r.okAt(StepBastionTCP, start, p.tcpAt, detail, "")

	// ssh_handshake
	if p.keyAt.IsZero() {
		var mismatch *tunnel.HostKeyMismatchError
		if errors.As(err, &mismatch) && mismatch.PresentedKey != nil {
			state := HostKeyChanged
			if len(mismatch.Pinned) == 0 && r.in.ApproveHostKeys {
				state = HostKeyUnapproved
			}
			r.setHostKey(HostKey{Fingerprint: mismatch.Presented, State: state,
				Pinned: mismatch.Pinned, Key: mismatch.PresentedKey})
		}
		if wd.timedOut() {
			err = &StepTimeoutError{Step: StepSSHHandshake, After: r.in.StepTimeout, Err: err}
		}
		r.failAt(StepSSHHandshake, p.tcpAt, end, err, r.hintHandshake(addr, err))
		return nil, false
	}
	hk := HostKey{Fingerprint: ssh.FingerprintSHA256(p.key), State: HostKeyPinned, Key: p.key}
	for _, k := range cur.in.HostKeys {
		hk.Pinned = append(hk.Pinned, ssh.FingerprintSHA256(k))
	}
	var hkDetail string
	cert, isCert := p.key.(*ssh.Certificate)
	switch {
	case isCert:
		hk.Certificate = true
		hk.Fingerprint = ssh.FingerprintSHA256(cert.Key)
		hkDetail = fmt.Sprintf("host certificate for %s signed by the trusted host CA %s (key %s, valid until %s)",
			strings.Join(cert.ValidPrincipals, ","), ssh.FingerprintSHA256(cert.SignatureKey), hk.Fingerprint, certUntil(cert))
	case !p.firstUse:
		hkDetail = fmt.Sprintf("host key %s matches the pinned key", hk.Fingerprint)
	case r.in.PinFirstUse:
		hk.State = HostKeyFirstUse
		hkDetail = fmt.Sprintf("first connection to this bastion: its host key %s is now pinned; "+
			"a different key will be refused", hk.Fingerprint)
	default:
		hk.State = HostKeyFirstUse
		hkDetail = fmt.Sprintf("the bastion presented host key %s (not pinned: nothing is saved by testing a draft)", hk.Fingerprint)
	}
	r.setHostKey(hk)
	if p.algos != nil {
		hkDetail += "; negotiated " + p.algos.String()
	}
	r.okAt(StepSSHHandshake, p.tcpAt, p.keyAt, hkDetail, "")

	// ssh_auth
	var authErr *tunnel.AuthError
	if cur.in.SignErr != nil && (err == nil || errors.As(err, &authErr)) {
		// No certificate for this hop's user: the throwaway key only
		// showed the hop reachable.
		if err == nil {
			_ = t.Close()
		}
		r.failAt(StepSSHAuth, p.keyAt, end, cur.in.SignErr, cur.in.SignHint)
		return nil, false
	}
	if cur.in.Signer == nil && errors.As(err, &authErr) {
		// The bastion refused the throwaway key, as it should.
		r.failAt(StepSSHAuth, p.keyAt, end, fmt.Errorf("ssh auth to bastion %s: %w", addr, ErrNoKeyPair), r.hintNoKey())
		return nil, false
	}
	if err != nil {
		if wd.timedOut() {
			err = &StepTimeoutError{Step: StepSSHAuth, After: r.in.StepTimeout, Err: err}
		}
		r.failAt(StepSSHAuth, p.keyAt, end, err, r.hintAuth(addr, err))
		return nil, false
	}
	if cur.in.Signer == nil {
		// Only reachable if a bastion let the throwaway key in.
		_ = t.Close()
		r.failAt(StepSSHAuth, p.keyAt, end, fmt.Errorf("ssh auth to bastion %s: %w", addr, ErrNoKeyPair), r.hintNoKey())
		return nil, false
	}
	used := signer
	if t.UsedFallback() && cur.in.Fallback != nil {
		used = cur.in.Fallback
	}
	authDetail := fmt.Sprintf("public key %s accepted for user %s", ssh.FingerprintSHA256(used.PublicKey()), h.User)
	if c, ok := used.PublicKey().(*ssh.Certificate); ok {
		authDetail = fmt.Sprintf("certificate (key ID %q) of key %s signed by CA %s accepted for user %s", c.KeyId,
			ssh.FingerprintSHA256(c.Key), ssh.FingerprintSHA256(c.SignatureKey), h.User)
	}
	if t.UsedFallback() {
		r.report.FallbackKeyUsed = true
	}
	if cur.in.Fallback != nil {
		if t.UsedFallback() {
			authDetail += " (the old key: the new key of the rotation is not installed here yet)"
		} else {
			authDetail += " (the new key of the rotation)"
		}
	}
	r.okAt(StepSSHAuth, p.keyAt, end, authDetail, "")
	return t, true
}

// setHostKey records what the current hop presented.
func (r *runner) setHostKey(hk HostKey) {
	c := r.cur
	if c.n > 1 {
		hk.Hop, hk.Addr = c.i+1, c.hop.Addr()
		r.report.HopHostKeys = append(r.report.HopHostKeys, hk)
	}
	if c.i == 0 {
		h := hk
		r.report.HostKey = &h
	}
}

func certUntil(c *ssh.Certificate) string { return certTime(c.ValidBefore) }

// certTime renders a certificate time in UTC.
func certTime(t uint64) string {
	if t == ssh.CertTimeInfinity {
		return "forever"
	}
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}

func (r *runner) okAt(id StepID, start, end time.Time, detail, hint string) {
	r.record(Step{ID: id, Status: StatusOK, DurationMS: ms(end.Sub(start)), Detail: detail, Hint: hint})
}

func (r *runner) failAt(id StepID, start, end time.Time, err error, hint string) {
	r.record(Step{ID: id, Status: StatusFailed, DurationMS: ms(end.Sub(start)), Error: errorText(err),
		Hint: hint, Err: err})
}

// forward opens the channel from the bastion to the database.
func (r *runner) forward(ctx context.Context) (net.Conn, error) {
	// The bastion resolves a name; an IP literal is checked here.
	if err := r.in.Network.CheckHostPort(r.dbAddr()); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.in.StepTimeout)
	defer cancel()
	c, err := r.tunnel.DialContext(ctx, "tcp", r.dbAddr())
	if err != nil {
		if terr := r.tunnel.Err(); terr != nil {
			return nil, terr
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &StepTimeoutError{Step: StepForward, After: r.in.StepTimeout, Err: err}
		}
		return nil, err
	}
	return c, nil
}
