package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"chatcluster/internal/testenv"
	"chatcluster/internal/wsconn"
	"chatcluster/metrics"
	"chatcluster/protocol"
)

// wsPair serves one WebSocket with a node client as serveWS makes it (its
// connection batching writes, its write loop started by what is queued),
// and dials it. The caller pushes frames with c.enqueue and reads them
// from ws.
func wsPair(t testing.TB, cfg Config) (c *client, ws *websocket.Conn) {
	t.Helper()
	s := &Server{cfg: cfg, log: zerolog.Nop(), m: metrics.NewNode(prometheus.NewRegistry(), metrics.NodeSources{}),
		batches: wsconn.NewBuffers(clientBatchBuffer), lazy: newLazyFlusher()}
	made := make(chan *client, 1)
	up := clientUpgrader()
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		made <- newClient(s, conn, r.RemoteAddr)
	}))
	hs.Listener = wsconn.Listen(hs.Listener, s.batches)
	hs.Start()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	c = <-made
	if c.out == nil {
		t.Fatal("the client's connection does not batch")
	}
	t.Cleanup(func() {
		c.close(websocket.CloseNormalClosure, "")
		ws.Close()
		s.wg.Wait() // the write loops
		hs.Close()
	})
	return c, ws
}

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

// heldQueue is a send queue whose write loop is taken to be running, so
// that what is pushed stays for the test to take.
func heldQueue(soft, maxBytes int, behindFor time.Duration) *frameQueue {
	q := newFrameQueue(soft, maxBytes, behindFor)
	q.writing = true
	return q
}

func queueConfig() Config {
	cfg := DefaultConfig()
	cfg.SendQueue = 8
	cfg.PingInterval = time.Hour
	return cfg
}

// A burst many times the queue bound, handed over faster than any socket
// takes it (as a failover flushing what the cluster held, or a large sync
// with live messages behind it, does), reaches a client that reads: every
// frame once, in order, and the connection stays open.
func TestBurstOverTheBoundReachesAReadingClient(t *testing.T) {
	cfg := queueConfig()
	c, ws := wsPair(t, cfg)
	const n = 20000 // 2,500 times the bound
	got := make(chan error, 1)
	go func() {
		_ = ws.SetReadDeadline(time.Now().Add(2 * time.Minute))
		for i := range n + 1 {
			_, b, err := ws.ReadMessage()
			if err != nil {
				got <- fmt.Errorf("after %d frames: %w", i, err)
				return
			}
			if want := fmt.Sprintf(`{"n":%d}`, i); string(b) != want {
				got <- fmt.Errorf("frame %d is %s, want %s", i, b, want)
				return
			}
		}
		got <- nil
	}()
	for i := range n {
		if !c.enqueue(fmt.Appendf(nil, `{"n":%d}`, i)) {
			t.Fatalf("frame %d of the burst refused: a client that reads was judged too slow", i)
		}
	}
	// The connection is still usable after the burst.
	if !c.enqueue(fmt.Appendf(nil, `{"n":%d}`, n)) {
		t.Fatal("frame after the burst refused")
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.closing:
		t.Fatalf("connection closed: %d %q", c.closeCode, c.closeText)
	default:
	}
	if v := testutil.ToFloat64(c.srv.m.SlowDisconnects); v != 0 {
		t.Fatalf("slow disconnects = %v, want 0", v)
	}
}

// pushHeld queues frames on c as enqueue does, but starts the write loop
// only once all are queued, so that it finds them all waiting.
func pushHeld(t testing.TB, c *client, frames [][]byte) {
	t.Helper()
	start := false
	for i, b := range frames {
		s, err := c.send.push(b)
		if err != nil {
			t.Fatalf("frame %d refused: %v", i, err)
		}
		start = start || s
	}
	if start {
		c.startWriter()
	}
}

