package chatlog

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
	"chatcluster/room"
)

// appended gives Append's result as the message, whether it was a resend,
// and the error.
func appended(a Appended, err error) (protocol.Message, bool, error) { return a.Message, a.Dup, err }

func newLog(t testing.TB) *Log {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, testenv.Namespace(t)+":")
}

func TestAppendAssignsSeqAndRecordsEverywhere(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	m := protocol.Message{ID: "a", Conv: "dm:x:y", From: "x", To: "y", Text: `he said "hi" \o/`, TS: 5}
	// A Redis that did not start with the cluster must seed counters first.
	if _, _, err := appended(l.Append(ctx, m, "", nil)); !errors.Is(err, ErrNeedSeqInit) {
		t.Fatalf("append without marker: %v, want ErrNeedSeqInit", err)
	}
	if err := l.InitSeq(ctx, m.Conv, 41); err != nil {
		t.Fatal(err)
	}
	a, err := l.Append(ctx, m, "c1", []string{"x", "y"})
	got, dup := a.Message, a.Dup
	if err != nil || dup || got.Seq != 42 || got.Text != m.Text || got.ID != "a" {
		t.Fatalf("append: %+v dup=%v err=%v", got, dup, err)
	}
	// The push recipients get is the stored message's, encoded once.
	if want := protocol.EncodeMessagePush(&got); !bytes.Equal(a.Push, want) {
		t.Fatalf("push %s, want %s", a.Push, want)
	}
	again, dup, err := appended(l.Append(ctx, protocol.Message{ID: "b", Conv: m.Conv, From: "x", Text: "other"}, "c1", nil))
	if err != nil || !dup || again.ID != got.ID || again.Seq != got.Seq || again.TS != got.TS || again.Conv != got.Conv || again.From != "x" {
		t.Fatalf("idempotent resend: %+v dup=%v err=%v, want the first message's id, seq, ts and conv", again, dup, err)
	}
	latest, err := l.Latest(ctx, []string{m.Conv, "dm:none:x"})
	if err != nil || latest[m.Conv] != 42 || latest["dm:none:x"] != 0 {
		t.Fatalf("latest: %v %v", latest, err)
	}
	convs, err := l.Convs(ctx, "y")
	if err != nil || len(convs) != 1 || convs[0] != m.Conv {
		t.Fatalf("convs: %v %v", convs, err)
	}
	un, err := l.Unflushed(ctx, m.Conv)
	if err != nil || len(un) != 1 || un[0] != got {
		t.Fatalf("unflushed: %+v %v", un, err)
	}
	// A new deployment: counters start at zero without seeding.
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	first, _, err := appended(l.Append(ctx, protocol.Message{ID: "c", Conv: "dm:p:q", From: "p", Text: "x"}, "", nil))
	if err != nil || first.Seq != 1 {
		t.Fatalf("fresh conversation: %+v %v", first, err)
	}
}

