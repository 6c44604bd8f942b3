package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/sockio"
)

// keepaliveRequest is the request name OpenSSH uses for keepalives in both
// directions.
const keepaliveRequest = "keepalive@openssh.com"

// Tunnel is one authenticated SSH connection to a bastion. It is safe for
// concurrent use.
type Tunnel struct {
	cfg     Config
	log     *slog.Logger
	client  *ssh.Client
	tcp     net.Conn
	hostKey ssh.PublicKey
	algos   Negotiated
	since   time.Time
	// usedFallback is set when the bastion accepted Config.Fallback.
	usedFallback bool

	// transport is the TCP connection as the SSH library sees it.
	transport *transportConn
	// opened is set by the first DialContext, which turns quick
	// acknowledgements on while its channel opens.
	opened atomic.Bool

	done chan struct{}

	mu      sync.Mutex
	err     error // terminal state; set once, under mu
	silence *time.Timer

	// wg counts the goroutines the tunnel started (its own and those of its
	// connections). Add only under mu while err == nil.
	wg sync.WaitGroup

	lastReply        atomic.Int64 // unix nanoseconds of the last keepalive reply
	lastRTT          atomic.Int64 // nanoseconds of the last keepalive's round trip
	serverKeepalives atomic.Int64
	openChannels     atomic.Int64
	// missed counts keepalive intervals passed without a reply (see
	// keepaliveSent); kaMu guards kaPending and kaTimer.
	missed    atomic.Int64
	kaMu      sync.Mutex
	kaPending bool
	kaTimer   *time.Timer
}

// Stats is a snapshot of a tunnel's health.
type Stats struct {
	// LastKeepaliveReply is when the bastion last answered a keepalive
	// (zero before the first reply).
	LastKeepaliveReply time.Time
	// ServerKeepalives counts keepalive requests received from the bastion,
	// both global and on channels.
	ServerKeepalives int64
	// OpenChannels counts connections from DialContext not yet closed.
	OpenChannels int
	// LastKeepaliveRTT is the round trip of the last keepalive answered
	// (zero before the first).
	LastKeepaliveRTT time.Duration
	// MissedKeepalives counts keepalive intervals that passed while a
	// keepalive waited for its reply.
	MissedKeepalives int64
	// Since is when the tunnel came up.
	Since time.Time
}

// handshakeState records what happened during the SSH handshake, so that a
// failure is classified by the phase it reached rather than by its text.
type handshakeState struct {
	presented ssh.PublicKey
	// offer watches what the bastion offers, for [*AlgorithmError].
	offer *offerReader
	// onNegotiated is Config.OnNegotiated.
	onNegotiated func(Negotiated)

	mu             sync.Mutex
	authReached    bool     // the server answered the "none" auth attempt
	methods        []string // methods the server allows
	triedPublicKey bool     // our public key was offered and refused
	negotiated     *Negotiated
}

func (s *handshakeState) authCallback(ctx *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
	s.negotiatedWith(ctx.Metadata.ServerVersion(), ctx.Algorithms)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authReached = true
	s.methods = slices.Clone(ctx.AllowedMethods)
	if slices.Contains(ctx.TriedMethods, "publickey") {
		s.triedPublicKey = true
	}
	return nil, nil // fall back to Config.Auth
}

// negotiatedWith records the negotiated algorithms once and reports them
// to onNegotiated.
func (s *handshakeState) negotiatedWith(version []byte, a ssh.NegotiatedAlgorithms) Negotiated {
	s.mu.Lock()
	if s.negotiated != nil {
		n := *s.negotiated
		s.mu.Unlock()
		return n
	}
	n := newNegotiated(version, a)
	s.negotiated = &n
	s.mu.Unlock()
	if s.onNegotiated != nil {
		s.onNegotiated(n)
	}
	return n
}

// authRefused reports whether the handshake got to authentication and the
// bastion would not accept the public key.
func (s *handshakeState) authRefused() (bool, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.authReached {
		return false, nil
	}
	return s.triedPublicKey || !slices.Contains(s.methods, "publickey"), s.methods
}

