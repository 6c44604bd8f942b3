package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/store"
)

// exerciseKeyUse checks MarkKeyUsed: the time and what it was for come
// back, the record's version and update time stay, and an update made
// from a copy read before the mark keeps it.
func exerciseKeyUse(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := sampleConnection("k")
	if err := s.CreateConnection(ctx, c); err != nil {
		t.Fatal(err)
	}
	fresh, err := s.GetConnection(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !fresh.KeyUsedAt.IsZero() || fresh.KeyUsedFor != "" {
		t.Fatalf("a new connection's key counts as used: %v %q", fresh.KeyUsedAt, fresh.KeyUsedFor)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	const usedFor = "SHA256:abc dbtcloud@bastion.example.com:2222"
	if err := s.MarkKeyUsed(ctx, c.ID, usedFor, at); err != nil {
		t.Fatalf("mark: %v", err)
	}
	got, err := s.GetConnection(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !got.KeyUsedAt.Equal(at) || got.KeyUsedAt.Location() != time.UTC || got.KeyUsedFor != usedFor {
		t.Fatalf("after mark: %v %q, want %v %q", got.KeyUsedAt, got.KeyUsedFor, at, usedFor)
	}
	if got.Version != fresh.Version || !got.UpdatedAt.Equal(fresh.UpdatedAt) {
		t.Fatalf("mark changed version %d -> %d or updated_at %v -> %v", fresh.Version, got.Version, fresh.UpdatedAt, got.UpdatedAt)
	}
	// An edit saved from the copy read before the mark does not undo it.
	fresh.Spec.Threads = 3
	if err := s.UpdateConnection(ctx, fresh); err != nil {
		t.Fatalf("update after mark: %v", err)
	}
	got, err = s.GetConnection(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Threads != 3 || !got.KeyUsedAt.Equal(at) || got.KeyUsedFor != usedFor {
		t.Fatalf("after update: threads %d, key used %v %q", got.Spec.Threads, got.KeyUsedAt, got.KeyUsedFor)
	}
	list, err := s.ListConnections(ctx)
	if err != nil || len(list) != 1 || !list[0].KeyUsedAt.Equal(at) {
		t.Fatalf("list after mark: %v %v", list, err)
	}
	if err := s.MarkKeyUsed(ctx, "no-such-id", usedFor, at); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("mark unknown: %v, want ErrNotFound", err)
	}
}
