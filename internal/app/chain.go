package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/sshca"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// loginKeys are the key pairs a connection logs in to its hops with.
type loginKeys struct {
	// current is the connection's key.
	current ssh.Signer
	// pending is a rotation's new key, offered first; nil without one.
	pending ssh.Signer
}

// openLoginKeys decrypts c's key pair and, during a rotation, its new one.
func (s *Connector) openLoginKeys(c *store.Connection) (*loginKeys, error) {
	name := c.Spec.Name
	pem, err := s.keyring.Open(c.SealedPrivateKey, privateKeyAD(c.ID))
	if err != nil {
		return nil, fmt.Errorf("connection %s: SSH private key: %w", name, err)
	}
	defer clear(pem)
	k := &loginKeys{}
	if k.current, err = sshkey.Signer(pem); err != nil {
		return nil, fmt.Errorf("connection %s: %w", name, err)
	}
	if c.RotationPending() && len(c.SealedPendingPrivateKey) > 0 {
		ppem, err := s.keyring.Open(c.SealedPendingPrivateKey, pendingKeyAD(c.ID))
		if err != nil {
			return nil, fmt.Errorf("connection %s: new SSH private key: %w", name, err)
		}
		defer clear(ppem)
		if k.pending, err = sshkey.Signer(ppem); err != nil {
			return nil, fmt.Errorf("connection %s: new key: %w", name, err)
		}
	}
	return k, nil
}

// hopSigners returns the keys offered to a hop with its own key: during a
// rotation (rotating) its new key first and its current one as the
// fallback, or the new one alone (newOnly); otherwise its current key. A
// hop given its own key during the rotation has no new key and offers its
// current one.
func (s *Connector) hopSigners(c *store.Connection, k *store.HopKey, rotating, newOnly bool) (primary, fallback ssh.Signer, err error) {
	var pending ssh.Signer
	if rotating {
		if pending, err = s.openHopPendingSigner(c, k); err != nil {
			return nil, nil, err
		}
	}
	current, err := s.openHopSigner(c, k)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case pending == nil:
		return current, nil, nil
	case newOnly:
		return pending, nil, nil
	}
	return pending, current, nil
}

// signers returns the keys offered to a hop: the new key of a rotation
// first and the current one as its fallback, or the current one alone.
func (k *loginKeys) signers() (primary, fallback ssh.Signer) {
	if k.pending != nil {
		return k.pending, k.current
	}
	return k.current, nil
}

// certificates turn the keys offered to hop i (of n, as user) into
// certificates signed for this tunnel.
type certificates struct {
	signer        sshca.Signer
	after, before time.Time
	connection    string
	run           string
}

func (cc *certificates) sign(ctx context.Context, sg ssh.Signer, h connection.Hop, i, n int) (ssh.Signer, error) {
	if sg == nil {
		return nil, nil
	}
	cert, err := cc.signer.SignUser(ctx, sshca.Request{Key: sg.PublicKey(), Principal: h.User,
		KeyID: sshca.KeyID(cc.connection, cc.run, i+1, n), ValidAfter: cc.after, ValidBefore: cc.before})
	var na *sshca.PrincipalNotAllowedError
	if errors.As(err, &na) {
		where := "SSH bastion " + h.Addr()
		if n > 1 {
			where = fmt.Sprintf("hop %d of %d (%s)", i+1, n, h.Addr())
		}
		return nil, &PrincipalNotAllowedError{Connection: cc.connection, Hop: where, User: h.User, Allowed: na.Allowed, Err: na}
	}
	if err != nil {
		return nil, fmt.Errorf("connection %s: sign SSH certificate: %w", cc.connection, err)
	}
	cs, err := ssh.NewCertSigner(cert, sg)
	if err != nil {
		return nil, fmt.Errorf("connection %s: SSH certificate: %w", cc.connection, err)
	}
	return cs, nil
}

// chainOptions change how openChain logs in.
type chainOptions struct {
	// newKeyOnly offers only a rotation's new key (rotate-key --finish).
	newKeyOnly bool
	// noPromote leaves a rotation's new key pending after it logged in.
	noPromote bool
}

