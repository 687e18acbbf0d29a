package wsconn

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// counted counts the writes made on a connection, under the Conn that
// wraps it.
type counted struct {
	net.Conn
	writes atomic.Int64
}

func (c *counted) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// pair is a WebSocket over loopback TCP: srv, the server's end, writes
// through w (which wraps raw, which counts); cli is the client's end.
type pair struct {
	srv *websocket.Conn
	w   *Conn
	raw *counted
	cli *websocket.Conn
}

// newPair serves one WebSocket on a listener whose connections are wrapped
// in a Conn with bufs, and dials it.
func newPair(t testing.TB, bufs *Buffers) *pair {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pair{}
	got := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{WriteBufferPool: &sync.Pool{}}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		got <- ws
	})}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(countingListener{Listener: ln, bufs: bufs, made: func(c *counted) { p.raw = c }})
	}()
	p.cli, _, err = websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	p.srv = <-got
	p.w = Of(p.srv.NetConn())
	if p.w == nil {
		t.Fatal("the server's connection is not a Conn")
	}
	t.Cleanup(func() {
		p.cli.Close()
		p.srv.Close()
		_ = hs.Close()
		<-served
	})
	return p
}

// countingListener wraps each connection in a counted, then a Conn.
type countingListener struct {
	net.Listener
	bufs *Buffers
	made func(*counted)
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &counted{Conn: c}
	l.made(cc)
	return New(cc, l.bufs), nil
}

func frame(i, size int) []byte {
	b := fmt.Appendf(nil, `{"n":%d,"pad":"`, i)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// readFrames reads n frames from ws and checks each is want(i).
func readFrames(ws *websocket.Conn, n int, want func(i int) []byte) error {
	_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
	for i := range n {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("frame %d: %w", i, err)
		}
		if w := want(i); string(b) != string(w) {
			return fmt.Errorf("frame %d is %.40q (%d bytes), want %.40q (%d bytes)", i, b, len(b), w, len(w))
		}
	}
	return nil
}

