package history_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// Conversations land in different buckets, each message in its
// conversation's bucket only, and every read finds them there.
func TestMessagesAreBucketedByConversation(t *testing.T) {
	dbName := testenv.Namespace(t)
	s := openStoreAt(t, testenv.Mongo(t), dbName)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	buckets := map[string]bool{}
	var convs []string
	for i := 0; len(buckets) < 4; i++ {
		cv := protocol.DMConv("amy", fmt.Sprintf("u%03d", i))
		if b := history.MessageCollection(cv); !buckets[b] {
			buckets[b] = true
			convs = append(convs, cv)
		}
	}
	var all []protocol.Message
	for _, cv := range convs {
		for seq := int64(1); seq <= 5; seq++ {
			m := msg(cv, seq)
			m.From, m.To = "amy", cv[len("dm:amy:"):]
			all = append(all, m)
		}
	}
	if err := s.UpsertMessages(ctx, all); err != nil {
		t.Fatal(err)
	}

	mc := mongoClient(t)
	db := mc.Database(dbName)
	for _, cv := range convs {
		n, err := db.Collection(history.MessageCollection(cv)).CountDocuments(ctx, bson.M{"conv": cv})
		if err != nil || n != 5 {
			t.Fatalf("bucket of %s holds %d of its messages (%v), want 5", cv, n, err)
		}
		got, err := s.Messages(ctx, cv, 0, 0, 0, false)
		if err != nil || !equalSeqs(seqs(got), []int64{1, 2, 3, 4, 5}) {
			t.Fatalf("Messages(%s) = %v, %v", cv, seqs(got), err)
		}
		if top, err := s.LatestSeq(ctx, cv); err != nil || top != 5 {
			t.Fatalf("LatestSeq(%s) = %d, %v; want 5", cv, top, err)
		}
	}
	total := int64(0)
	for i := range history.MessageBuckets {
		n, err := db.Collection(fmt.Sprintf("messages_%02d", i)).CountDocuments(ctx, bson.M{})
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != int64(len(all)) {
		t.Fatalf("buckets hold %d messages in all, want %d: some message is stored twice", total, len(all))
	}
	direct, err := s.DirectConvs(ctx, "amy")
	if err != nil || len(direct) != len(convs) {
		t.Fatalf("DirectConvs(amy) = %v, %v; want the %d conversations across buckets", direct, err, len(convs))
	}
}

// A store written by an earlier build keeps its messages in one
// "messages" collection: opening it moves them into the buckets, once,
// and drops the old collection; opening again changes nothing.
func TestOpenMovesTheOldLayout(t *testing.T) {
	uri, dbName := testenv.Mongo(t), testenv.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mc := mongoClient(t)
	legacy := mc.Database(dbName).Collection("messages")
	convs := []string{protocol.DMConv("amy", "bob"), protocol.RoomConv("lobby")}
	var docs []any
	for _, cv := range convs {
		for seq := int64(1); seq <= 1200; seq++ {
			docs = append(docs, bson.D{{Key: "_id", Value: fmt.Sprintf("%s-%d", cv, seq)}, {Key: "conv", Value: cv},
				{Key: "seq", Value: seq}, {Key: "from", Value: "amy"}, {Key: "text", Value: "old"}, {Key: "ts", Value: seq}})
		}
	}
	if _, err := legacy.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Database(dbName).Drop(context.Background()) })

	for range 2 {
		s, err := history.Open(ctx, uri, dbName)
		if err != nil {
			t.Fatal(err)
		}
		for _, cv := range convs {
			got, err := s.Messages(ctx, cv, 0, 0, 0, false)
			if err != nil || len(got) != 1200 || got[0].Seq != 1 || got[1199].Seq != 1200 {
				t.Fatalf("after Open, Messages(%s) has %d messages (%v), want 1..1200", cv, len(got), err)
			}
		}
		if empty, err := s.Empty(ctx); err != nil || empty {
			t.Fatalf("Empty = %v, %v; want false", empty, err)
		}
		s.Close(ctx)
		if n, err := legacy.CountDocuments(ctx, bson.M{}); err != nil || n != 0 {
			t.Fatalf("old collection holds %d messages after Open (%v), want it dropped", n, err)
		}
	}
}

func mongoClient(t *testing.T) *mongo.Client {
	t.Helper()
	mc, err := mongo.Connect(options.Client().ApplyURI(testenv.Mongo(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mc.Disconnect(context.Background()) })
	return mc
}

// BenchmarkRangeRead measures one range read of a conversation (what a
// sync does when Redis does not cover it) in a store holding 32,000
// messages over 64 conversations.
func BenchmarkRangeRead(b *testing.B) {
	s := openStore(b)
	ctx := context.Background()
	const convs, per = 64, 500
	batch := make([]protocol.Message, 0, 4000)
	for c := range convs {
		for seq := int64(1); seq <= per; seq++ {
			batch = append(batch, msg(fmt.Sprintf("room:bench%02d", c), seq))
			if len(batch) == cap(batch) {
				if err := s.UpsertMessages(ctx, batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	b.ResetTimer()
	for i := range b.N {
		got, err := s.Messages(ctx, fmt.Sprintf("room:bench%02d", i%convs), 200, 251, 0, false)
		if err != nil || len(got) != 50 {
			b.Fatalf("read %d messages (%v), want 50", len(got), err)
		}
	}
}

// Held tells which uploaded seqs and ids the store holds for a
// conversation, and nothing of other conversations.
func TestHeld(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conv, other := protocol.DMConv("amy", "bob"), protocol.DMConv("amy", "cid")
	var stored []protocol.Message
	for seq := int64(1); seq <= 10; seq++ {
		stored = append(stored, msg(conv, seq), msg(other, seq))
	}
	if err := s.UpsertMessages(ctx, stored); err != nil {
		t.Fatal(err)
	}
	up := []protocol.Message{
		msg(conv, 3),                               // held: same id, same seq
		{ID: "new-5", Conv: conv, Seq: 5},          // seq held by another message
		{ID: "new-20", Conv: conv, Seq: 20},        // new
		{ID: msg(other, 4).ID, Conv: conv, Seq: 4}, // another conversation's id
	}
	seqs, ids, err := s.Held(ctx, conv, up)
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 3 || !seqs[3] || !seqs[5] || !seqs[4] {
		t.Fatalf("held seqs %v, want 3, 4 and 5", seqs)
	}
	if len(ids) != 1 || !ids[msg(conv, 3).ID] {
		t.Fatalf("held ids %v, want only %s", ids, msg(conv, 3).ID)
	}
	if seqs, ids, err := s.Held(ctx, conv, nil); err != nil || len(seqs)+len(ids) != 0 {
		t.Fatalf("Held of nothing = %v %v %v", seqs, ids, err)
	}
}
