package chatclient_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

// Read and Typing send their action with the data the protocol names, and
// Read returns the position the node says it stores (here above the seq
// sent: positions never go down); a refusal comes back as a reply error.
func TestReadAndTyping(t *testing.T) {
	conv := protocol.DMConv("amy", "bob")
	type seen struct {
		action string
		data   map[string]any
	}
	got := make(chan seen, 8)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
			req, err := protocol.DecodeRequest(b)
			if err != nil {
				t.Errorf("decode: %v", err)
				return
			}
			var d map[string]any
			if err := json.Unmarshal(req.Data, &d); err != nil {
				t.Errorf("%s data: %v", req.Action, err)
				return
			}
			got <- seen{req.Action, d}
			rep := protocol.Reply{Action: req.Action, ID: req.ID}
			switch {
			case req.Action == protocol.ActionRead && d["seq"] == float64(99):
				rep.Code, rep.Error = 400, "seq 99 is above the latest of "+conv+" (12)"
			case req.Action == protocol.ActionRead:
				rep.Data = protocol.ReadReply{Conv: conv, Seq: 12}
			default:
				rep.Data = struct{}{}
			}
			out, _ := protocol.EncodeReply(rep)
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

	r, err := conn.Read(ctx, conv, 9)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conv != conv || r.Seq != 12 {
		t.Fatalf("read reply %+v, want %s at 12", r, conv)
	}
	if s := <-got; s.action != protocol.ActionRead || s.data["conv"] != conv || s.data["seq"] != float64(9) {
		t.Fatalf("read request %+v", s)
	}
	if _, err := conn.Read(ctx, conv, 99); chatclient.Code(err) != 400 || !strings.Contains(err.Error(), "above the latest") {
		t.Fatalf("read above the latest: %v, want the 400", err)
	}
	<-got
	if err := conn.Typing(ctx, "room:lobby"); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s.action != protocol.ActionTyping || s.data["conv"] != "room:lobby" || len(s.data) != 1 {
		t.Fatalf("typing request %+v", s)
	}
}
