package chatlog

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/protocol"
)

// Keys of layout 1 (one stream, untagged conversation keys, one marker,
// idempotency per sender) are moved into layout 2 once; chat goes on from
// where it was: the next seq follows, a resend is still recognised, and
// every message waiting for MongoDB is in its shard's stream.
func TestMigrateLayoutFromOneStream(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	rdb, p := l.rdb, l.prefix
	conv := "dm:ann:bob"
	msg := func(seq int64, id string) string {
		b, _ := json.Marshal(protocol.Message{ID: id, Conv: conv, Seq: seq, From: "ann", To: "bob", Text: "t", TS: 100 + seq})
		return string(b)
	}
	pipe := rdb.Pipeline()
	pipe.Set(ctx, p+"seqinit", 1, 0)
	pipe.Set(ctx, p+"seq:"+conv, 7, 0)
	pipe.LPush(ctx, p+"recent:"+conv, msg(6, "m6"), msg(7, "m7"))
	pipe.HSet(ctx, p+"pending:"+conv, "6", msg(6, "m6"), "7", msg(7, "m7"))
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: p + "history", Values: []any{"m", msg(6, "m6")}})
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: p + "history", Values: []any{"m", msg(7, "m7")}})
	pipe.XGroupCreate(ctx, p+"history", "writers", "0")
	pipe.HSet(ctx, p+"idem:ann", "c7", "7 107 m7 "+conv)
	pipe.RPush(ctx, p+"idemq:ann", "c7")
	pipe.Set(ctx, p+"idem:ann:c6", msg(6, "m6"), time.Hour)
	pipe.HSet(ctx, p+"reseeded", conv, 3)
	pipe.Set(ctx, p+"cluster:epoch", 9, 0)
	pipe.Set(ctx, p+"cluster", `{"epoch":9}`, time.Minute)
	pipe.ZIncrBy(ctx, p+"hotwords", 2, "hello")
	pipe.Set(ctx, p+"node-boot:n1", "x.1", 0)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	var steps []string
	mg, err := l.MigrateLayout(ctx, func(s string) { steps = append(steps, s) })
	if err != nil {
		t.Fatal(err)
	}
	if mg.Keys != 6 || mg.Entries != 2 || mg.Idem != 2 || !mg.Moved() || len(steps) == 0 {
		t.Fatalf("migration %+v, steps %q", mg, steps)
	}
	for _, k := range []string{"seqinit", "seq:" + conv, "recent:" + conv, "pending:" + conv, "history",
		"idem:ann", "idemq:ann", "idem:ann:c6", "reseeded", "cluster", "cluster:epoch", "hotwords", "node-boot:n1"} {
		if n := rdb.Exists(ctx, p+k).Val(); n != 0 {
			t.Errorf("old key %s is still there", k)
		}
	}
	if fresh, err := l.Fresh(ctx); err != nil || !fresh {
		t.Fatalf("Fresh = %v, %v; the old layout was marked", fresh, err)
	}
	if n := rdb.XLen(ctx, l.StreamKey(conv)).Val(); n != 2 {
		t.Fatalf("%d entries in the shard's stream, want 2", n)
	}
	if n := rdb.HLen(ctx, l.PendingKey(conv)).Val(); n != 2 {
		t.Fatalf("%d pending fields, want 2", n)
	}
	if v := rdb.Get(ctx, p+"{cluster}:epoch").Val(); v != "9" {
		t.Fatalf("leader epoch moved as %q", v)
	}
	if ttl := rdb.PTTL(ctx, p+"{cluster}").Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("the node list lost its TTL: %v", ttl)
	}
	if f, err := l.Reseeded(ctx, []string{conv}); err != nil || f[conv] != 3 {
		t.Fatalf("reseeded = %v, %v", f, err)
	}
	for cid, seq := range map[string]int64{"c7": 7, "c6": 6} {
		got, dup, err := appended(l.Append(ctx, protocol.Message{ID: "again", Conv: conv, From: "ann", Text: "t", TS: 1}, cid, nil))
		if err != nil || !dup || got.Seq != seq {
			t.Fatalf("resend of %s after the migration: seq %d dup=%v err=%v", cid, got.Seq, dup, err)
		}
	}
	got, dup, err := appended(l.Append(ctx, protocol.Message{ID: "m8", Conv: conv, From: "ann", Text: "t", TS: 1}, "c8", nil))
	if err != nil || dup || got.Seq != 8 {
		t.Fatalf("next message: seq %d dup=%v err=%v, want 8", got.Seq, dup, err)
	}
	if recent, _ := rdb.LLen(ctx, l.RecentKey(conv)).Result(); recent != 3 {
		t.Fatalf("recent list of %d", recent)
	}

	// Once migrated, a start only reads the layout key.
	rdb.Set(ctx, p+"seq:dm:x:y", 1, 0)
	if mg, err := l.MigrateLayout(ctx, nil); err != nil || mg.Moved() {
		t.Fatalf("second migration: %+v, %v", mg, err)
	}
	if n := rdb.Exists(ctx, p+"seq:dm:x:y").Val(); n != 1 {
		t.Fatal("a second run moved keys")
	}
}

// A Redis without any key under the prefix (a new deployment) is marked
// as layout 2 and nothing else is written.
func TestMigrateLayoutOfNothing(t *testing.T) {
	ctx := context.Background()
	l := newLog(t)
	mg, err := l.MigrateLayout(ctx, nil)
	if err != nil || mg.Moved() {
		t.Fatalf("migration %+v, %v", mg, err)
	}
	if v := l.rdb.Get(ctx, l.LayoutKey()).Val(); v != LayoutVersion {
		t.Fatalf("layout %q", v)
	}
	if fresh, _ := l.Fresh(ctx); fresh {
		t.Fatal("an unmarked Redis was marked fresh")
	}
}
