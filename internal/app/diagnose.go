package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/sshca"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tracing"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// TestConnection tests a saved connection hop by hop (see package diagnose)
// and reports each step to progress (when not nil) as it finishes. Like
// Open, it pins a bastion's host key on the first successful handshake and
// records a different key as pending approval (TrustHostKey). The error is
// for a connection that cannot be read (ErrNotFound, a keyring failure); a
// test that fails is a report whose OK is false.
func (s *Service) TestConnection(ctx context.Context, name string, progress func(diagnose.Step)) (_ *diagnose.Report, err error) {
	e := &entry{action: "connection.test", targetKind: audit.TargetConnection, target: name}
	source := checkSource(ctx)
	if source == "scheduled" {
		e.action = "connection.health_check"
	}
	ctx, span := s.startSpan(ctx, "connection.test", tracing.Connection.String(name), tracing.TestSource.String(source))
	defer func() { endSpan(span, err) }()
	progress = s.traceSteps(ctx, progress)
	defer s.audited(ctx, e, &err)
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	e.use = connUse(c)
	spec, err := s.openSpec(ctx, c)
	if err != nil {
		return nil, err
	}
	in := diagnose.Input{Spec: spec, SavedName: name, PinFirstUse: true, StepTimeout: s.dialTimeout,
		Logger: s.logger}
	var tokens *recordingSource
	if cache := s.credentialFor(c, &spec); cache != nil {
		tokens = &recordingSource{Source: cache}
		in.Credential = tokens
	}
	in.ApproveHostKeys, in.Network = s.hostKeyPolicy.approves(), s.network
	var keys *loginKeys
	if spec.Tunnel != nil {
		if keys, err = s.sshInput(ctx, c, &in); err != nil {
			return nil, err
		}
	}
	rep := diagnose.Run(ctx, in, progress)
	if tokens != nil && tokenRefused(&rep) {
		// The database refused the token: the next use fetches another.
		tokens.invalidate()
	}
	if f := rep.Failed(); f != nil {
		e.failure = "step " + string(f.ID)
		tracing.Fail(span, e.failure)
	}
	s.recordHostKey(ctx, c, &rep)
	s.recordCheck(ctx, c, testCheck(&rep, source))
	if spec.Tunnel != nil && allPassed(&rep, diagnose.StepSSHAuth) {
		switch {
		case keys.pending != nil && !rep.FallbackKeyUsed:
			if err := s.promoteKey(ctx, name, c.PendingPublicKey, "login"); err != nil {
				s.logger.WarnContext(ctx, "could not promote the new key after its first login", "connection", name, "error", err)
			} else if fresh, err := s.store.GetConnection(ctx, name); err == nil {
				s.markKeyUsed(ctx, fresh)
			}
		case keys.pending == nil:
			s.markKeyUsed(ctx, c)
		}
	}
	s.observeTest(ctx, name, &rep)
	return &rep, nil
}

