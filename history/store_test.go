package history_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// openStore opens a Store on a fresh database of the test's MongoDB and
// drops it afterwards.
func openStore(t testing.TB) *history.Store {
	t.Helper()
	return openStoreAt(t, testenv.Mongo(t), testenv.Namespace(t))
}

func openStoreAt(t testing.TB, uri, db string) *history.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := history.Open(ctx, uri, db)
	if err != nil {
		t.Fatalf("Open(%s, %s): %v", uri, db, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Drop(ctx)
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func msg(conv string, seq int64) protocol.Message {
	return protocol.Message{
		ID: fmt.Sprintf("%s-%d", conv, seq), Conv: conv, Seq: seq,
		From: "alice", To: "bob", Text: fmt.Sprintf("text %d", seq), TS: 1700000000000 + seq,
	}
}

func seqs(ms []protocol.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func rangeSeqs(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestUsers(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()

	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.User(ctx, "alice"); !errors.Is(err, history.ErrNotFound) {
		t.Fatalf("User before create: %v, want ErrNotFound", err)
	}
	before := time.Now().Add(-time.Second)
	if err := s.CreateUser(ctx, "alice", []byte("hash-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, "alice", []byte("hash-2")); !errors.Is(err, history.ErrUserExists) {
		t.Fatalf("duplicate CreateUser: %v, want ErrUserExists", err)
	}
	// Names are case-sensitive.
	if err := s.CreateUser(ctx, "Alice", []byte("hash-3")); err != nil {
		t.Fatalf("CreateUser(Alice): %v", err)
	}
	u, err := s.User(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "alice" || string(u.Hash) != "hash-1" || u.Created.Before(before) || u.Created.After(time.Now().Add(time.Second)) {
		t.Fatalf("User = %+v", u)
	}
}

func TestUpsertIdempotent(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	const conv = "dm:alice:bob"

	var batch []protocol.Message
	for i := int64(1); i <= 20; i++ {
		batch = append(batch, msg(conv, i))
	}
	room := protocol.Message{ID: "r1", Conv: "room:go", Seq: 1, From: "carol", Room: "go", Text: "hi", TS: 5}
	batch = append(batch, room)
	for range 3 {
		if err := s.UpsertMessages(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	// Overlapping batches, and a batch holding the same message twice.
	if err := s.UpsertMessages(ctx, []protocol.Message{msg(conv, 19), msg(conv, 20), msg(conv, 21), msg(conv, 21)}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertMessages(ctx, nil); err != nil {
		t.Fatalf("empty upsert: %v", err)
	}
	got, err := s.Messages(ctx, conv, 0, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if !equalSeqs(seqs(got), rangeSeqs(1, 21)) {
		t.Fatalf("seqs = %v", seqs(got))
	}
	if got[4] != msg(conv, 5) {
		t.Fatalf("message 5 = %+v, want %+v", got[4], msg(conv, 5))
	}
	rm, err := s.Messages(ctx, "room:go", 0, 0, 10, true)
	if err != nil || len(rm) != 1 || rm[0] != room {
		t.Fatalf("room messages = %+v, %v", rm, err)
	}

	// Another id at a taken seq is a conflict; the rest of the batch lands,
	// whatever order the conflicts, the redeliveries and the new ones are in.
	other3, other5 := msg(conv, 3), msg(conv, 5)
	other3.ID, other5.ID = "other3", "other5"
	err = s.UpsertMessages(ctx, []protocol.Message{msg(conv, 19), other3, msg(conv, 22), msg(conv, 20), other5, msg(conv, 23)})
	if !errors.Is(err, history.ErrConflict) {
		t.Fatalf("conflicting upsert: %v, want ErrConflict", err)
	}
	if !strings.Contains(err.Error(), "other3") || !strings.Contains(err.Error(), "other5") || strings.Contains(err.Error(), conv) {
		t.Fatalf("conflict error %q should name exactly other3 and other5", err)
	}
	got, err = s.Messages(ctx, conv, 0, 0, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if !equalSeqs(seqs(got), rangeSeqs(1, 23)) {
		t.Fatalf("seqs after conflict = %v", seqs(got))
	}
	if got[2] != msg(conv, 3) || got[4] != msg(conv, 5) {
		t.Fatalf("conflict replaced the stored message: %+v, %+v", got[2], got[4])
	}

	if err := s.UpsertMessages(ctx, []protocol.Message{{Conv: conv, Seq: 99}}); err == nil {
		t.Fatal("message without id accepted")
	}
}

func TestMessagesPaging(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	const conv = "room:paging"

	if n, err := s.LatestSeq(ctx, conv); err != nil || n != 0 {
		t.Fatalf("LatestSeq of empty conv = %d, %v", n, err)
	}
	if got, err := s.Messages(ctx, conv, 0, 0, 10, true); err != nil || len(got) != 0 {
		t.Fatalf("Messages of empty conv = %v, %v", got, err)
	}
	var batch []protocol.Message
	for i := int64(1); i <= 120; i++ {
		batch = append(batch, msg(conv, i))
	}
	// Written out of order and with a neighbour conversation.
	if err := s.UpsertMessages(ctx, batch[60:]); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertMessages(ctx, batch[:60]); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertMessages(ctx, []protocol.Message{msg("room:paging2", 500)}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.LatestSeq(ctx, conv); err != nil || n != 120 {
		t.Fatalf("LatestSeq = %d, %v; want 120", n, err)
	}

	for _, tc := range []struct {
		name          string
		after, before int64
		limit         int
		newest        bool
		want          []int64
	}{
		{"newest page", 0, 0, 50, true, rangeSeqs(71, 120)},
		{"page before", 0, 71, 50, true, rangeSeqs(21, 70)},
		{"last page before", 0, 21, 50, true, rangeSeqs(1, 20)},
		{"before 1", 0, 1, 50, true, nil},
		{"sync after", 100, 0, 50, false, rangeSeqs(101, 120)},
		{"sync after, limited", 10, 0, 5, false, rangeSeqs(11, 15)},
		{"window oldest", 10, 20, 3, false, rangeSeqs(11, 13)},
		{"window newest", 10, 20, 3, true, rangeSeqs(17, 19)},
		{"empty window", 10, 11, 3, true, nil},
		{"no limit", 115, 0, 0, true, rangeSeqs(116, 120)},
		{"after the end", 120, 0, 10, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Messages(ctx, conv, tc.after, tc.before, tc.limit, tc.newest)
			if err != nil {
				t.Fatal(err)
			}
			if !equalSeqs(seqs(got), tc.want) {
				t.Fatalf("seqs = %v, want %v", seqs(got), tc.want)
			}
			for _, m := range got {
				if m != msg(conv, m.Seq) {
					t.Fatalf("message %d = %+v", m.Seq, m)
				}
			}
		})
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := history.Open(ctx, "mongodb://"+deadAddr(t), testenv.Namespace(t))
	if err == nil {
		t.Fatal("Open of a dead address succeeded")
	}
	if d := time.Since(start); d > 3*history.DefaultTimeout {
		t.Fatalf("Open took %s to fail", d)
	}
}
