package history_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"chatcluster/history"
)

// Read positions only rise: a lower one changes nothing, a new one is
// created, and lookups answer 0 for what is not stored.
func TestReadPositionsRiseOnly(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	get := func(ps ...history.ReadPosition) []int64 {
		t.Helper()
		got, err := s.ReadPositions(ctx, ps)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]int64, len(got))
		for i, p := range got {
			if p.Conv != ps[i].Conv || p.User != ps[i].User {
				t.Fatalf("position %d is of %s/%s, asked %s/%s", i, p.Conv, p.User, ps[i].Conv, ps[i].User)
			}
			out[i] = p.Seq
		}
		return out
	}
	amy := history.ReadPosition{Conv: "dm:amy:bob", User: "amy"}
	bob := history.ReadPosition{Conv: "dm:amy:bob", User: "bob"}
	room := history.ReadPosition{Conv: "room:lobby", User: "amy"}
	if got := get(amy, bob, room); fmt.Sprint(got) != "[0 0 0]" {
		t.Fatalf("positions of an empty store = %v", got)
	}
	if got, err := s.ReadPositions(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("no lookups: %v, %v", got, err)
	}
	save := func(ps ...history.ReadPosition) {
		t.Helper()
		if err := s.SaveReadPositions(ctx, ps); err != nil {
			t.Fatal(err)
		}
	}
	save(history.ReadPosition{Conv: amy.Conv, User: "amy", Seq: 7}, history.ReadPosition{Conv: room.Conv, User: "amy", Seq: 3})
	save(history.ReadPosition{Conv: amy.Conv, User: "amy", Seq: 5}, history.ReadPosition{Conv: bob.Conv, User: "bob", Seq: 2})
	save()
	if got := get(amy, bob, room); fmt.Sprint(got) != "[7 2 3]" {
		t.Fatalf("positions = %v, want [7 2 3] (a lower one changes nothing)", got)
	}
	save(history.ReadPosition{Conv: amy.Conv, User: "amy", Seq: 9})
	if got := get(amy); got[0] != 9 {
		t.Fatalf("position after a higher one = %d, want 9", got[0])
	}
}

// Stores that create the same positions at once all succeed, and what is
// stored is one document per position at one of the written values.
func TestReadPositionsCreatedAtOnce(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const writers, convs = 4, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ps := make([]history.ReadPosition, convs)
			for i := range ps {
				ps[i] = history.ReadPosition{Conv: fmt.Sprintf("room:r%d", i), User: "amy", Seq: int64(10 + w)}
			}
			errs <- s.SaveReadPositions(ctx, ps)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent save: %v", err)
		}
	}
	ask := make([]history.ReadPosition, convs)
	for i := range ask {
		ask[i] = history.ReadPosition{Conv: fmt.Sprintf("room:r%d", i), User: "amy"}
	}
	got, err := s.ReadPositions(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range got {
		if p.Seq < 10 || p.Seq >= 10+writers {
			t.Fatalf("%s: seq %d, want one of the values written", p.Conv, p.Seq)
		}
	}
}