// openChain connects to every hop of c in order, checking each hop's host
// key (pins, host CAs, the host key policy), logging in with c's key (or a
// certificate of it; a hop with its own key pair with that key) and
// starting keepalives on each. A rotation's new key
// that logged in to every hop is promoted.
func (s *Connector) openChain(ctx context.Context, c *store.Connection, opts chainOptions) (*tunnel.Chain, error) {
	spec := &c.Spec
	name := spec.Name
	hops := spec.Hops()
	keys, err := s.openLoginKeys(c)
	if err != nil {
		return nil, err
	}
	if opts.newKeyOnly {
		if keys.pending == nil {
			return nil, invalidf("connection %s has no new key waiting: start a rotation with `pgrelay connection rotate-key %s --start`", name, name)
		}
		keys.current = nil
	}
	var certs *certificates
	if spec.Tunnel.Auth == connection.SSHAuthCertificate {
		signer, err := s.certSigner(ctx)
		if err != nil {
			return nil, fmt.Errorf("connection %s: %w", name, err)
		}
		deadline, _ := ctx.Deadline()
		after, before := sshca.Validity(s.now(), time.Now(), deadline)
		certs = &certificates{signer: signer, after: after, before: before, connection: name, run: requestid.RunFrom(ctx)}
	}
	dial, err := s.firstDial(spec)
	if err != nil {
		return nil, err
	}
	pins := readPins(c, spec)
	trust := s.hostTrust(spec.Tunnel)
	cfgs := make([]tunnel.Config, len(hops))
	for i, h := range hops {
		addr := h.Addr()
		pinned, err := parsePins(findPins(pins, addr))
		if err != nil {
			return nil, fmt.Errorf("connection %s: pinned host key of %s: %w", name, addr, err)
		}
		primary, fallback := keys.signers()
		if opts.newKeyOnly {
			primary, fallback = keys.pending, nil
		}
		if h.OwnKey && i > 0 {
			// The hop's own key, not the connection's; during a rotation its
			// new key first, as for the connection's.
			own := c.HopKeyFor(h.String())
			if own == nil {
				return nil, fmt.Errorf("connection %s: hop %d (%s) has own_key but no key pair of its own: "+
					"update the connection (`pgrelay connection update %s`) to generate it", name, i+1, h, name)
			}
			if primary, fallback, err = s.hopSigners(c, own, keys.pending != nil, opts.newKeyOnly); err != nil {
				return nil, err
			}
		}
		if certs != nil {
			if primary, err = certs.sign(ctx, primary, h, i, len(hops)); err != nil {
				return nil, err
			}
			if fallback, err = certs.sign(ctx, fallback, h, i, len(hops)); err != nil {
				return nil, err
			}
		}
		log := s.logger.With("connection", name)
		if len(hops) > 1 {
			log = log.With("hop", i+1)
		}
		if id := requestid.RunFrom(ctx); id != "" && s.ssh.warm == nil {
			// The tunnel is the run's alone (none is kept for a later
			// run): its lines, its drop and close included, name the run.
			log = log.With("run_id", id)
		}
		cfg := tunnel.Config{
			Addr:              addr,
			User:              h.User,
			Signer:            primary,
			Fallback:          fallback,
			HostKeys:          pinned,
			HostTrust:         trust,
			Clock:             s.now,
			DialTimeout:       s.dialTimeout,
			KeepaliveInterval: spec.Tunnel.KeepaliveInterval.Duration(),
			KeepaliveCountMax: spec.Tunnel.KeepaliveCountMax,
			Logger:            log,
			Observer:          s.hopObserverFor(name, i, len(hops)),
		}
		if i == 0 {
			cfg.Dial = dial
		}
		if len(pinned) == 0 && !s.hostKeyPolicy.approves() {
			cfg.OnFirstUse = func(key ssh.PublicKey) error {
				return s.pinHostKey(ctx, name, addr, key)
			}
		}
		cfgs[i] = cfg
	}
	// Hop n+1's address is resolved by hop n, out of pgrelay's sight; an IP
	// literal is checked here, as for the database behind a bastion.
	times := newHopTimes(len(hops))
	check := func(i int, addr string) error {
		times.started(i)
		if err := s.network.CheckHostPort(addr); err != nil {
			return fmt.Errorf("%s through hop %d: %w", addr, i, err)
		}
		return nil
	}
	start := time.Now()
	times.started(0)
	chain, err := tunnel.DialChain(ctx, cfgs, check)
	s.countOpen(name, err, time.Since(start))
	s.traceHops(ctx, c, hops, times, chain, err)
	if err != nil {
		return nil, s.explainChainError(ctx, c, keys, err)
	}
	s.observeTunnel(name, chain)
	for i := range min(chain.Len(), len(hops)) {
		if addr := hops[i].Addr(); hasGivenPin(findPins(pins, addr)) && chain.Hop(i).HostKey() != nil {
			s.confirmGivenPins(ctx, name, addr, chain.Hop(i).HostKey())
		}
	}
	if !opts.noPromote {
		s.afterLogin(ctx, c, keys, chain)
	}
	return chain, nil
}