// The frames a write loop finds queued leave in one write on the socket,
// and arrive all, in order; a ping due goes with them.
func TestClientWritesQueuedFramesAtOnce(t *testing.T) {
	c, ws := wsPair(t, queueConfig())
	var pings atomic.Int64
	ws.SetPingHandler(func(string) error { pings.Add(1); return nil })
	for round, n := range []int{1, 64, 500} {
		frames := make([][]byte, n)
		for i := range frames {
			frames[i] = fmt.Appendf(nil, `{"round":%d,"n":%d}`, round, i)
		}
		// The write loop of the round before must be gone, or it may take
		// the first of these frames as they are queued.
		testenv.WaitFor(t, 10*time.Second, "the write loop of the round before to return", func() bool {
			c.send.mu.Lock()
			defer c.send.mu.Unlock()
			return !c.send.writing
		})
		before := c.out.Writes()
		if round == 2 {
			c.pingDue.Store(true) // as if the ping timer had fired
		}
		pushHeld(t, c, frames)
		if err := readFrames(ws, n, func(i int) string { return string(frames[i]) }); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got := c.out.Writes() - before; got != 1 {
			t.Fatalf("round %d: %d frames went out in %d writes, want 1", round, n, got)
		}
	}
	if pings.Load() != 1 {
		t.Fatalf("client saw %d pings, want 1", pings.Load())
	}
	// The write loop has nothing left to do: it is gone until the next
	// push.
	testenv.WaitFor(t, 10*time.Second, "the write loop to return", func() bool {
		c.send.mu.Lock()
		defer c.send.mu.Unlock()
		return !c.send.writing
	})
}

// Frames queued from many goroutines while the write loop comes and goes
// all arrive, each goroutine's in the order it queued them.
func TestClientWritesLoseAndReorderNothing(t *testing.T) {
	c, ws := wsPair(t, queueConfig())
	const producers, each = 4, 3000
	read := make(chan error, 1)
	go func() {
		next := make([]int, producers)
		_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
		for range producers * each {
			_, b, err := ws.ReadMessage()
			if err != nil {
				read <- err
				return
			}
			var p, n int
			if _, err := fmt.Sscanf(string(b), `{"p":%d,"n":%d}`, &p, &n); err != nil || p < 0 || p >= producers {
				read <- fmt.Errorf("frame %s: %v", b, err)
				return
			}
			if n != next[p] {
				read <- fmt.Errorf("from producer %d frame %d after %d", p, n, next[p]-1)
				return
			}
			next[p]++
		}
		read <- nil
	}()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for n := range each {
				if !c.enqueue(fmt.Appendf(nil, `{"p":%d,"n":%d}`, p, n)) {
					t.Errorf("producer %d frame %d refused", p, n)
					return
				}
				if n%100 == 0 {
					runtime.Gosched() // let the write loop run dry now and then
				}
			}
		})
	}
	wg.Wait()
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d frames in %d writes", producers*each, c.out.Writes())
}

// A kicked connection gets what was queued before the kick, then the
// close frame, even when no write loop was running.
func TestClientCloseFlushesQueued(t *testing.T) {
	c, ws := wsPair(t, queueConfig())
	if !c.enqueue([]byte(`{"n":0}`)) {
		t.Fatal("frame refused")
	}
	c.kick("logged in elsewhere")
	if err := readFrames(ws, 2, func(i int) string {
		if i == 0 {
			return `{"n":0}`
		}
		return `{"action":"kicked","data":{"reason":"logged in elsewhere"}}`
	}); err != nil {
		t.Fatal(err)
	}
	_, _, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "logged in elsewhere" {
		t.Fatalf("after the kick: %v, want close 1000 logged in elsewhere", err)
	}
}