// TestDraft tests an unsaved connection, such as a form before it is
// saved. With basedOn naming a saved connection, the draft uses that
// connection's key pair and the host keys pinned for the same bastion, and
// its saved password when the draft has none (an edit form leaves the
// password empty to keep it) — but only for the endpoint the password was
// saved for: a draft with another host, port, user or bastion and no
// password is refused with a field error on "password". A draft with a tunnel but no saved key pair
// can only get as far as ssh_auth, which fails with the advice to save it.
// Testing a draft saves nothing: a host key is reported, never pinned.
// Host keys given with the draft (ssh_tunnel.known_host) are the pins it is
// tested against (replacing a hop's pinned key while borrowing the saved
// password or auth secret needs the admin role, as an update does); under
// the approve host key policy a draft whose bastion has no pinned key stops
// at ssh_handshake.
func (s *Service) TestDraft(ctx context.Context, spec connection.Spec, basedOn string, progress func(diagnose.Step)) (_ *diagnose.Report, err error) {
	e := &entry{action: "connection.test_draft", targetKind: audit.TargetConnection, target: basedOn, use: &audit.Use{}}
	if spec.Tunnel != nil {
		e.use.Hops = hopNames(spec.Tunnel)
	}
	defer s.audited(ctx, e, &err)
	ctx, span := s.startSpan(ctx, "connection.test_draft", tracing.Connection.String(basedOn))
	defer func() { endSpan(span, err) }()
	progress = s.traceSteps(ctx, progress)
	spec = spec.Clone()
	if spec.Name == "" {
		spec.Name = basedOn
	}
	if spec.Name == "" {
		spec.Name = "draft"
	}
	if err := prepare(&spec); err != nil {
		return nil, err
	}
	known, err := knownHostKeys(&spec)
	if err != nil {
		return nil, err
	}
	// A certificate is signed only for the CA's principals: a draft that
	// names another user is refused as a save would be.
	if err := s.checkCertPrincipals(ctx, &spec); err != nil {
		return nil, err
	}
	in := diagnose.Input{Spec: spec, StepTimeout: s.dialTimeout, Logger: s.logger}
	in.ApproveHostKeys, in.Network = s.hostKeyPolicy.approves(), s.network
	if basedOn != "" {
		c, err := s.store.GetConnection(ctx, basedOn)
		if err != nil {
			return nil, err
		}
		if err := mayTestWithKnownHostKeys(ctx, c, &in.Spec, known); err != nil {
			return nil, err
		}
		if !in.Spec.AuthKind().IsToken() && in.Spec.Password.IsZero() && len(c.SealedPassword) > 0 {
			if saved, draft := c.Spec.Endpoint(), in.Spec.Endpoint(); !saved.Covers(draft) {
				return nil, &ValidationError{Subject: fielderr.Connection, Problems: []fielderr.Problem{
					connection.PasswordAgainProblem(saved, draft)}}
			}
			saved, err := s.openSpec(ctx, c)
			if err != nil {
				return nil, err
			}
			in.Spec.Password = saved.Password
		}
		if err := s.draftAuthSecret(c, &in.Spec); err != nil {
			return nil, err
		}
		if spec.Tunnel != nil && c.Spec.Tunnel != nil && len(c.SealedPrivateKey) > 0 {
			// The draft's hops, with the saved connection's keys and the
			// pins saved for the same addresses.
			draft := *c
			draft.Spec = in.Spec
			if _, err := s.sshInput(ctx, &draft, &in); err != nil {
				return nil, err
			}
			e.use.KeyFingerprint = connUse(c).KeyFingerprint
		}
	}
	if in.Spec.Tunnel != nil && in.Hops == nil {
		if err := s.draftSSHInput(ctx, &in); err != nil {
			return nil, err
		}
	}
	for addr, keys := range known {
		// Keys given with the draft are what its hop must present.
		if len(in.Hops) == 0 {
			in.Hops = make([]diagnose.HopInput, len(in.Spec.Hops()))
			for i := range in.Hops {
				in.Hops[i].Signer = in.Signer
			}
		}
		for i, h := range in.Spec.Hops() {
			if h.Addr() == addr {
				in.Hops[i].HostKeys, in.Hops[i].HostKeysUnverified = keys, true
			}
		}
	}
	if in.Spec.AuthKind().IsToken() {
		// A source of its own: a draft's tokens are not the saved
		// connection's.
		in.Credential = credential.New(&in.Spec, s.credOpts)
	}
	rep := diagnose.Run(ctx, in, progress)
	if f := rep.Failed(); f != nil {
		e.failure = "step " + string(f.ID)
	}
	s.observeTest(ctx, spec.Name+" (draft)", &rep)
	return &rep, nil
}