// afterLogin records what the login to every hop showed: a rotation's new
// key that every hop accepted is promoted; a key every hop accepted is
// marked used (the setup guide then treats it as installed).
func (s *Connector) afterLogin(ctx context.Context, c *store.Connection, keys *loginKeys, chain *tunnel.Chain) {
	if keys.pending == nil {
		s.markKeyUsed(ctx, c)
		return
	}
	var newOK, oldOK []string
	hops := c.Spec.Hops()
	for i := range chain.Len() {
		h := chain.Hop(i)
		if i < len(hops) {
			if k := ownKeyOf(c, hops, i); k != nil && k.PendingPublicKey == "" {
				continue // its own key, given during the rotation: not part of it
			}
		}
		if h.UsedFallback() {
			oldOK = append(oldOK, h.Addr())
		} else {
			newOK = append(newOK, h.Addr())
		}
	}
	switch {
	case len(oldOK) == 0:
		if err := s.promoteKey(ctx, c.Spec.Name, c.PendingPublicKey, "login"); err != nil {
			s.logger.WarnContext(ctx, "could not promote the new key after its first login", "connection", c.Spec.Name, "error", err)
			return
		}
		if fresh, err := s.store.GetConnection(ctx, c.Spec.Name); err == nil {
			s.markKeyUsed(ctx, fresh)
		}
	case len(newOK) == 0:
		s.markKeyUsed(ctx, c)
	default:
		s.logger.InfoContext(ctx, "the new key of a rotation logged in to some hops only; the old key is still used",
			"connection", c.Spec.Name, "new_key_accepted_by", strings.Join(newOK, " "), "old_key_used_by", strings.Join(oldOK, " "))
	}
}

// explainChainError turns the error of a hop into what the user should
// see, recording a host key to approve.
func (s *Connector) explainChainError(ctx context.Context, c *store.Connection, keys *loginKeys, err error) error {
	name := c.Spec.Name
	hops := c.Spec.Hops()
	idx, where := 0, ""
	var he *tunnel.HopError
	if errors.As(err, &he) {
		idx, where = he.Hop-1, he.Where()
	}
	addr := hops[idx].Addr()
	var denied *egress.DeniedError
	if errors.As(err, &denied) {
		if where != "" {
			return fmt.Errorf("connection %s: %s: %w", name, where, denied)
		}
		return fmt.Errorf("connection %s: SSH bastion %s: %w", name, addr, denied)
	}
	var mismatch *tunnel.HostKeyMismatchError
	if errors.As(err, &mismatch) && len(mismatch.Pinned) == 0 && mismatch.Err == nil && mismatch.PresentedKey != nil {
		// Nothing pinned and no first use allowed: the approve policy.
		s.hostKeyUnapproved(ctx, name, addr, mismatch.PresentedKey)
		return &HostKeyChangedError{Connection: name, Hop: where, Err: mismatch}
	}
	if errors.As(err, &mismatch) && len(mismatch.Pinned) > 0 && mismatch.PresentedKey != nil {
		unverified := pinsUnverified(findPins(readPins(c, &c.Spec), addr))
		s.hostKeyChanged(ctx, name, addr, mismatch.PresentedKey, mismatch.Pinned, mismatch.PinnedNotOffered())
		return &HostKeyChangedError{Connection: name, Hop: where, Err: mismatch, Unverified: unverified}
	}
	var authErr *tunnel.AuthError
	if errors.As(err, &authErr) {
		if authErr.Certificate != nil {
			return &CertificateRefusedError{Connection: name, Hop: where, Err: authErr, Now: time.Now()}
		}
		pub := c.SSHPublicKey
		if keys.pending != nil {
			pub = c.PendingPublicKey
		}
		line, own := "", false
		if lines, lerr := keyLinesFor(c, pub); lerr == nil {
			line, own = lines[idx].Line, lines[idx].OwnKey
		}
		return &KeyNotAuthorizedError{Connection: name, Bastion: addr, User: hops[idx].User, Hop: where, PublicKey: line, OwnKey: own,
			LastHop: idx == len(hops)-1, Err: err}
	}
	return fmt.Errorf("connection %s: %w", name, err)
}

