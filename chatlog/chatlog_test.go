package chatlog

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

func newLog(t *testing.T) *Log {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, testenv.Namespace(t)+":")
}

func TestAppendAssignsSeqAndRecordsEverywhere(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	m := protocol.Message{ID: "a", Conv: "dm:x:y", From: "x", To: "y", Text: `he said "hi" \o/`, TS: 5}
	// A Redis that did not start with the cluster must seed counters first.
	if _, _, err := l.Append(ctx, m, "", nil); !errors.Is(err, ErrNeedSeqInit) {
		t.Fatalf("append without marker: %v, want ErrNeedSeqInit", err)
	}
	if err := l.InitSeq(ctx, m.Conv, 41); err != nil {
		t.Fatal(err)
	}
	got, dup, err := l.Append(ctx, m, "c1", []string{"x", "y"})
	if err != nil || dup || got.Seq != 42 || got.Text != m.Text || got.ID != "a" {
		t.Fatalf("append: %+v dup=%v err=%v", got, dup, err)
	}
	again, dup, err := l.Append(ctx, protocol.Message{ID: "b", Conv: m.Conv, From: "x", Text: "other"}, "c1", nil)
	if err != nil || !dup || again != got {
		t.Fatalf("idempotent resend: %+v dup=%v err=%v", again, dup, err)
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
	first, _, err := l.Append(ctx, protocol.Message{ID: "c", Conv: "dm:p:q", From: "p", Text: "x"}, "", nil)
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
		if _, _, err := l.Append(ctx, protocol.Message{ID: "m", Conv: "room:r", From: "x", Text: "t"}, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	n, err := l.rdb.LLen(ctx, l.RecentKey("room:r")).Result()
	if err != nil || n != protocol.RecentLen {
		t.Fatalf("recent list has %d entries, want %d", n, protocol.RecentLen)
	}
}
