package app_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// TestReplacingPinNeedsAdmin: an editor may change a connection but not
// where its stored credentials go, and a bastion's host key is part of
// that: approving a changed key, or giving another one, is refused for
// an editor (the stored password would go to whatever presents it) and
// allowed for an admin. Giving the pinned key again does not make it a
// guess an editor could then replace.
func TestReplacingPinNeedsAdmin(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndOwnBastion(t) // its host key is rotated
	f := newService(t)                     // tofu
	ctx := context.Background()
	editor := auth.WithPrincipal(ctx, &auth.Principal{TokenID: "t-ed", Name: "ed", Role: auth.Editor})
	admin := auth.WithPrincipal(ctx, &auth.Principal{TokenID: "t-ad", Name: "ad", Role: auth.Admin})
	s := tunnelled("wh", pg, b)
	v, err := f.svc.CreateConnection(editor, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if err := selectOne(ctx, f.svc, "wh"); err != nil { // pinned on first use
		t.Fatal(err)
	}
	oldKey, pinned := b.HostKey, sshkey.Fingerprint(b.HostKey)
	b.RotateHostKey(t)
	presented := sshkey.Fingerprint(b.HostKey)
	var changed *app.HostKeyChangedError
	if err := selectOne(ctx, f.svc, "wh"); !errors.As(err, &changed) || !strings.Contains(err.Error(), "an admin") {
		t.Fatalf("after the key changed: %v, want refused as changed, naming the admin role", err)
	}
	keepsPin := func(what string) {
		t.Helper()
		v, err := f.svc.GetConnection(ctx, "wh")
		if err != nil {
			t.Fatal(err)
		}
		if v.SSHTunnel.HostKeyFingerprint != pinned || len(v.SSHTunnel.HostKeyFingerprints) > 1 || v.SSHTunnel.HostKeyUnverified {
			t.Fatalf("%s: pinned %q %v (unverified %v), want %s alone, verified", what, v.SSHTunnel.HostKeyFingerprint,
				v.SSHTunnel.HostKeyFingerprints, v.SSHTunnel.HostKeyUnverified, pinned)
		}
	}

	// Approving the changed key.
	_, err = f.svc.TrustHostKey(editor, "wh", presented)
	if !errors.Is(err, app.ErrForbidden) || !strings.Contains(err.Error(), "needs the admin role") ||
		!strings.Contains(err.Error(), b.Addr()) {
		t.Fatalf("editor approving the changed key = %v, want forbidden naming the admin role and the bastion", err)
	}
	keepsPin("after the editor's approval")

	// Giving the new key, alone or besides the pinned one.
	for _, known := range []string{
		sshkey.AuthorizedKey(b.HostKey, ""),
		sshkey.AuthorizedKey(oldKey, "") + "\n" + sshkey.AuthorizedKey(b.HostKey, ""),
	} {
		u := s.Clone()
		u.Tunnel.KnownHost = known
		if _, err := f.svc.UpdateConnection(editor, "wh", u, nil); !errors.Is(err, app.ErrForbidden) {
			t.Fatalf("editor giving the new key (%d lines) = %v, want forbidden", strings.Count(known, "\n")+1, err)
		}
		keepsPin("after the editor gave the new key")
	}
	// The pinned key given again stays verified: were it a guess again,
	// the editor could replace it next.
	u := s.Clone()
	u.Tunnel.KnownHost = sshkey.AuthorizedKey(oldKey, "")
	if _, err := f.svc.UpdateConnection(editor, "wh", u, nil); err != nil {
		t.Fatalf("editor giving the pinned key again: %v", err)
	}
	keepsPin("after the editor gave the pinned key again")
	if err := selectOne(ctx, f.svc, "wh"); !errors.As(err, &changed) || changed.Unverified { // pending again
		t.Fatalf("after the pinned key was given again: %v, want refused as changed", err)
	}
	if _, err := f.svc.TrustHostKey(editor, "wh", presented); !errors.Is(err, app.ErrForbidden) {
		t.Fatalf("editor approving after giving the pinned key again = %v, want forbidden", err)
	}

	// An admin may.
	if _, err := f.svc.TrustHostKey(admin, "wh", presented); err != nil {
		t.Fatalf("admin approving the changed key: %v", err)
	}
	if err := selectOne(ctx, f.svc, "wh"); err != nil {
		t.Fatalf("after the admin's approval: %v", err)
	}

	// A key given with the connection that the bastion never presented
	// is most likely a wrong one: approving what the bastion presents
	// replaces nothing a handshake confirmed, so an editor may.
	wrongPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := ssh.NewPublicKey(wrongPub)
	if err != nil {
		t.Fatal(err)
	}
	g := tunnelled("given", pg, b)
	g.Tunnel.KnownHost = sshkey.AuthorizedKey(wrong, "")
	gv, err := f.svc.CreateConnection(editor, g)
	if err != nil {
		t.Fatal(err)
	}
	if !gv.SSHTunnel.HostKeyUnverified {
		t.Fatalf("a key only given is shown verified: %+v", gv.SSHTunnel)
	}
	b.Authorize(t, gv.SSHTunnel.PublicKey)
	if err := selectOne(ctx, f.svc, "given"); !errors.As(err, &changed) || !changed.Unverified {
		t.Fatalf("through a bastion that presents another key than the one given: %v", err)
	}
	if _, err := f.svc.TrustHostKey(editor, "given", sshkey.Fingerprint(b.HostKey)); err != nil {
		t.Fatalf("editor approving the key presented instead of a wrong one given: %v", err)
	}
	if err := selectOne(ctx, f.svc, "given"); err != nil {
		t.Fatalf("after the editor's approval: %v", err)
	}
}

// TestDraftReplacingPinNeedsAdmin: a draft test based on a saved
// connection borrows its stored password; with host keys of its own for a
// hop whose key is pinned, it would send that password through whatever
// presents them. So an editor's draft that replaces a pin while borrowing
// the stored password is refused as an update would be, nothing sent;
// with the password given (nothing stored borrowed), or by an admin, it
// is tested.
func TestDraftReplacingPinNeedsAdmin(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndOwnBastion(t) // its host key is rotated
	f := newService(t)                     // tofu
	ctx := context.Background()
	editor := auth.WithPrincipal(ctx, &auth.Principal{TokenID: "t-ed", Name: "ed", Role: auth.Editor})
	admin := auth.WithPrincipal(ctx, &auth.Principal{TokenID: "t-ad", Name: "ad", Role: auth.Admin})
	s := tunnelled("wh", pg, b)
	v, err := f.svc.CreateConnection(editor, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if err := selectOne(ctx, f.svc, "wh"); err != nil { // pinned on first use
		t.Fatal(err)
	}
	b.RotateHostKey(t) // an impostor at the bastion's address

	draft := s.Clone()
	draft.Password = secret.Value{} // the edit form keeps the stored password
	draft.Tunnel.KnownHost = sshkey.AuthorizedKey(b.HostKey, "")
	rep, err := f.svc.TestDraft(editor, draft, "wh", nil)
	if !errors.Is(err, app.ErrForbidden) || !strings.Contains(err.Error(), "needs the admin role") {
		t.Fatalf("editor's draft with another host key, borrowing the stored password = %v (report %+v), want forbidden", err, rep)
	}

	// Its own password: nothing stored goes anywhere.
	given := draft.Clone()
	given.Password = secret.New(pg.DB.Password)
	if rep, err := f.svc.TestDraft(editor, given, "wh", nil); err != nil || !rep.OK {
		t.Fatalf("editor's draft with another host key and its own password: %v %+v", err, rep)
	}
	// An admin may test with the stored password against the key given.
	if rep, err := f.svc.TestDraft(admin, draft, "wh", nil); err != nil || !rep.OK {
		t.Fatalf("admin's draft with another host key: %v %+v", err, rep)
	}
}