// hostKeyChanged records the key a hop presented instead of the pinned
// one as pending approval (TrustHostKey) and logs the refusal. notOffered
// says the hop offered no algorithm of the pinned keys' types: not a
// changed key, but another of its keys.
func (s *Connector) hostKeyChanged(ctx context.Context, name, addr string, presented ssh.PublicKey, pinned []string, notOffered bool) {
	if err := s.recordPendingHostKey(ctx, name, addr, presented); err != nil {
		s.logger.WarnContext(ctx, "could not record pending host key", "connection", name, "error", err)
	}
	msg := "bastion host key changed; connection refused"
	if notOffered {
		msg = "bastion did not present a pinned host key (it offers none of their types); connection refused"
	}
	s.logger.WarnContext(ctx, msg, "connection", name,
		"bastion", addr, "pinned", joinFingerprints(pinned), "presented", sshkey.Fingerprint(presented))
}

// CertificateRefusedError is returned when a hop refused the certificate
// pgrelay signed for it.
type CertificateRefusedError struct {
	Connection string
	// Hop is "hop 2 of 3 (bastion-b:22)" in a chain, "" for one bastion.
	Hop string
	Err *tunnel.AuthError
	// Now is this machine's clock when the certificate was refused.
	Now time.Time
}

// Error gives the certificate's facts, the likely reason and the fix.
func (e *CertificateRefusedError) Error() string {
	c := e.Err.Certificate
	after := time.Unix(int64(c.ValidAfter), 0).UTC()
	before := time.Unix(int64(c.ValidBefore), 0).UTC()
	where := "SSH bastion " + e.Err.Addr
	if e.Hop != "" {
		where = e.Hop
	}
	var reason string
	switch {
	case !e.Now.Before(before):
		reason = fmt.Sprintf("the certificate had already expired by this machine's clock (valid until %s, now %s): "+
			"pgrelay's clock is behind; correct it (NTP)", before.Format(time.RFC3339), e.Now.UTC().Format(time.RFC3339))
	case e.Now.Before(after):
		reason = fmt.Sprintf("the certificate was not valid yet by this machine's clock (from %s, now %s): "+
			"pgrelay's clock is ahead; correct it (NTP)", after.Format(time.RFC3339), e.Now.UTC().Format(time.RFC3339))
	default:
		reason = fmt.Sprintf("the bastion does not trust pgrelay's SSH CA %s, does not let principal %q log in as %s "+
			"(AuthorizedPrincipalsFile), or its clock is outside the certificate's validity (%s to %s)",
			ssh.FingerprintSHA256(c.SignatureKey), strings.Join(c.ValidPrincipals, ","), e.Err.User,
			after.Format(time.RFC3339), before.Format(time.RFC3339))
	}
	return fmt.Sprintf("connection %s: %s refused pgrelay's certificate for user %q (key ID %q): %s. "+
		"The bastion's sshd log names the reason; its sshd_config needs `TrustedUserCAKeys` with the line of `pgrelay ssh-ca show`",
		e.Connection, where, e.Err.User, c.KeyId, reason)
}

// Unwrap returns the tunnel's error.
func (e *CertificateRefusedError) Unwrap() error { return e.Err }
