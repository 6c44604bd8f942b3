package app

import (
	"context"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tracing"
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
	if spec.Tunnel != nil {
		in.Signer, in.HostKeys, err = s.tunnelKeys(c, bastionAddr(spec.Tunnel))
		if err != nil {
			return nil, err
		}
		in.PublicKeyLine, _ = publicKeyLine(c, false)
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
	if st := rep.Step(diagnose.StepSSHAuth); st != nil && st.Status == diagnose.StatusOK {
		s.markKeyUsed(ctx, c)
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
// tested against; under the approve host key policy a draft whose bastion
// has no pinned key stops at ssh_handshake.
func (s *Service) TestDraft(ctx context.Context, spec connection.Spec, basedOn string, progress func(diagnose.Step)) (_ *diagnose.Report, err error) {
	e := &entry{action: "connection.test_draft", targetKind: audit.TargetConnection, target: basedOn, use: &audit.Use{}}
	if spec.Tunnel != nil {
		e.use.Hops = []string{hopName(spec.Tunnel)}
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
	in := diagnose.Input{Spec: spec, StepTimeout: s.dialTimeout, Logger: s.logger}
	in.ApproveHostKeys, in.Network = s.hostKeyPolicy.approves(), s.network
	if basedOn != "" {
		c, err := s.store.GetConnection(ctx, basedOn)
		if err != nil {
			return nil, err
		}
		if !in.Spec.AuthKind().IsToken() && in.Spec.Password.IsZero() && len(c.SealedPassword) > 0 {
			if saved, draft := c.Spec.Endpoint(), in.Spec.Endpoint(); !saved.Equal(draft) {
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
			var signer ssh.Signer
			var pinned []ssh.PublicKey
			signer, pinned, err = s.tunnelKeys(c, bastionAddr(spec.Tunnel))
			if err != nil {
				return nil, err
			}
			in.Signer, in.HostKeys = signer, pinned
			in.PublicKeyLine, _ = publicKeyLine(c, false)
			e.use.KeyFingerprint = connUse(c).KeyFingerprint
		}
	}
	if len(known) > 0 {
		// Keys given with the draft are what its bastion must present.
		in.HostKeys = known
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

// recordHostKey stores what a test of a saved connection learned about its
// bastion's host key: a first key is pinned once the handshake passed, a
// changed one is kept for approval.
func (s *Service) recordHostKey(ctx context.Context, c *store.Connection, rep *diagnose.Report) {
	hk := rep.HostKey
	if hk == nil || hk.Key == nil || c.Spec.Tunnel == nil {
		return
	}
	name, addr := c.Spec.Name, bastionAddr(c.Spec.Tunnel)
	switch hk.State {
	case diagnose.HostKeyFirstUse:
		if st := rep.Step(diagnose.StepSSHHandshake); st == nil || st.Status != diagnose.StatusOK {
			return
		}
		if err := s.pinHostKey(ctx, name, addr, hk.Key); err != nil {
			s.logger.WarnContext(ctx, "could not pin the bastion host key seen by a connection test", "connection", name,
				"error", err)
		}
	case diagnose.HostKeyChanged:
		s.hostKeyChanged(ctx, name, addr, hk.Key, hk.Pinned)
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