// BenchmarkClientWriter is a client connection's write path over loopback
// TCP: frames queued (1 or 64 at a time, all waiting when the write loop
// starts), written and flushed by the write loop, read by the other end
// before the next are queued. It reports the frames delivered per second
// and the writes on the socket per frame.
func BenchmarkClientWriter(b *testing.B) {
	for _, k := range []int{1, 64} {
		b.Run(fmt.Sprintf("queued=%d", k), func(b *testing.B) {
			c, ws := wsPair(b, queueConfig())
			frame, _ := protocol.EncodePush(protocol.PushMessage, *roomMessage())
			frames := make([][]byte, k)
			for i := range frames {
				frames[i] = frame
			}
			rounds := (b.N + k - 1) / k
			got := make(chan error, 1)
			go func() {
				for range rounds * k {
					_, r, err := ws.NextReader()
					if err == nil {
						_, err = io.Copy(io.Discard, r)
					}
					if err != nil {
						got <- err
						return
					}
				}
				got <- nil
			}()
			before := c.out.Writes()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range rounds {
				pushHeld(b, c, frames)
				// Wait for the write loop to finish the round (it is done
				// once it has nothing queued), so that each round is one
				// batch of k.
				for {
					c.send.mu.Lock()
					idle := !c.send.writing
					c.send.mu.Unlock()
					if idle {
						break
					}
					runtime.Gosched()
				}
			}
			if err := <-got; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			n := float64(rounds * k)
			b.ReportMetric(n/time.Since(start).Seconds(), "frames/s")
			b.ReportMetric(float64(c.out.Writes()-before)/n, "writes/frame")
		})
	}
}

