package node

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
			up := peerUpgrader()
			accepted := make(chan *websocket.Conn, 1)
			hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ws, err := up.Upgrade(w, r, nil); err == nil {
					accepted <- ws
				}
			}))
			hs.Listener = wsconn.Listen(hs.Listener, nil)
			hs.Start()
			defer hs.Close()
			dialed, _, err := peerDialer(10*time.Second).Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/", nil)
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
			link := newPeerLink(mine, "n2", 7, n, zerolog.Nop())
			if link.out == nil {
				t.Fatal("the link's connection does not batch")
			}
			frame := func(i int) string { return fmt.Sprintf(`{"type":"deliver","n":%d}`, i) }
			for i := range n {
				if !link.enqueue([]byte(frame(i))) {
					t.Fatalf("frame %d refused", i)
				}
			}
			before := link.out.Writes()
			done := make(chan struct{})
			go func() { defer close(done); link.writeLoop(time.Minute) }()
			err = readFrames(other, n, frame)
			link.close()
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