// mayTestWithKnownHostKeys refuses a draft based on the saved connection c
// that would borrow c's stored password or auth secret while its own host
// keys (known, from ssh_tunnel.known_host) replace a hop's pinned ones,
// unless the request's role may replace pins: the test would send the
// stored credential through whatever presents those keys, which an update
// allows only an admin (mayReplacePins). A draft that gives its own
// password or secret borrows nothing and may be tested against any key.
func mayTestWithKnownHostKeys(ctx context.Context, c *store.Connection, draft *connection.Spec, known map[string][]ssh.PublicKey) error {
	if len(known) == 0 {
		return nil
	}
	borrowsPassword := !draft.AuthKind().IsToken() && draft.Password.IsZero() && len(c.SealedPassword) > 0
	borrowsSecret := authSecretField(draft.AuthKind()) != "" && authSecret(draft).IsZero() &&
		c.Spec.AuthKind() == draft.AuthKind() && len(c.SealedAuthSecret) > 0
	if !borrowsPassword && !borrowsSecret {
		return nil
	}
	pins := readPins(c, &c.Spec)
	for addr, keys := range known {
		if replacesPins(findPins(pins, addr), keys) {
			if err := mayReplacePins(ctx, c.Spec.Name, addr); err != nil {
				return err
			}
		}
	}
	return nil
}

// recordHostKey stores what a test of a saved connection learned about its
// hops' host keys: a first key is pinned once the handshake passed, a
// changed one is kept for approval.
func (s *Service) recordHostKey(ctx context.Context, c *store.Connection, rep *diagnose.Report) {
	if c.Spec.Tunnel == nil {
		return
	}
	if len(rep.HopHostKeys) == 0 {
		if rep.HostKey != nil {
			hk := *rep.HostKey
			hk.Addr = bastionAddr(c.Spec.Tunnel)
			s.recordHopHostKey(ctx, c, rep, hk)
		}
		return
	}
	for _, hk := range rep.HopHostKeys {
		s.recordHopHostKey(ctx, c, rep, hk)
	}
}

// recordHopHostKey stores what a test learned about one hop's host key.
func (s *Service) recordHopHostKey(ctx context.Context, c *store.Connection, rep *diagnose.Report, hk diagnose.HostKey) {
	if hk.Key == nil || hk.Certificate {
		return
	}
	name, addr := c.Spec.Name, hk.Addr
	switch hk.State {
	case diagnose.HostKeyFirstUse:
		if !handshakePassed(rep, hk.Hop) {
			return
		}
		if err := s.pinHostKey(ctx, name, addr, hk.Key); err != nil {
			s.logger.WarnContext(ctx, "could not pin the bastion host key seen by a connection test", "connection", name,
				"error", err)
		}
	case diagnose.HostKeyPinned:
		if handshakePassed(rep, hk.Hop) && hasGivenPin(findPins(readPins(c, &c.Spec), addr)) {
			s.confirmGivenPins(ctx, name, addr, hk.Key)
		}
	case diagnose.HostKeyChanged:
		var mismatch *tunnel.HostKeyMismatchError
		notOffered := false
		if f := rep.Failed(); f != nil && errors.As(f.Err, &mismatch) {
			notOffered = mismatch.PinnedNotOffered()
		}
		s.hostKeyChanged(ctx, name, addr, hk.Key, hk.Pinned, notOffered)
	case diagnose.HostKeyUnapproved:
		s.hostKeyUnapproved(ctx, name, addr, hk.Key)
	}
}

// observeTest logs a test's outcome and counts it.
func (s *Service) observeTest(ctx context.Context, name string, rep *diagnose.Report) {
	outcome, step := "ok", ""
	if f := rep.Failed(); f != nil {
		outcome, step = "failed", string(f.ID)
		s.logger.InfoContext(ctx, "connection test failed", "connection", name, "step", step, "error", f.Error)
	} else {
		s.logger.InfoContext(ctx, "connection test passed", "connection", name, "duration_ms", rep.DurationMS)
	}
	if s.metrics != nil {
		s.metrics.ConnectionTests.WithLabelValues(outcome, step).Inc()
	}
}

// handshakePassed reports whether the ssh_handshake step of hop (0 for a
// single bastion) passed.
func handshakePassed(rep *diagnose.Report, hop int) bool {
	for _, st := range rep.Steps {
		if st.ID == diagnose.StepSSHHandshake && st.Hop == hop {
			return st.Status == diagnose.StatusOK
		}
	}
	return false
}

