package peerlink

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"chatcluster/internal/wsconn"
	"chatcluster/protocol"
)

// readFrames reads frames from ws until it has n, checking each is
// want(i).
func readFrames(ws *websocket.Conn, n int, want func(i int) string) error {
	_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
	for i := range n {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("after %d frames: %w", i, err)
		}
		if w := want(i); string(b) != w {
			return fmt.Errorf("frame %d is %s, want %s", i, b, w)
		}
	}
	return nil
}

// Both ends of a peer link write in batches: the frames queued when the
// write loop comes for them leave in a few writes, and arrive all, in
// order.
func TestPeerLinkWritesInBatches(t *testing.T) {
	for _, side := range []string{"dialing", "accepting"} {
		t.Run(side, func(t *testing.T) {
			up := upgrader()
			accepted := make(chan *websocket.Conn, 1)
			hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ws, err := up.Upgrade(w, r, nil); err == nil {
					accepted <- ws
				}
			}))
			hs.Listener = wsconn.Listen(hs.Listener, nil)
			hs.Start()
			defer hs.Close()
			dialed, _, err := dialer(10*time.Second).Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer dialed.Close()
			other := <-accepted
			defer other.Close()
			mine := dialed
			if side == "accepting" {
				mine, other = other, mine
			}
			const n = 3000
			link := newLink(mine, "n2", 7, n, zerolog.Nop())
			if link.out == nil {
				t.Fatal("the link's connection does not batch")
			}
			frame := func(i int) string { return fmt.Sprintf(`{"type":"deliver","n":%d}`, i) }
			for i := range n {
				if !link.Enqueue([]byte(frame(i))) {
					t.Fatalf("frame %d refused", i)
				}
			}
			before := link.out.Writes()
			done := make(chan struct{})
			go func() { defer close(done); link.WriteLoop(time.Minute) }()
			err = readFrames(other, n, frame)
			link.Close()
			<-done
			if err != nil {
				t.Fatal(err)
			}
			// A batch per maxLinkBatch frames, and perhaps a ping.
			if writes := link.out.Writes() - before; writes > n/maxLinkBatch+3 {
				t.Fatalf("%d frames went out in %d writes", n, writes)
			}
		})
	}
}

// A leader's link that closes first acknowledges what was handled, so the
// node at the other end does not keep frames the leader already handled.
func TestClosingLinkAcknowledgesWhatWasHandled(t *testing.T) {
	up := websocket.Upgrader{}
	got := make(chan protocol.PeerFrame, 4)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			if f, err := protocol.DecodePeer(b); err == nil {
				got <- f
			}
		}
	}))
	defer hs.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	link := newLink(ws, "n2", 7, 8, zerolog.Nop())
	link.ackFrom = "n1"
	done := make(chan struct{})
	go func() { defer close(done); link.WriteLoop(time.Minute) }()
	link.SetHandled(42)
	link.Close() // at once: before any tick of ackEvery would have sent it
	<-done
	var acks []uint64
	for f := range got {
		if f.Type == protocol.PeerAck {
			acks = append(acks, f.Up)
			if f.From != "n1" || f.Epoch != 7 {
				t.Errorf("ack from %q epoch %d, want n1 epoch 7", f.From, f.Epoch)
			}
		}
	}
	if len(acks) == 0 || acks[len(acks)-1] != 42 {
		t.Fatalf("acks before the close: %v, want the last to be 42", acks)
	}
}
