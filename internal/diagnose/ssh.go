package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

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

// bastion runs resolve, bastion_tcp, ssh_handshake and ssh_auth, and
// returns the tunnel when all passed.
func (r *runner) bastion(ctx context.Context) (*tunnel.Tunnel, bool) {
	ts := r.spec.Tunnel
	addr := net.JoinHostPort(ts.Host, strconv.Itoa(ts.Port))

	start := time.Now()
	ips, detail, err := r.resolve(ctx, ts.Host)
	if err == nil {
		ips, detail, err = r.permit(ts.Host, ips, ts.Port, detail)
	}
	if err != nil {
		r.fail(StepResolve, start, err, r.hintResolve(ts.Host, err, true))
		return nil, false
	}
	r.ok(StepResolve, start, detail, "")

	signer := r.in.Signer
	if signer == nil {
		// A draft without a key pair still gets through TCP and the
		// handshake; the bastion refuses this key at ssh_auth.
		if signer, err = ephemeralSigner(); err != nil {
			r.fail(StepBastionTCP, time.Now(), err, "")
			return nil, false
		}
	}

	prog := &sshProgress{}
	wd := newWatchdog(ctx, r.in.StepTimeout)
	defer wd.stop()
	cfg := tunnel.Config{
		Addr:     addr,
		User:     ts.User,
		Signer:   signer,
		HostKeys: r.in.HostKeys,
		// The watchdog bounds each of TCP, handshake and authentication;
		// this only bounds the three together.
		DialTimeout:       3 * r.in.StepTimeout,
		KeepaliveInterval: ts.KeepaliveInterval.Duration(),
		KeepaliveCountMax: ts.KeepaliveCountMax,
		Logger:            r.log,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dialIPs(ctx, r.in.Network, ips, ts.Port)
			if err == nil {
				prog.mu.Lock()
				prog.tcpAt, prog.local = time.Now(), c.LocalAddr()
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
	if len(r.in.HostKeys) == 0 && !r.in.ApproveHostKeys {
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
	r.report.SSH = p.algos

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
	r.okAt(StepBastionTCP, start, p.tcpAt, fmt.Sprintf("connected to %s from %s", addr, p.local), "")

	// ssh_handshake
	if p.keyAt.IsZero() {
		var mismatch *tunnel.HostKeyMismatchError
		if errors.As(err, &mismatch) && mismatch.PresentedKey != nil {
			state := HostKeyChanged
			if len(mismatch.Pinned) == 0 && r.in.ApproveHostKeys {
				state = HostKeyUnapproved
			}
			r.report.HostKey = &HostKey{Fingerprint: mismatch.Presented, State: state,
				Pinned: mismatch.Pinned, Key: mismatch.PresentedKey}
		}
		if wd.timedOut() {
			err = &StepTimeoutError{Step: StepSSHHandshake, After: r.in.StepTimeout, Err: err}
		}
		r.failAt(StepSSHHandshake, p.tcpAt, end, err, r.hintHandshake(addr, err))
		return nil, false
	}
	hk := &HostKey{Fingerprint: ssh.FingerprintSHA256(p.key), State: HostKeyPinned, Key: p.key}
	for _, k := range r.in.HostKeys {
		hk.Pinned = append(hk.Pinned, ssh.FingerprintSHA256(k))
	}
	var hkDetail string
	switch {
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
	r.report.HostKey = hk
	if p.algos != nil {
		hkDetail += "; negotiated " + p.algos.String()
	}
	r.okAt(StepSSHHandshake, p.tcpAt, p.keyAt, hkDetail, "")

	// ssh_auth
	var authErr *tunnel.AuthError
	if r.in.Signer == nil && errors.As(err, &authErr) {
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
	if r.in.Signer == nil {
		// Only reachable if a bastion let the throwaway key in.
		_ = t.Close()
		r.failAt(StepSSHAuth, p.keyAt, end, fmt.Errorf("ssh auth to bastion %s: %w", addr, ErrNoKeyPair), r.hintNoKey())
		return nil, false
	}
	r.okAt(StepSSHAuth, p.keyAt, end, fmt.Sprintf("public key %s accepted for user %s",
		ssh.FingerprintSHA256(signer.PublicKey()), ts.User), "")
	return t, true
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
