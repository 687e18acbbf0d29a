package chatclient_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

// A rebuild of more than one frame's worth of messages goes in several
// requests, each within the frame limit (a node closes the connection on
// a larger frame), in seq order, and the reply adds up what was restored.
func TestRebuildSplitsAtTheFrameLimit(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	var seqs []int64
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.SetReadLimit(protocol.MaxFrameSize)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			req, err := protocol.DecodeRequest(b)
			if err != nil {
				t.Errorf("decode: %v", err)
				return
			}
			var d protocol.RebuildData
			if err := json.Unmarshal(req.Data, &d); err != nil {
				t.Errorf("rebuild data: %v", err)
				return
			}
			mu.Lock()
			sizes = append(sizes, len(b))
			for _, m := range d.Messages {
				seqs = append(seqs, m.Seq)
			}
			mu.Unlock()
			last := d.Messages[len(d.Messages)-1].Seq
			out, _ := protocol.EncodeReply(protocol.Reply{Action: req.Action, ID: req.ID, Data: protocol.RebuildReply{Conv: d.Conv, Restored: len(d.Messages), Latest: last}})
			if err := ws.WriteMessage(websocket.TextMessage, out); err != nil {
				return
			}
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := chatclient.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 300
	conv := protocol.DMConv("amy", "bob")
	msgs := make([]protocol.Message, 0, n)
	for i := n; i >= 1; i-- { // out of order on purpose
		msgs = append(msgs, protocol.Message{ID: fmt.Sprintf("m%d", i), Conv: conv, Seq: int64(i), From: "amy", To: "bob",
			Text: strings.Repeat("x", 1000), TS: int64(i)})
	}
	r, err := conn.Rebuild(ctx, conv, msgs)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if r.Restored != n || r.Latest != n || r.Conv != conv {
		t.Fatalf("reply %+v, want %d restored, latest %d", r, n, n)
	}
	if len(sizes) < 5 {
		t.Fatalf("%d requests for %d messages of 1 KB, want at least 5", len(sizes), n)
	}
	for i, sz := range sizes {
		if sz > protocol.MaxFrameSize {
			t.Fatalf("request %d is %d bytes, over the frame limit %d", i, sz, protocol.MaxFrameSize)
		}
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("uploaded seqs %v..., want 1..%d in order", seqs[:min(len(seqs), 10)], n)
		}
	}
}