// Dial connects to the bastion, verifies its host key, authenticates and
// starts keepalives. The whole of it is bounded by ctx and cfg.DialTimeout.
func Dial(ctx context.Context, cfg Config) (*Tunnel, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With(slog.String("bastion", cfg.Addr), slog.String("user", cfg.User))

	dialCtx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()

	raw, err := cfg.Dial(dialCtx, "tcp", cfg.Addr)
	if err != nil {
		if cerr := ctxError(ctx, isTimeout(err)); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		log.DebugContext(ctx, "ssh bastion connect failed", slog.Any("error", err))
		return nil, &DialError{Addr: cfg.Addr, Err: err}
	}

	t := &Tunnel{
		cfg:  cfg,
		log:  log,
		done: make(chan struct{}),
	}
	// Acknowledge the bastion's packets at once until the first channel is
	// open (see transportConn.quickAck).
	tc := &transportConn{Conn: sockio.Wrap(raw), quickAck: quickAckFunc(raw), obs: cfg.Observer}
	handshakeStart := time.Now()
	tc.setQuickAck(true)
	offer := &offerReader{}
	tc.offer.Store(offer)

	// Bound the handshake: the deadline covers the time-out, the AfterFunc
	// covers the caller cancelling ctx.
	if dl, ok := dialCtx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(dialCtx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })

	st := &handshakeState{offer: offer, onNegotiated: cfg.OnNegotiated}
	signers := newSignerSet(cfg)
	sshCfg := &ssh.ClientConfig{
		Config:            algorithmConfig(),
		User:              cfg.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeysCallback(signers.list)},
		AuthCallback:      st.authCallback,
		HostKeyCallback:   hostKeyCallback(ctx, cfg, st),
		HostKeyAlgorithms: cfg.hostKeyAlgorithms(),
	}
	conn, chans, reqs, err := ssh.NewClientConn(tc, cfg.Addr, sshCfg)
	interrupted := !stop()
	if err == nil && interrupted {
		// The deadline fired just as the handshake completed: treat the
		// connection as unusable rather than race with the reset below.
		conn.Close()
		err = dialCtx.Err()
	}
	if err != nil {
		raw.Close()
		err = classifyHandshakeError(ctx, dialCtx, cfg, st, err)
		log.DebugContext(ctx, "ssh handshake failed", slog.Any("error", err))
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	cfg.Observer.Handshake(time.Since(handshakeStart))
	tc.setQuickAck(false)
	tc.offer.Store(nil)

	t.hostKey = st.presented
	t.usedFallback = signers.fallbackUsed()
	if am, ok := conn.(ssh.AlgorithmsConnMetadata); ok {
		// Usually known since the authentication callback; a bastion that
		// asks for no authentication skips it.
		t.algos = st.negotiatedWith(conn.ServerVersion(), am.Algorithms())
	}
	t.tcp = raw
	t.transport = tc
	// Global requests are ours to answer; NewClient gets a closed channel so
	// that its own handler exits at once.
	noReqs := make(chan *ssh.Request)
	close(noReqs)
	t.client = ssh.NewClient(conn, chans, noReqs)
	t.since = time.Now()

	t.mu.Lock()
	t.silence = time.AfterFunc(cfg.silenceLimit(), t.checkSilence)
	t.wg.Add(3)
	t.mu.Unlock()
	tc.tunnel.Store(t)
	go t.handleRequests(reqs, "global")
	go t.keepaliveLoop()
	go t.waitClosed()

	log.InfoContext(ctx, "ssh tunnel up", slog.String("fingerprint", ssh.FingerprintSHA256(t.hostKey)),
		slog.String("cipher", t.algos.Cipher), slog.String("mac", t.algos.MAC), slog.String("kex", t.algos.KeyExchange),
		slog.String("host_key_algorithm", t.algos.HostKeyAlgorithm), slog.String("server_version", t.algos.ServerVersion))
	return t, nil
}