// allPassed reports whether every step id of the report passed (at least
// one ran).
func allPassed(rep *diagnose.Report, id diagnose.StepID) bool {
	n := 0
	for _, st := range rep.Steps {
		if st.ID == id {
			if st.Status != diagnose.StatusOK {
				return false
			}
			n++
		}
	}
	return n > 0
}

// sshInput fills in the keys, pins, host trust and first hop dial of a
// test of c's hops, and returns the keys (nil for a draft's missing key).
func (s *Service) sshInput(ctx context.Context, c *store.Connection, in *diagnose.Input) (*loginKeys, error) {
	spec := &c.Spec
	keys, err := s.openLoginKeys(c)
	if err != nil {
		return nil, err
	}
	primary, fallback := keys.signers()
	pubLine := c.SSHPublicKey
	if keys.pending != nil {
		pubLine = c.PendingPublicKey
	}
	line := ""
	if pub, err := sshkey.ParsePublic(pubLine); err == nil {
		line = sshkey.AuthorizedKey(pub, sshkey.Comment(spec.Name))
	}
	var certs *certificates
	if spec.Tunnel.Auth == connection.SSHAuthCertificate {
		signer, err := s.certSigner(ctx)
		if err != nil {
			return nil, fmt.Errorf("connection %s: %w", spec.Name, err)
		}
		hops := len(spec.Hops())
		after, before := sshca.Validity(s.now(), time.Now(), time.Now().Add(time.Duration(4*hops+6)*in.StepTimeout))
		certs = &certificates{signer: signer, after: after, before: before, connection: spec.Name, run: requestid.RunFrom(ctx)}
	}
	pins := readPins(c, spec)
	hops := spec.Hops()
	in.Hops = make([]diagnose.HopInput, len(hops))
	for i, h := range hops {
		hi := diagnose.HopInput{Signer: primary, Fallback: fallback, PublicKeyLine: line}
		if hi.HostKeys, err = parsePins(findPins(pins, h.Addr())); err != nil {
			return nil, fmt.Errorf("connection %s: pinned host key of %s: %w", spec.Name, h.Addr(), err)
		}
		hi.HostKeysUnverified = pinsUnverified(findPins(pins, h.Addr()))
		if own := ownKeyOf(c, hops, i); own != nil {
			// The hop's own key (a draft's hop whose key pair is not
			// made yet tries the connection's).
			if hi.Signer, err = s.openHopSigner(c, own); err != nil {
				return nil, err
			}
			hi.Fallback = nil
			if pub, err := sshkey.ParsePublic(own.PublicKey); err == nil {
				hi.PublicKeyLine = sshkey.AuthorizedKey(pub, sshkey.Comment(spec.Name))
			}
		}
		if certs != nil {
			if hi.Signer, err = certs.sign(ctx, hi.Signer, h, i, len(hops)); err != nil {
				var na *PrincipalNotAllowedError
				if !errors.As(err, &na) {
					return nil, err
				}
				// The test reaches the hop and fails its login step.
				hi.Signer, hi.Fallback, hi.SignErr, hi.SignHint = nil, nil, errors.New(na.Problem()), "Fix: "+na.Fix()+"."
			} else if hi.Fallback, err = certs.sign(ctx, hi.Fallback, h, i, len(hops)); err != nil {
				return nil, err
			}
		}
		in.Hops[i] = hi
	}
	in.Signer, in.PublicKeyLine = primary, line
	if err := s.draftSSHInput(ctx, in); err != nil {
		return nil, err
	}
	return keys, nil
}

// draftSSHInput fills in what a test of in.Spec's hops needs besides keys:
// the host trust, the clock, and the proxy command.
func (s *Service) draftSSHInput(_ context.Context, in *diagnose.Input) error {
	in.HostTrust = s.hostTrust(in.Spec.Tunnel)
	in.Clock = s.now
	if len(in.Spec.Tunnel.ProxyCommand) > 0 {
		dial, err := s.firstDial(&in.Spec)
		if err != nil {
			return err
		}
		in.FirstHopDial = dial
	}
	return nil
}