// readUntilClosed reads ws until it fails, within a bound, and returns the
// close error.
func readUntilClosed(t *testing.T, ws *websocket.Conn) error {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// A client that stops reading is still disconnected: its queue stays over
// the bound while its write loop, blocked on a full socket, does not come
// back for it.
func TestClientThatStopsReadingIsDisconnected(t *testing.T) {
	cfg := queueConfig()
	cfg.SlowClientTimeout = 500 * time.Millisecond
	cfg.WriteTimeout = time.Hour // so the queue, not the write deadline, decides
	c, ws := wsPair(t, cfg)
	frame := []byte(`"` + strings.Repeat("x", 32<<10) + `"`)
	// Push until refused: the socket buffers fill, the write blocks, the
	// queue passes its bound and stays there. Bounded by the byte limit
	// and by a minute.
	deadline := time.Now().Add(time.Minute)
	for c.enqueue(frame) {
		if time.Now().After(deadline) {
			t.Fatal("a client that reads nothing was never disconnected")
		}
		time.Sleep(time.Millisecond) // a sender's pace, not a bet on timing
	}
	if v := testutil.ToFloat64(c.srv.m.SlowDisconnects); v != 1 {
		t.Fatalf("slow disconnects = %v, want 1", v)
	}
	if c.closeCode != websocket.ClosePolicyViolation || c.closeText != "too slow: send queue full" {
		t.Fatalf("closed with %d %q, want 1008 too slow", c.closeCode, c.closeText)
	}
	if c.enqueue([]byte(`{}`)) {
		t.Fatal("a closed client still takes frames")
	}
	// The client, reading again, finds the connection gone.
	if err := readUntilClosed(t, ws); err == nil {
		t.Fatal("connection still open")
	}
}

// A write that the client does not take within the write deadline also
// marks it too slow.
func TestWriteTimeoutDisconnectsAsSlow(t *testing.T) {
	cfg := queueConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.SlowClientTimeout = time.Hour
	c, _ := wsPair(t, cfg)
	frame := []byte(`"` + strings.Repeat("x", 32<<10) + `"`)
	deadline := time.Now().Add(time.Minute)
	for c.enqueue(frame) {
		if time.Now().After(deadline) {
			t.Fatal("a client that reads nothing was never disconnected")
		}
		time.Sleep(time.Millisecond)
	}
	<-c.closing
	if c.closeText != "too slow: not reading" {
		t.Fatalf("closed with %d %q, want too slow: not reading", c.closeCode, c.closeText)
	}
	if v := testutil.ToFloat64(c.srv.m.SlowDisconnects); v != 1 {
		t.Fatalf("slow disconnects = %v, want 1", v)
	}
}

// The byte bound holds even against a burst: memory stays bounded.
func TestQueueByteBound(t *testing.T) {
	q := newFrameQueue(4, 100, time.Hour)
	for i := range 10 {
		if _, err := q.push(make([]byte, 10)); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if _, err := q.push([]byte{1}); err != errQueueBytes {
		t.Fatalf("push over the byte bound: %v, want %v", err, errQueueBytes)
	}
	if got := q.take(nil); len(got) != 10 {
		t.Fatalf("took %d frames, want 10", len(got))
	}
	if _, err := q.push(make([]byte, 100)); err != nil {
		t.Fatalf("push after take: %v", err)
	}
}

// The clock starts when the queue reaches its bound and restarts at every
// take: only a queue left over the bound for behindFor refuses.
func TestQueueBehindClock(t *testing.T) {
	q := newFrameQueue(2, 1<<20, 50*time.Millisecond)
	for range 5 {
		if _, err := q.push([]byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	q.take(nil)
	if !q.behind.IsZero() {
		t.Fatal("take did not stop the clock")
	}
	for range 3 {
		if _, err := q.push([]byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	q.behind = time.Now().Add(-time.Second) // as if left there a second ago
	if _, err := q.push([]byte("a")); err != errQueueBehind {
		t.Fatalf("push to a queue behind for a second: %v, want %v", err, errQueueBehind)
	}
}

// A message handed over again (the cluster resends what a lost link did
// not acknowledge) reaches a connection once: a push at or below the last
// seq pushed of its conversation is not queued.
func TestMessagePushedOnce(t *testing.T) {
	s, _, clients := localRecipients(1)
	c := clients[0]
	for _, tc := range []struct {
		conv string
		seq  int64
		want bool
	}{
		{"dm:a:b", 1, true}, {"dm:a:b", 2, true}, {"dm:a:b", 2, false}, {"dm:a:b", 1, false},
		{"room:x", 1, true}, {"dm:a:b", 3, true}, {"room:x", 1, false},
	} {
		m := &protocol.Message{Conv: tc.conv, Seq: tc.seq}
		if got := c.enqueueMessage(m, encodeMessage(*m)); got != tc.want {
			t.Fatalf("push of %s seq %d: queued %v, want %v", tc.conv, tc.seq, got, tc.want)
		}
	}
	if got := len(c.send.take(nil)); got != 4 {
		t.Fatalf("%d frames queued, want 4", got)
	}
	if v := testutil.ToFloat64(s.m.PushRepeated); v != 3 {
		t.Fatalf("repeated pushes = %v, want 3", v)
	}
}

// A push handed over again after a lost link to the leader may have
// reached its recipient on a connection that is gone since: a connection
// that logged in after the message was written does not get it again (its
// client's sync after login gives it), one that was there before does
// (once: TestMessagePushedOnce), and a first push reaches both.
func TestPushAgainSkipsLaterLogins(t *testing.T) {
	s, users, clients := localRecipients(2)
	m := protocol.Message{ID: "m1", Conv: "dm:a:b", Seq: 7, From: "a", To: "b", Text: "x", TS: 1767225600000}
	clients[0].loggedIn.Store(m.TS - 1) // there when the message was written
	clients[1].loggedIn.Store(m.TS + 1) // logged in after it
	push := encodeMessage(m)
	s.deliverPushed(slices.Values(users), m.Conv, m.Seq, push, true, "")
	if got := len(clients[0].send.take(nil)); got != 1 {
		t.Fatalf("connection from before the message got %d frames, want 1", got)
	}
	if got := len(clients[1].send.take(nil)); got != 0 {
		t.Fatalf("connection logged in after the message got %d frames, want 0", got)
	}
	if v := testutil.ToFloat64(s.m.PushAgainSkipped); v != 1 {
		t.Fatalf("skipped pushes = %v, want 1", v)
	}
	m.Seq = 8
	s.deliverPushed(slices.Values(users), m.Conv, m.Seq, encodeMessage(m), false, "")
	for i, c := range clients {
		if got := len(c.send.take(nil)); got != 1 {
			t.Fatalf("first push: connection %d got %d frames, want 1", i, got)
		}
	}
}

// Route frames a lost link did not acknowledge go out again marked so
// (PeerFrame.Again); frames that never went out are not marked.
func TestResentRouteFramesSaySo(t *testing.T) {
	s, _, _ := localRecipients(0)
	r := &router{s: s}
	enc := func(up uint64) []byte {
		b, err := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerRoute, Up: up, Users: []string{"bob"}, Conv: "dm:a:b", Seq: int64(up), Push: []byte(`{"action":"message","data":{}}`)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r.inflight = []upFrame{{up: 1, b: enc(1)}, {up: 2, b: enc(2)}}
	if !r.requeue(upFrame{up: 3, b: enc(3)}) {
		t.Fatal("nothing requeued")
	}
	for want := uint64(1); want <= 3; want++ {
		u, ok := r.nextResend()
		if !ok || u.up != want {
			t.Fatalf("resend %d: got %d %v", want, u.up, ok)
		}
		f, err := protocol.DecodePeer(u.markAgain().b)
		if err != nil {
			t.Fatal(err)
		}
		if f.Again != (want < 3) || f.Up != want || f.Conv != "dm:a:b" || len(f.Push) == 0 {
			t.Fatalf("frame %d as it goes out again: %+v, want again %v", want, f, want < 3)
		}
	}
}

// A read or typing frame waits in the queue: it goes out in the same write
// as the next frame that does not wait, or, with none, when the lazy
// flush comes.
func TestReceiptFramesWaitForTheNextWrite(t *testing.T) {
	c, ws := wsPair(t, queueConfig())
	read := protocol.EncodeReadPush(protocol.ReadPush{Conv: "dm:amy:bob", User: "bob", Seq: 4})
	typing := protocol.EncodeTypingPush(protocol.TypingPush{Conv: "dm:amy:bob", From: "bob"})
	msg := []byte(`{"action":"message","data":{"seq":5}}`)
	before := c.out.Writes()
	// The lazy flush does not run yet: only the message writes them.
	if !c.enqueue(read) || !c.enqueueLossy(typing) {
		t.Fatal("a receipt frame was refused")
	}
	c.send.mu.Lock()
	writing, lazy := c.send.writing, c.send.lazy
	c.send.mu.Unlock()
	if writing || !lazy {
		t.Fatalf("after two receipt frames: write loop %v, waiting for the lazy flush %v; want false, true", writing, lazy)
	}
	if !c.enqueue(msg) {
		t.Fatal("the message was refused")
	}
	want := []string{string(read), string(typing), string(msg)}
	if err := readFrames(ws, 3, func(i int) string { return want[i] }); err != nil {
		t.Fatal(err)
	}
	if got := c.out.Writes() - before; got != 1 {
		t.Fatalf("the receipt frames and the message went out in %d writes, want 1", got)
	}

	// With nothing else to write, the lazy flush writes it.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.srv.lazy.run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.WaitFor(t, 10*time.Second, "the write loop to return", func() bool {
		c.send.mu.Lock()
		defer c.send.mu.Unlock()
		return !c.send.writing
	})
	if !c.enqueue(read) {
		t.Fatal("a receipt frame was refused")
	}
	if err := readFrames(ws, 1, func(int) string { return string(read) }); err != nil {
		t.Fatal(err)
	}
}

// The lazy flush writes each connection at its own time, lazyFlush after
// it was handed over, not every connection of a window at once: a take
// holds those added up to the time given and leaves the later ones
// waiting, in the order they came.
func TestLazyFlushTakesOnlyThoseDue(t *testing.T) {
	f := newLazyFlusher()
	cs := []*client{{}, {}, {}, {}}
	t0 := time.Now()
	for i, after := range []time.Duration{0, lazyStep / 2, lazyStep * 3, lazyStep * 10} {
		f.add(cs[i])
		f.due[len(f.due)-1].at = t0.Add(after)
	}
	got := f.take(nil, t0.Add(lazyStep*3))
	if len(got) != 3 || got[0] != cs[0] || got[1] != cs[1] || got[2] != cs[2] {
		t.Fatalf("take up to t0+%v: %d connections, want the first 3", lazyStep*3, len(got))
	}
	if len(f.due) != 1 || f.due[0].c != cs[3] {
		t.Fatalf("%d connections left waiting, want the last one", len(f.due))
	}
	if got := f.take(nil, t0.Add(lazyStep*10)); len(got) != 1 || got[0] != cs[3] || f.due != nil {
		t.Fatalf("second take: %d connections, %d left; want the last one, none left", len(got), len(f.due))
	}
}