// classifyHandshakeError turns an error from ssh.NewClientConn into one of
// the package's typed errors, by what the handshake got as far as.
func classifyHandshakeError(ctx, dialCtx context.Context, cfg Config, st *handshakeState, err error) error {
	var hk *HostKeyMismatchError
	if errors.As(err, &hk) {
		return hk
	}
	var revoked *HostKeyRevokedError
	if errors.As(err, &revoked) {
		return revoked
	}
	var certErr *HostCertificateError
	if errors.As(err, &certErr) {
		return certErr
	}
	// A bastion without an algorithm in common ends the handshake at once;
	// what it offered says which part failed.
	if version, offer := st.offer.result(); offer != nil {
		if algErr := noCommonAlgorithm(cfg.Addr, version, offer, cfg.hostKeyAlgorithms()); algErr != nil {
			return &HandshakeError{Addr: cfg.Addr, Err: algErr}
		}
	}
	// The connection's deadline may fire a moment before the context's own
	// timer, so a time-out is attributed by the clock as well.
	timedOut := isTimeout(err)
	if cerr := ctxError(ctx, timedOut); cerr != nil {
		return &HandshakeError{Addr: cfg.Addr, Err: fmt.Errorf("%w: %w", cerr, err)}
	}
	if ctxError(dialCtx, timedOut) != nil {
		return &HandshakeError{Addr: cfg.Addr, Err: fmt.Errorf("no answer within %v: %w", cfg.DialTimeout, err)}
	}
	transportFailed := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
	var ne net.Error
	if errors.As(err, &ne) {
		transportFailed = true
	}
	if refused, methods := st.authRefused(); refused && !transportFailed {
		ae := &AuthError{
			Addr:           cfg.Addr,
			User:           cfg.User,
			KeyFingerprint: ssh.FingerprintSHA256(plainKey(cfg.Signer.PublicKey())),
			Methods:        methods,
			Err:            err,
		}
		if c, ok := cfg.Signer.PublicKey().(*ssh.Certificate); ok {
			ae.Certificate = c
		}
		if cfg.Fallback != nil {
			ae.FallbackFingerprint = ssh.FingerprintSHA256(plainKey(cfg.Fallback.PublicKey()))
		}
		return ae
	}
	return &HandshakeError{Addr: cfg.Addr, Err: err}
}

// ctxError returns ctx's error, or context.DeadlineExceeded when an
// operation timed out at or after ctx's deadline.
func ctxError(ctx context.Context, timedOut bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && timedOut && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// hostKeyCallback fails closed: a presented key is accepted only when its
// marshalled bytes equal a pinned key's, or when nothing is pinned and
// OnFirstUse accepts it. ctx is the dial's, for the log's request ID.
func hostKeyCallback(ctx context.Context, cfg Config, st *handshakeState) ssh.HostKeyCallback {
	return func(_ string, remote net.Addr, key ssh.PublicKey) error {
		st.presented = key
		if handled, err := checkHostTrust(cfg, remote, key); handled {
			if err == nil {
				cfg.hostKeyAccepted(key)
			}
			return err
		}
		pinned := cfg.pinnedKeys()
		presented := key.Marshal()
		for _, k := range pinned {
			if bytes.Equal(k.Marshal(), presented) {
				cfg.hostKeyAccepted(key)
				return nil
			}
		}
		mismatch := &HostKeyMismatchError{
			Addr:         cfg.Addr,
			Presented:    ssh.FingerprintSHA256(key),
			PresentedKey: key,
		}
		for _, k := range pinned {
			mismatch.Pinned = append(mismatch.Pinned, ssh.FingerprintSHA256(k))
		}
		if _, offer := st.offer.result(); offer != nil {
			if want := pinnedNotOffered(pinned, offer); want != nil {
				mismatch.PinnedAlgorithms = want
				for _, a := range offer.ServerHostKeyAlgos {
					mismatch.Offered = append(mismatch.Offered, printable(a))
				}
			}
		}
		if len(pinned) == 0 && len(cfg.authorities()) > 0 {
			// A host CA covers this bastion: a plain key that nobody
			// pinned is not trusted on first use.
			return &HostCertificateError{Addr: cfg.Addr, Reason: CertMissing, Presented: mismatch.Presented,
				PresentedKey: key}
		}
		if len(pinned) == 0 && cfg.OnFirstUse != nil {
			err := cfg.OnFirstUse(key)
			if err == nil {
				cfg.Logger.InfoContext(ctx, "ssh host key trusted on first use", slog.String("bastion", cfg.Addr),
					slog.String("fingerprint", mismatch.Presented))
				cfg.hostKeyAccepted(key)
				return nil
			}
			mismatch.Err = err
		}
		return mismatch
	}
}

// transportConn is the TCP connection under the SSH transport. It notices
// a failed read or write before the SSH library closes the channels, so
// that readers of those channels already see the tunnel as dropped.
//
// During the handshake and the first channel open it also acknowledges
// every read at once (TCP_QUICKACK on Linux). OpenSSH's sshd does not set
// TCP_NODELAY on a session without a terminal, so when it sends two small
// packets in a row (as it does during authentication and around the first
// channel open) Nagle's algorithm holds the second until the first is
// acknowledged, while our side delays that acknowledgement (by up to 40 ms
// on Linux) because it has nothing to send: each such exchange cost a
// delayed-ACK time-out. Afterwards queries and replies alternate, the
// acknowledgement rides on the next packet, and the extra system call per
// read (about 10 µs of CPU per round trip) would be wasted.
type transportConn struct {
	net.Conn
	tunnel atomic.Pointer[Tunnel]
	// offer, during the handshake, watches the bastion's first bytes.
	offer atomic.Pointer[offerReader]

	quickAck func() // acknowledges at once; nil where not supported
	quick    atomic.Bool
	// obs counts the bytes.
	obs Observer
}

// setQuickAck turns quick acknowledgements on or off.
func (c *transportConn) setQuickAck(on bool) {
	if c.quickAck == nil {
		return
	}
	c.quick.Store(on)
	if on {
		c.quickAck()
	}
}

func (c *transportConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.obs.BytesRead(n)
	}
	if o := c.offer.Load(); o != nil && n > 0 && !o.feed(p[:n]) {
		c.offer.Store(nil)
	}
	if err != nil {
		c.failed(err)
	} else if c.quick.Load() {
		// The kernel leaves quick-ack mode by itself: renew it per read.
		c.quickAck()
	}
	return n, err
}

