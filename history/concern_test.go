package history

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// The --mongo URI's write and read concern reach the commands the store
// sends: nothing in Open sets its own (so the read preference is the
// URI's too). A write the history writer waits for is therefore
// acknowledged at that concern (majority, journaled, in the production
// example) before it deletes anything from Redis. Opening twice creates
// nothing twice.
func TestURIConcernsReachTheCommands(t *testing.T) {
	ctx := context.Background()
	uri := testenv.Mongo(t)
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	uri += sep + "w=majority&journal=true&readConcernLevel=majority&readPreference=primaryPreferred"
	db := testenv.Namespace(t)
	var (
		mu   sync.Mutex
		cmds = map[string][]bson.Raw{} // command name -> the commands sent
	)
	mon := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		mu.Lock()
		cmds[e.CommandName] = append(cmds[e.CommandName], bson.Raw(slices.Clone(e.Command)))
		mu.Unlock()
	}}
	s, err := Open(ctx, uri, db, WithLogger(zerolog.Nop()), WithMonitor(mon))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.db.Drop(context.Background())
		_ = s.Close(context.Background())
	})
	m := protocol.Message{ID: "c1", Conv: "dm:a:b", Seq: 1, From: "a", To: "b", Text: "x", TS: 1}
	if err := s.UpsertMessages(ctx, []protocol.Message{m}); err != nil {
		t.Fatalf("a write at w=majority, journaled: %v", err)
	}
	got, err := s.Messages(ctx, m.Conv, 0, 0, 0, false)
	if err != nil || len(got) != 1 || got[0].ID != "c1" {
		t.Fatalf("read back at readConcern majority: %v, %v", got, err)
	}
	mu.Lock()
	if len(cmds["insert"]) == 0 || len(cmds["find"]) == 0 {
		t.Fatalf("no insert or find seen: %d commands", len(cmds))
	}
	for _, c := range cmds["insert"] {
		wc, ok := c.Lookup("writeConcern").DocumentOK()
		if !ok || wc.Lookup("w").StringValue() != "majority" || !wc.Lookup("j").Boolean() {
			t.Fatalf("an insert was sent with write concern %v: %s", wc, c)
		}
	}
	for _, c := range cmds["find"] {
		rc, ok := c.Lookup("readConcern").DocumentOK()
		if !ok || rc.Lookup("level").StringValue() != "majority" {
			t.Fatalf("a find was sent with read concern %v: %s", rc, c)
		}
	}
	mu.Unlock()
	again, err := Open(ctx, uri, db, WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatalf("opening a second time (indexes and collections exist): %v", err)
	}
	_ = again.Close(ctx)
}

// A URI asking for unacknowledged writes is refused: the history writer
// would delete from Redis what MongoDB may never have stored.
func TestUnacknowledgedWritesRefused(t *testing.T) {
	uri := testenv.Mongo(t)
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	_, err := Open(context.Background(), uri+sep+"w=0", testenv.Namespace(t), WithLogger(zerolog.Nop()))
	if err == nil || !strings.Contains(err.Error(), "w=0") {
		t.Fatalf("open with w=0: %v, want a refusal naming w=0", err)
	}
}
