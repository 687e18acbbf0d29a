package history_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/history"
	"chatcluster/internal/keyspace"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// TestWriterForwards: with Forward set, every message written is appended
// to its shard's forward stream, if that stream exists, with the JSON the
// node wrote; shards without one get none (no stream is created), and the
// history streams drain as without forwarding.
func TestWriterForwards(t *testing.T) {
	ns := testenv.Namespace(t)
	prefix := ns + ":"
	ctx := context.Background()
	rdb := redisClient(t, testenv.Redis(t), prefix)
	s := openStoreAt(t, testenv.Mongo(t), ns)

	msgs := makeMessages(400, 40, "f")
	tags := keyspace.NewTags()
	fwdKey := func(conv string) string { return prefix + tags.Of(conv) + "fwd" }
	// Only the shard of the first conversation has a forward stream.
	fed := fwdKey(msgs[0].Conv)
	if err := rdb.XGroupCreateMkStream(ctx, fed, "g", "$").Err(); err != nil {
		t.Fatal(err)
	}
	var want []protocol.Message
	for _, m := range msgs {
		if fwdKey(m.Conv) == fed {
			want = append(want, m)
		}
	}
	if len(want) == len(msgs) || len(want) == 0 {
		t.Fatalf("%d of %d messages in the fed shard: the test needs some in other shards", len(want), len(msgs))
	}

	appendMessages(t, rdb, prefix, msgs)
	_, stop := runWriter(t, history.WriterConfig{
		Redis: rdb, Prefix: prefix, Store: s, Consumer: "n1", Batch: 64,
		Block: 20 * time.Millisecond, Forward: "fwd", ForwardCap: 1000, Logger: zerolog.New(&logBuf{}),
	})
	testenv.WaitFor(t, 30*time.Second, "stream and pending hashes drained", func() bool {
		return drained(t, rdb, prefix, convsOf(msgs))
	})
	stop()
	checkStored(t, s, msgs)

	entries, err := rdb.XRange(ctx, fed, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]protocol.Message{}
	for _, e := range entries {
		raw, _ := e.Values[history.StreamField].(string)
		var m protocol.Message
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatalf("forwarded entry %s: %v (%q)", e.ID, err, raw)
		}
		if _, dup := got[m.ID]; dup {
			t.Fatalf("message %s forwarded twice", m.ID)
		}
		got[m.ID] = m
	}
	if len(got) != len(want) {
		t.Fatalf("%d messages forwarded, want %d", len(got), len(want))
	}
	for _, m := range want {
		if got[m.ID] != m {
			t.Fatalf("forwarded %+v, want %+v", got[m.ID], m)
		}
	}
	for _, m := range msgs {
		if k := fwdKey(m.Conv); k != fed {
			if n, err := rdb.Exists(ctx, k).Result(); err != nil || n != 0 {
				t.Fatalf("forward stream %s exists (%d, %v): only the fed one should", k, n, err)
			}
		}
	}
}