func (c *transportConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.obs.BytesWritten(n)
	}
	if err != nil {
		c.failed(err)
	}
	return n, err
}

func (c *transportConn) failed(err error) {
	if t := c.tunnel.Load(); t != nil {
		t.fail(&DroppedError{Addr: t.cfg.Addr, Err: err})
	}
}

// fail moves the tunnel to its terminal state (once) and closes the SSH
// connection. It reports whether this call did it.
func (t *Tunnel) fail(err error) bool {
	t.mu.Lock()
	if t.err != nil {
		t.mu.Unlock()
		return false
	}
	t.err = err
	close(t.done)
	if t.silence != nil {
		t.silence.Stop()
	}
	t.mu.Unlock()
	t.keepaliveAnswered()

	_ = t.client.Close()
	if errors.Is(err, ErrClosed) {
		t.log.Info("ssh tunnel closed")
	} else {
		t.log.Warn("ssh tunnel dropped", slog.Any("error", err))
	}
	return true
}

// checkSilence runs when the silence timer fires, a silence limit after
// it was last armed. Keepalive replies do not reset the timer: if one came
// since, the timer is re-armed for the rest of the limit, counted from the
// last reply; otherwise the tunnel is dropped.
func (t *Tunnel) checkSilence() {
	limit := t.cfg.silenceLimit()
	silence := t.silentFor()
	if silence < limit {
		t.mu.Lock()
		if t.err == nil {
			t.silence.Reset(limit - silence)
		}
		t.mu.Unlock()
		return
	}
	t.fail(&DroppedError{Addr: t.cfg.Addr, Silence: silence, Err: ErrKeepaliveTimeout})
}

// silentFor is the time since the last keepalive reply (since the tunnel
// came up, before the first).
func (t *Tunnel) silentFor() time.Duration {
	last := t.since
	if ns := t.lastReply.Load(); ns != 0 {
		last = time.Unix(0, ns)
	}
	return time.Since(last)
}

