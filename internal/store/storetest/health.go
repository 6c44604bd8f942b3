package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/store"
)

func exerciseHealth(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, b := sampleConnection("alpha"), sampleConnection("beta")
	for _, c := range []*store.Connection{a, b} {
		if err := s.CreateConnection(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)
	for i := range 8 {
		c := store.ConnectionCheck{Kind: store.CheckTest, At: base.Add(time.Duration(i) * time.Minute), OK: i%2 == 0,
			Source: "scheduled", Step: "ssh_auth", Detail: fmt.Sprintf("test %d", i), DurationMS: int64(i)}
		if err := s.AddConnectionCheck(ctx, a.ID, c, 5); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddConnectionCheck(ctx, a.ID, store.ConnectionCheck{Kind: store.CheckRun, At: base.Add(time.Hour), OK: true,
		Source: "manual", Step: "succeeded", Detail: "run-1", DurationMS: 1500}, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.AddConnectionCheck(ctx, b.ID, store.ConnectionCheck{Kind: store.CheckUse, At: base, OK: true, Source: "query"}, 5); err != nil {
		t.Fatal(err)
	}
	got, err := s.ConnectionChecks(ctx, a.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	// 5 tests kept (the newest), and the run; newest first.
	if len(got) != 6 || got[0].Kind != store.CheckRun || got[0].Detail != "run-1" || got[1].Detail != "test 7" ||
		got[5].Detail != "test 3" || got[1].OK || !got[2].OK || !got[1].At.Equal(base.Add(7*time.Minute)) || got[1].DurationMS != 7 {
		t.Fatalf("checks of alpha: %+v", got)
	}
	recent, err := s.RecentChecks(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 2 || len(recent[a.ID]) != 2 || recent[a.ID][0].Kind != store.CheckRun || len(recent[b.ID]) != 1 {
		t.Fatalf("recent: %+v", recent)
	}
	if err := s.AddConnectionCheck(ctx, "nosuch", store.ConnectionCheck{Kind: store.CheckTest, At: base}, 5); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("check of a missing connection: %v", err)
	}
	// They go with their connection.
	if err := s.DeleteConnection(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ConnectionChecks(ctx, a.ID, 100); err != nil || len(got) != 0 {
		t.Fatalf("checks of a deleted connection: %+v %v", got, err)
	}
}