// A batch of frames leaves in one write, and every frame arrives, in order.
func TestBatchLeavesInOneWrite(t *testing.T) {
	p := newPair(t, NewBuffers(16<<10))
	const n = 64
	before := p.raw.writes.Load()
	p.w.Cork()
	for i := range n {
		if err := p.srv.WriteMessage(websocket.TextMessage, frame(i, 200)); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.raw.writes.Load() - before; got != 0 {
		t.Fatalf("%d writes before the flush, want 0", got)
	}
	if err := p.w.Flush(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := p.raw.writes.Load() - before; got != 1 {
		t.Fatalf("%d writes for a batch of %d frames, want 1", got, n)
	}
	if got := p.w.Writes(); got != uint64(p.raw.writes.Load()) {
		t.Fatalf("Writes() = %d, the connection under it saw %d", got, p.raw.writes.Load())
	}
	if err := readFrames(p.cli, n, func(i int) []byte { return frame(i, 200) }); err != nil {
		t.Fatal(err)
	}
}

// A batch larger than the buffer leaves in about as many writes as it
// fills buffers, frames larger than the buffer among them, and arrives
// whole and in order.
func TestBatchOverTheBuffer(t *testing.T) {
	const size = 4 << 10
	p := newPair(t, NewBuffers(size))
	sizes := []int{100, 3000, 5000, 100, 20000, 300, 300, 70000, 10, 4000, 4096, 100}
	total := 0
	for _, s := range sizes {
		total += s
	}
	for round := range 3 {
		before := p.raw.writes.Load()
		p.w.Cork()
		for i, s := range sizes {
			if err := p.srv.WriteMessage(websocket.TextMessage, frame(i, s)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.w.Flush(time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		// Each write but the last fills at least half a buffer, or carries
		// a frame over the buffer's size along with what was held.
		writes := p.raw.writes.Load() - before
		if limit := int64(2*total/size) + 1; writes > limit {
			t.Fatalf("round %d: %d writes for %d bytes with a %d-byte buffer, want at most %d", round, writes, total, size, limit)
		}
		if err := readFrames(p.cli, len(sizes), func(i int) []byte { return frame(i, sizes[i]) }); err != nil {
			t.Fatal(err)
		}
	}
}

// Outside a batch a write goes out at once: the handshake did, and so does
// a frame written without Cork.
func TestWriteOutsideBatchGoesOut(t *testing.T) {
	p := newPair(t, NewBuffers(16<<10))
	if err := p.srv.WriteMessage(websocket.TextMessage, []byte(`{"n":0}`)); err != nil {
		t.Fatal(err)
	}
	if err := readFrames(p.cli, 1, func(int) []byte { return []byte(`{"n":0}`) }); err != nil {
		t.Fatal(err)
	}
}

// Control frames written by other goroutines while the owner writes
// batches go out (in a batch, with its flush) without corrupting the
// stream: every data frame arrives in order, and every ping is answered.
func TestControlFramesFromOtherGoroutines(t *testing.T) {
	p := newPair(t, NewBuffers(8<<10))
	const frames, pings = 5000, 200
	var pongs atomic.Int64
	p.cli.SetPingHandler(func(string) error {
		pongs.Add(1)
		return nil
	})
	read := make(chan struct{})
	go func() {
		defer close(read)
		err := readFrames(p.cli, frames, func(i int) []byte { return frame(i, 150+i%700) })
		if err == nil {
			// Then the last frame, written once every ping was.
			err = readFrames(p.cli, 1, func(int) []byte { return []byte("end") })
		}
		if err != nil {
			t.Error(err)
		}
	}()
	var pinger sync.WaitGroup
	pinger.Go(func() {
		for range pings {
			if err := p.srv.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Minute)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for i := 0; i < frames; {
		p.w.Cork()
		for end := min(i+1+i%37, frames); i < end; i++ {
			if err := p.srv.WriteMessage(websocket.TextMessage, frame(i, 150+i%700)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.w.Flush(time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	pinger.Wait()
	if err := p.srv.WriteMessage(websocket.TextMessage, []byte("end")); err != nil {
		t.Fatal(err)
	}
	<-read
	if got := pongs.Load(); got != pings {
		t.Fatalf("client saw %d pings, want %d", got, pings)
	}
}

// A flush the other end does not take within its deadline fails with a
// timeout, and every write after it fails too (the stream is cut).
func TestFlushDeadline(t *testing.T) {
	p := newPair(t, NewBuffers(64<<10))
	big := []byte(strings.Repeat("x", 60<<10))
	deadline := time.Now().Add(time.Minute)
	var err error
	for time.Now().Before(deadline) {
		p.w.Cork()
		if err = p.srv.WriteMessage(websocket.TextMessage, big); err == nil {
			err = p.w.Flush(time.Now().Add(100 * time.Millisecond))
		} else {
			_ = p.w.Flush(time.Now())
		}
		if err != nil {
			break
		}
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("flush to a reader that reads nothing: %v, want a timeout", err)
	}
	if _, err := p.w.Write([]byte("x")); err == nil {
		t.Fatal("a write after a failed one succeeded")
	}
}

// Without a Conn under it, a write loop's Cork and Flush do nothing.
func TestNilConn(t *testing.T) {
	var c *Conn
	c.Cork()
	if err := c.Flush(time.Now()); err != nil {
		t.Fatal(err)
	}
	if c.Writes() != 0 {
		t.Fatal("a nil Conn counted writes")
	}
	if Of(&net.TCPConn{}) != nil {
		t.Fatal("Of a connection that is not a Conn")
	}
}

// A Conn without a pool keeps its own buffer, batch after batch.
func TestOwnBuffer(t *testing.T) {
	p := newPair(t, nil)
	for round := range 3 {
		before := p.raw.writes.Load()
		p.w.Cork()
		for i := range 100 {
			if err := p.srv.WriteMessage(websocket.TextMessage, frame(i, 300)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.w.Flush(time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got := p.raw.writes.Load() - before; got != 1 {
			t.Fatalf("round %d: %d writes, want 1", round, got)
		}
		if err := readFrames(p.cli, 100, func(i int) []byte { return frame(i, 300) }); err != nil {
			t.Fatal(err)
		}
	}
}