// keepaliveLoop sends keepalive@openssh.com every interval. A request
// waits for its reply, so a frozen bastion holds one request outstanding
// while the silence timer runs out.
//
// The keepalives fall on multiples of the interval (counted from the zero
// time), not on multiples from the moment the tunnel came up: so the
// keepalives of all the tunnels of a process that share an interval are
// due at the same instants, and a process holding many idle tunnels wakes
// once per interval for all of them instead of once per tunnel, which
// costs several times the CPU (docs/benchmarks.md).
func (t *Tunnel) keepaliveLoop() {
	defer t.wg.Done()
	interval := t.cfg.KeepaliveInterval
	timer := time.NewTimer(untilAligned(time.Now(), interval))
	defer timer.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-timer.C:
		}
		// Any reply, success or failure, shows the bastion is alive.
		sent := time.Now()
		t.keepaliveSent()
		if _, _, err := t.client.SendRequest(keepaliveRequest, true, nil); err != nil {
			return // the connection is gone; waitClosed reports it
		}
		t.keepaliveAnswered()
		rtt := time.Since(sent)
		t.lastRTT.Store(int64(rtt))
		t.cfg.Observer.KeepaliveReply(rtt)
		// The silence timer is not reset here: when it fires it measures
		// the silence from this reply and re-arms itself for the rest
		// (checkSilence), which costs one timer event per silence limit
		// instead of one per keepalive.
		now := time.Now()
		t.lastReply.Store(now.UnixNano())
		timer.Reset(untilAligned(now, interval))
	}
}

// untilAligned returns the time from now to the next multiple of interval.
func untilAligned(now time.Time, interval time.Duration) time.Duration {
	return now.Truncate(interval).Add(interval).Sub(now)
}

// handleGlobalRequests answers the bastion's global requests like OpenSSH
// does: keepalives are counted, anything wanting a reply gets a failure.
// The same applies to requests on a channel: OpenSSH's sshd sends its
// keepalive on an open channel when there is one.
func (t *Tunnel) handleRequests(reqs <-chan *ssh.Request, scope string) {
	defer t.wg.Done()
	t.answerRequests(reqs, scope)
}

// answerRequests serves reqs until the SSH library closes it. scope says
// where they come from ("global" or "channel"), for the log.
func (t *Tunnel) answerRequests(reqs <-chan *ssh.Request, scope string) {
	for req := range reqs {
		if req.Type == keepaliveRequest {
			t.serverKeepalives.Add(1)
		}
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
		t.log.Debug("ssh request from bastion answered", slog.String("request", req.Type),
			slog.String("scope", scope), slog.Bool("want_reply", req.WantReply))
	}
}

// discardChannel closes a channel nobody will use and answers its requests
// until the bastion confirms the close.
func (t *Tunnel) discardChannel(ch ssh.Channel, reqs <-chan *ssh.Request) {
	_ = ch.Close()
	t.answerRequests(reqs, "channel")
}

// waitClosed reports the end of the SSH connection.
func (t *Tunnel) waitClosed() {
	defer t.wg.Done()
	err := t.client.Wait()
	if err == nil {
		err = io.EOF
	}
	t.fail(&DroppedError{Addr: t.cfg.Addr, Err: err})
}

