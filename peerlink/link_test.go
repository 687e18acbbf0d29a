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

// A lazy frame waits for the next frame queued and leaves in the same
// write, before it; one that nothing follows leaves after lazyFlush. The
// lazy lane is bounded, and closed with the link.
func TestLazyFramesWaitForTheNextWrite(t *testing.T) {
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
	mine, _, err := dialer(10*time.Second).Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	other := <-accepted
	defer other.Close()
	link := newLink(mine, "n2", 7, 8, zerolog.Nop())
	done := make(chan struct{})
	go func() { defer close(done); link.WriteLoop(time.Minute) }()
	defer func() { link.Close(); <-done }()

	frame := func(i int) string { return fmt.Sprintf(`{"type":"signal","n":%d}`, i) }
	before := link.out.Writes()
	for i := range 3 {
		if !link.EnqueueLazy([]byte(frame(i))) {
			t.Fatalf("lazy frame %d refused", i)
		}
	}
	if !link.Enqueue([]byte(frame(3))) {
		t.Fatal("frame refused")
	}
	if err := readFrames(other, 4, frame); err != nil {
		t.Fatal(err)
	}
	if writes := link.out.Writes() - before; writes > 2 { // and perhaps a ping
		t.Fatalf("3 lazy frames and the frame after them went out in %d writes, want 1", writes)
	}

	at := time.Now()
	if !link.EnqueueLazy([]byte(frame(4))) {
		t.Fatal("lazy frame refused")
	}
	if err := readFrames(other, 1, func(int) string { return frame(4) }); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(at); waited < lazyFlush {
		t.Fatalf("a lazy frame alone went out after %v, before lazyFlush (%v)", waited, lazyFlush)
	}

	idle := newLink(other, "n3", 7, 8, zerolog.Nop()) // no write loop: the lane fills
	for i := range lazyCap {
		if !idle.EnqueueLazy([]byte(frame(i))) {
			t.Fatalf("lazy frame %d of %d refused", i, lazyCap)
		}
	}
	if idle.EnqueueLazy([]byte(frame(lazyCap))) {
		t.Fatalf("lazy frame %d taken, over lazyCap", lazyCap)
	}
	link.Close()
	if link.EnqueueLazy([]byte(frame(5))) {
		t.Fatal("a closed link took a lazy frame")
	}
}