func TestRecentListIsCapped(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < protocol.RecentLen+10; i++ {
		if _, _, err := appended(l.Append(ctx, protocol.Message{ID: "m", Conv: "room:r", From: "x", Text: "t"}, "", nil)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := l.rdb.LLen(ctx, l.RecentKey("room:r")).Result()
	if err != nil || n != protocol.RecentLen {
		t.Fatalf("recent list has %d entries, want %d", n, protocol.RecentLen)
	}
}

func TestRestoreOnlyWhatTheServerLost(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	conv := "dm:x:y"
	msg := func(seq int64, id string) protocol.Message {
		return protocol.Message{ID: id, Conv: conv, Seq: seq, From: "x", To: "y", Text: "t " + id, TS: seq}
	}
	if _, _, err := l.Restore(ctx, conv, []protocol.Message{msg(1, "a")}, nil); !errors.Is(err, ErrNeedSeqInit) {
		t.Fatalf("restore without counter or marker: %v, want ErrNeedSeqInit", err)
	}
	if err := l.MarkFresh(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, _, err := appended(l.Append(ctx, msg(0, "s"+string(rune('1'+i))), "", nil)); err != nil {
			t.Fatal(err)
		}
	}
	// The client holds 1..5; the server knows 1..2 (its own, which win).
	up := []protocol.Message{msg(5, "c5"), msg(3, "c3"), msg(1, "c1"), msg(4, "c4"), msg(2, "c2")}
	n, latest, err := l.Restore(ctx, conv, up, []string{"x", "y"})
	if err != nil || n != 3 || latest != 5 {
		t.Fatalf("restore: %d restored, latest %d, %v; want 3, 5", n, latest, err)
	}
	if n, latest, err := l.Restore(ctx, conv, up, nil); err != nil || n != 0 || latest != 5 {
		t.Fatalf("restore again: %d restored, latest %d, %v; want 0, 5", n, latest, err)
	}
	got, err := l.Unflushed(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range got {
		ids = append(ids, m.ID)
	}
	if want := []string{"s1", "s2", "c3", "c4", "c5"}; !slices.Equal(ids, want) {
		t.Fatalf("conversation holds %v, want %v", ids, want)
	}
	next, _, err := appended(l.Append(ctx, msg(0, "n"), "", nil))
	if err != nil || next.Seq != 6 {
		t.Fatalf("next message after restore: seq %d, %v; want 6", next.Seq, err)
	}
	if convs, _ := l.Convs(ctx, "y"); !slices.Equal(convs, []string{conv}) {
		t.Fatalf("y's conversations: %v", convs)
	}
	if _, _, err := l.Restore(ctx, conv, []protocol.Message{{ID: "z", Conv: "dm:o:p", Seq: 9}}, nil); err == nil {
		t.Fatal("restore accepted a message of another conversation")
	}
}

func TestReseedLeavesAGapClientsCanFill(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	conv := "room:r"
	if err := l.Reseed(ctx, conv, 40, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := l.Reseed(ctx, conv, 7, 0, true); err != nil { // an existing counter stays
		t.Fatal(err)
	}
	floors, err := l.Reseeded(ctx, []string{conv, "room:other"})
	if err != nil || len(floors) != 1 || floors[conv] != 40 {
		t.Fatalf("Reseeded = %v, %v", floors, err)
	}
	next, _, err := appended(l.Append(ctx, protocol.Message{ID: "new", Conv: conv, From: "u", Room: "r", Text: "t", TS: 1}, "", nil))
	if err != nil || next.Seq != 40+SeqGap+1 {
		t.Fatalf("first message after the reseed: seq %d, %v; want %d", next.Seq, err, 40+SeqGap+1)
	}
	// Seqs in the gap hold nothing: a client's copies are restored there,
	// once; the new message's seq is not replaced.
	up := []protocol.Message{
		{ID: "c41", Conv: conv, Seq: 41, From: "u", Room: "r", Text: "t", TS: 1},
		{ID: "c42", Conv: conv, Seq: 42, From: "u", Room: "r", Text: "t", TS: 1},
		{ID: "clash", Conv: conv, Seq: next.Seq, From: "u", Room: "r", Text: "t", TS: 1},
	}
	if n, latest, err := l.Restore(ctx, conv, up, nil); err != nil || n != 2 || latest != next.Seq {
		t.Fatalf("restore into the gap: %d, %d, %v; want 2, %d", n, latest, err, next.Seq)
	}
	if n, _, err := l.Restore(ctx, conv, up, nil); err != nil || n != 0 {
		t.Fatalf("restore again: %d, %v; want 0", n, err)
	}
	got, _ := l.Unflushed(ctx, conv)
	if len(got) != 3 || got[2].ID != "new" {
		t.Fatalf("conversation holds %+v", got)
	}
	// Messages restored below the counter are older than the recent list.
	if recent, _ := l.rdb.LRange(ctx, l.RecentKey(conv), 0, -1).Result(); len(recent) != 1 {
		t.Fatalf("recent list after filling the gap: %q, want only the newest message", recent)
	}

	// A counter forgotten (Redis came back with older data) is seeded
	// above what Redis still holds unwritten, not only above MongoDB.
	if n, err := l.ForgetCounters(ctx); err != nil || n < 1 {
		t.Fatalf("ForgetCounters: %d, %v", n, err)
	}
	if err := l.Reseed(ctx, conv, 10, 0, true); err != nil {
		t.Fatal(err)
	}
	again, _, err := appended(l.Append(ctx, protocol.Message{ID: "after", Conv: conv, From: "u", Room: "r", Text: "t", TS: 1}, "", nil))
	if err != nil || again.Seq != next.Seq+SeqGap+1 {
		t.Fatalf("first message after forgetting: seq %d, %v; want %d", again.Seq, err, next.Seq+SeqGap+1)
	}

	// Seeded at least at an earlier seeding's value, which is not the
	// floor: what was numbered from it may all be lost.
	const lost = "room:lost"
	if err := l.Reseed(ctx, lost, 5, 3000, true); err != nil {
		t.Fatal(err)
	}
	first, _, err := appended(l.Append(ctx, protocol.Message{ID: "l1", Conv: lost, From: "u", Room: "lost", Text: "t", TS: 1}, "", nil))
	if err != nil || first.Seq != 3001 {
		t.Fatalf("first message seeded at least at 3000: seq %d, %v", first.Seq, err)
	}
	if floors, err := l.Reseeded(ctx, []string{lost}); err != nil || floors[lost] != 5 {
		t.Fatalf("floor %v, %v; want 5, what is stored", floors, err)
	}
}

// A room's members get it in their conversation lists and lose it again,
// each in one round trip; their other conversations stay.
func TestRoomMembersConvs(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	if err := l.AddConv(ctx, "x", "dm:x:y"); err != nil {
		t.Fatal(err)
	}
	if err := l.AddMembers(ctx, []room.Room{{Name: "ops", Members: []string{"x", "y"}}}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string][]string{"x": {"dm:x:y", "room:ops"}, "y": {"room:ops"}} {
		if got, err := l.Convs(ctx, user); err != nil || !slices.Equal(got, want) {
			t.Fatalf("convs of %s after AddMembers: %v, %v; want %v", user, got, err, want)
		}
	}
	if err := l.RemoveMembers(ctx, room.Room{Name: "ops", Members: []string{"x", "y"}}); err != nil {
		t.Fatal(err)
	}
	for user, want := range map[string][]string{"x": {"dm:x:y"}, "y": {}} {
		if got, err := l.Convs(ctx, user); err != nil || !slices.Equal(got, want) {
			t.Fatalf("convs of %s after RemoveMembers: %v, %v; want %v", user, got, err, want)
		}
	}
	if err := l.RemoveMembers(ctx, room.Room{Name: "empty"}); err != nil {
		t.Fatalf("RemoveMembers of a room without members: %v", err)
	}
}

// An event is stored like a message, its kind and target in the JSON the
// script writes and in its push; UnflushedAfter says from where on Redis
// holds every entry, as the history writer takes entries away.
func TestEventsAndUnflushedAfter(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	const conv = "dm:x:y"
	if err := l.InitSeq(ctx, conv, 0); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= protocol.RecentLen+10; i++ {
		if _, err := l.Append(ctx, protocol.Message{ID: "m" + string(rune('a'+i%26)), Conv: conv, From: "x", To: "y", Text: "t", TS: int64(i)}, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	ev := protocol.Message{ID: "e", Conv: conv, From: "x", To: "y", Kind: protocol.KindEdit, Ref: 3, Text: "three", TS: 99}
	a, err := l.Append(ctx, ev, "", []string{"x", "y"})
	if err != nil || a.Message.Seq != protocol.RecentLen+11 {
		t.Fatalf("append of an edit: %+v, %v", a.Message, err)
	}
	ev.Seq = a.Message.Seq
	if want := protocol.EncodeMessagePush(&ev); !bytes.Equal(a.Push, want) {
		t.Fatalf("push %s, want %s", a.Push, want)
	}
	got, after, err := l.UnflushedAfter(ctx, conv)
	if err != nil || len(got) != int(ev.Seq) || got[len(got)-1] != ev || after != 0 {
		t.Fatalf("unflushed: %d entries ending %+v, after %d, %v; want %d ending with the edit, after 0", len(got), got[len(got)-1], after, err, ev.Seq)
	}
	// The writer moved 1..5 and, out of order, 8 (older than the recent
	// list): Redis holds every entry after 8 only.
	rdb := l.rdb
	if err := rdb.HDel(ctx, l.PendingKey(conv), "1", "2", "3", "4", "5", "8").Err(); err != nil {
		t.Fatal(err)
	}
	got, after, err = l.UnflushedAfter(ctx, conv)
	if err != nil || len(got) != int(ev.Seq)-6 || after != 8 {
		t.Fatalf("unflushed: %d entries, after %d, %v; want %d, after 8", len(got), after, err, ev.Seq-6)
	}
	// Without the recent list, and the newest entry moved, Redis lacks the
	// newest entries: it holds every entry after none.
	if err := rdb.Del(ctx, l.RecentKey(conv)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HDel(ctx, l.PendingKey(conv), strconv.FormatInt(ev.Seq, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	if got, after, err = l.UnflushedAfter(ctx, conv); err != nil || len(got) != int(ev.Seq)-7 || after != ev.Seq {
		t.Fatalf("unflushed without the newest: %d entries, after %d, %v; want %d, %d", len(got), after, err, ev.Seq-7, ev.Seq)
	}
	if err := rdb.Del(ctx, l.PendingKey(conv), l.SeqKey(conv)).Err(); err != nil {
		t.Fatal(err)
	}
	if got, after, err = l.UnflushedAfter(ctx, conv); err != nil || len(got) != 0 || after != 0 {
		t.Fatalf("unflushed of nothing: %d entries, after %d, %v", len(got), after, err)
	}
}