// DialContext opens a direct-tcpip channel from the bastion to addr
// ("host:port"; the host is resolved by the bastion). It has the shape of a
// pgx DialFunc. ctx bounds the opening only; once open, the connection
// lives until closed or until the tunnel drops. The connection supports
// deadlines and CloseWrite.
func (t *Tunnel) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s via SSH bastion %s: network %q is not supported (use tcp)", addr, t.cfg.Addr, network)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s via SSH bastion %s: %w", addr, t.cfg.Addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s via SSH bastion %s: port %q is not a number: %w", addr, t.cfg.Addr, portStr, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial %s via SSH bastion %s: %w", addr, t.cfg.Addr, err)
	}
	if err := t.Err(); err != nil {
		return nil, err
	}

	payload := ssh.Marshal(&directTCPIPMsg{
		RAddr: host,
		RPort: uint32(port),
		LAddr: "127.0.0.1",
		LPort: 0,
	})

	type result struct {
		ch   ssh.Channel
		reqs <-chan *ssh.Request
		err  error
	}
	// Buffered so that the opener never blocks after the caller gave up.
	res := make(chan result, 1)
	abandoned := make(chan struct{})
	if !t.add(1) {
		return nil, t.Err()
	}
	go func() {
		defer t.wg.Done()
		first := t.opened.CompareAndSwap(false, true)
		if first {
			t.transport.setQuickAck(true)
		}
		ch, reqs, err := t.client.OpenChannel("direct-tcpip", payload)
		if first {
			t.transport.setQuickAck(false)
		}
		select {
		case res <- result{ch, reqs, err}:
		case <-abandoned:
			if err == nil {
				t.discardChannel(ch, reqs)
			}
		}
	}()

	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		close(abandoned)
		// The opener may have finished at the same moment.
		select {
		case r = <-res:
			if r.err == nil {
				t.discardChannelAsync(r.ch, r.reqs)
			}
		default:
		}
		return nil, fmt.Errorf("dial %s via SSH bastion %s: %w", addr, t.cfg.Addr, ctx.Err())
	}

	if r.err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(r.err, &oce) {
			return nil, &ForwardError{Bastion: t.cfg.Addr, Target: addr, Reason: oce.Reason, Message: oce.Message, Err: r.err}
		}
		if err := t.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("dial %s via SSH bastion %s: %w", addr, t.cfg.Addr, r.err)
	}
	c, err := t.newConn(r.ch, r.reqs, addr)
	if err != nil {
		t.discardChannelAsync(r.ch, r.reqs)
		return nil, err
	}
	t.log.Debug("ssh channel open", slog.String("target", addr))
	return c, nil
}

// discardChannelAsync runs discardChannel in a goroutine the tunnel waits
// for. When the tunnel is already down it drains inline: the SSH connection
// is closed, so the library closes the channel's request queue at once.
func (t *Tunnel) discardChannelAsync(ch ssh.Channel, reqs <-chan *ssh.Request) {
	if !t.add(1) {
		t.discardChannel(ch, reqs)
		return
	}
	go func() {
		defer t.wg.Done()
		t.discardChannel(ch, reqs)
	}()
}

// directTCPIPMsg is the payload of a direct-tcpip channel open (RFC 4254
// section 7.2).
type directTCPIPMsg struct {
	RAddr string
	RPort uint32
	LAddr string
	LPort uint32
}

// add counts n goroutines the tunnel will wait for, unless it is down.
func (t *Tunnel) add(n int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return false
	}
	t.wg.Add(n)
	return true
}

// Done is closed when the tunnel has dropped or been closed.
func (t *Tunnel) Done() <-chan struct{} { return t.done }

// Err is nil while the tunnel is up. Afterwards it is a [*DroppedError], or
// an error wrapping [ErrClosed] when [Tunnel.Close] came first.
func (t *Tunnel) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Close shuts the tunnel and its connections down and waits for its
// goroutines to exit. It is safe to call more than once.
func (t *Tunnel) Close() error {
	t.fail(fmt.Errorf("SSH tunnel to bastion %s: %w", t.cfg.Addr, ErrClosed))
	t.wg.Wait()
	return nil
}

// HostKey returns the host key the bastion presented.
func (t *Tunnel) HostKey() ssh.PublicKey { return t.hostKey }

// UsedFallback reports whether the bastion accepted Config.Fallback
// rather than Config.Signer.
func (t *Tunnel) UsedFallback() bool { return t.usedFallback }

// Addr is the bastion's host:port.
func (t *Tunnel) Addr() string { return t.cfg.Addr }

// Negotiated returns the algorithms the handshake settled on.
func (t *Tunnel) Negotiated() Negotiated { return t.algos }

// Stats returns a snapshot of the tunnel's health.
func (t *Tunnel) Stats() Stats {
	s := Stats{
		ServerKeepalives: t.serverKeepalives.Load(),
		OpenChannels:     int(t.openChannels.Load()),
		Since:            t.since,
		LastKeepaliveRTT: time.Duration(t.lastRTT.Load()),
		MissedKeepalives: t.missed.Load(),
	}
	if ns := t.lastReply.Load(); ns != 0 {
		s.LastKeepaliveReply = time.Unix(0, ns)
	}
	return s
}
