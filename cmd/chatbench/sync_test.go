package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/protocol"
)

// scripted is one answer of a fakeNode to a sync.
type scripted func(req protocol.Request) (reply *protocol.Reply, hangUp bool)

// fakeNode is a WebSocket server that logs anyone in and answers each
// sync with the next of its scripted answers: a reply, a refusal, or
// closing the connection.
type fakeNode struct {
	t       *testing.T
	mu      sync.Mutex
	answers []scripted
	syncs   []protocol.SyncData // every sync received
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var req protocol.Request
		if json.Unmarshal(b, &req) != nil {
			return
		}
		var rep *protocol.Reply
		switch req.Action {
		case protocol.ActionLogin:
			rep = &protocol.Reply{Action: req.Action, ID: req.ID, Data: protocol.LoginReply{Username: "u", Node: "n1"}}
		case protocol.ActionSync:
			var d protocol.SyncData
			_ = json.Unmarshal(req.Data, &d)
			f.mu.Lock()
			f.syncs = append(f.syncs, d)
			var next scripted
			if len(f.answers) > 0 {
				next, f.answers = f.answers[0], f.answers[1:]
			}
			f.mu.Unlock()
			if next == nil {
				f.t.Errorf("an unscripted sync: %s", b)
				return
			}
			var hang bool
			if rep, hang = next(req); hang {
				return
			}
		default:
			rep = &protocol.Reply{Action: req.Action, ID: req.ID, Data: protocol.Empty{}}
		}
		out, _ := protocol.EncodeReply(*rep)
		if ws.WriteMessage(websocket.TextMessage, out) != nil {
			return
		}
	}
}

func refuse(code int) scripted {
	return func(req protocol.Request) (*protocol.Reply, bool) {
		r := protocol.ReplyError(req.Action, req.ID, protocol.Errorf(code, "not now"))
		return &r, false
	}
}

func hangUp(protocol.Request) (*protocol.Reply, bool) { return nil, true }

func answer(sr protocol.SyncReply) scripted {
	return func(req protocol.Request) (*protocol.Reply, bool) {
		return &protocol.Reply{Action: req.Action, ID: req.ID, Data: sr}, false
	}
}

// syncSetup is one acknowledged message from user 0 to user 1 that was
// never pushed, and a way to user 1's connection to a fake node that
// redials when the connection broke.
// script gives the node's answers, which may name the message.
func syncSetup(t *testing.T, script func(trk *tracker, k uint64) []scripted) (*tracker, *fakeNode, connFunc) {
	t.Helper()
	trk := newTracker("sync")
	due := time.Now()
	k := trk.add(due, 1, 0)
	trk.reply(0, k, 0, due, "dm:bench0:bench1", 5)
	fn := &fakeNode{t: t, answers: script(trk, k)}
	srv := httptest.NewServer(fn)
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	tg := &target{name: "fake", wsURL: url, prefix: "bench", password: "pw", dialer: newDialer(0)}
	var (
		mu  sync.Mutex
		cur *client
	)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil {
			cur.close()
		}
	})
	conn := func(ctx context.Context, idx int) (*client, error) {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil && !cur.isClosed() {
			return cur, nil
		}
		c, err := tg.connectURL(ctx, idx, url, func() *tracker { return trk })
		if err != nil {
			return nil, err
		}
		cur = c
		return c, nil
	}
	return trk, fn, conn
}

func found(trk *tracker, k uint64) protocol.SyncReply {
	return protocol.SyncReply{Convs: map[string]protocol.SyncConv{"dm:bench0:bench1": {Latest: 5, Messages: []protocol.Message{
		{Conv: "dm:bench0:bench1", Seq: 5, From: "bench0", To: "bench1", Text: trk.text(k, time.Unix(0, 0))},
	}}}}
}

func TestSyncRetriesRefusalsAndBrokenConnections(t *testing.T) {
	trk, fn, conn := syncSetup(t, func(trk *tracker, k uint64) []scripted {
		return []scripted{refuse(503), hangUp, refuse(429), answer(found(trk, k))}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := recoverBySync(ctx, trk, func(from int) int { return from ^ 1 }, conn)
	if res.unasked != 0 || res.retries != 3 || trk.recovered.Load() != 1 {
		t.Fatalf("result %+v, recovered %d; want an answer after 3 retries and the message found", res, trk.recovered.Load())
	}
	if _, lost, _, _ := trk.tally(); lost != 0 {
		t.Errorf("%d lost", lost)
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	for _, d := range fn.syncs {
		if d.Convs["dm:bench0:bench1"] != 4 {
			t.Errorf("synced from %v, want the seq below the missing one (4)", d.Convs)
		}
	}
}

func TestSyncAsksAgainWhenTheServerRanOutOfTime(t *testing.T) {
	more := answer(protocol.SyncReply{Convs: map[string]protocol.SyncConv{"dm:bench0:bench1": {Latest: 5, More: true, Messages: []protocol.Message{}}}})
	trk, fn, conn := syncSetup(t, func(trk *tracker, k uint64) []scripted { return []scripted{more, answer(found(trk, k))} })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := recoverBySync(ctx, trk, func(from int) int { return from ^ 1 }, conn)
	if res.unasked != 0 || trk.recovered.Load() != 1 {
		t.Fatalf("result %+v, recovered %d", res, trk.recovered.Load())
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if len(fn.syncs) != 2 || fn.syncs[1].Convs["dm:bench0:bench1"] != 4 {
		t.Errorf("syncs %+v, want the same offset asked again", fn.syncs)
	}
}

func TestSyncTakesARealAnswer(t *testing.T) {
	trk, _, conn := syncSetup(t, func(*tracker, uint64) []scripted { return []scripted{refuse(403)} })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := recoverBySync(ctx, trk, func(from int) int { return from ^ 1 }, conn)
	if res.unasked != 1 || res.retries != 0 || !strings.Contains(strings.Join(res.notes(), " "), "code 403") {
		t.Fatalf("a 403 should be taken as the answer: %+v %v", res, res.notes())
	}
	if _, lost, _, _ := trk.tally(); lost != 1 {
		t.Errorf("%d lost, want 1", lost)
	}
}
