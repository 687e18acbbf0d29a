package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/internal/redisconn"
	"chatcluster/internal/testenv"
)

// The memory an idle connection costs a node. A helper process (this test
// binary again, see TestIdleHelperProcess) opens N WebSockets to the node
// and holds them without a word, and the benchmark reports what the
// node's process grew by per connection:
//
//	go test -run '^$' -bench 'IdleConn$' -benchtime 1x ./node/
//
// B/conn is the growth of resident memory (as chatbench's connect
// scenario measures a node, without forcing a collection), live-B/conn
// the growth of live heap and goroutine stacks after a collection. The
// resident figure moves with when the collector ran during the connects;
// at 10,000 connections it is the steadier. With CHAT_IDLE_PROFILE=file
// set, each writes a heap profile there.
//
// BenchmarkIdleConn serves the connections with a node's client listener
// alone (the real upgrader, client and loops), not logged in.
func BenchmarkIdleConn(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			benchIdle(b, func(b *testing.B) idleRun {
				s := idleServer(b)
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				mux := http.NewServeMux()
				mux.HandleFunc("/ws", s.serveWS)
				hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
				var serving sync.WaitGroup
				serving.Go(func() { _ = hs.Serve(ln) })
				return idleRun{
					addr: ln.Addr().String(), n: n,
					held: func() int { return s.connCount() },
					stop: func() {
						_ = hs.Close()
						serving.Wait()
						s.connsMu.Lock()
						for c := range s.conns {
							c.close(websocket.CloseGoingAway, "")
						}
						s.connsMu.Unlock()
						s.cancel()
						s.wg.Wait()
					},
				}
			})
		})
	}
}

// BenchmarkIdleConnLoggedIn is BenchmarkIdleConn with a whole node (the
// only one of its cluster, so also its leader), and every connection
// logged in with a session token, as chatbench's connect scenario does.
// It needs the real dependencies:
//
//	deploy/with-deps.sh go test -run '^$' -bench IdleConnLoggedIn -benchtime 1x ./node/
func BenchmarkIdleConnLoggedIn(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			benchIdle(b, func(b *testing.B) idleRun {
				s := startedNode(b)
				tokens := make([]string, n)
				for i := range tokens {
					tok, err := s.accounts.IssueToken(context.Background(), fmt.Sprintf("idle%05d", i))
					if err != nil {
						b.Fatal(err)
					}
					tokens[i] = tok
				}
				file := b.TempDir() + "/tokens"
				if err := os.WriteFile(file, []byte(strings.Join(tokens, "\n")), 0o600); err != nil {
					b.Fatal(err)
				}
				return idleRun{
					addr: s.clientLn.Addr().String(), n: n, tokens: file,
					held: s.local.Len,
					stop: func() {
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						defer cancel()
						_ = s.Close(ctx)
					},
				}
			})
		})
	}
}

// idleRun is a node serving WebSockets at addr for the helper to hold n
// of; held counts those it holds, stop stops it.
type idleRun struct {
	addr   string
	n      int
	tokens string // a file of n session tokens, one a line, to log in with; "" not to
	held   func() int
	stop   func()
}

func benchIdle(b *testing.B, start func(*testing.B) idleRun) {
	b.ReportAllocs()
	var rss, live, gor float64
	for range b.N {
		b.StopTimer()
		run := start(b)
		r, l, g := measureIdle(b, run)
		run.stop()
		rss, live, gor = rss+r, live+l, gor+g
	}
	b.ReportMetric(rss/float64(b.N), "B/conn")
	b.ReportMetric(live/float64(b.N), "live-B/conn")
	b.ReportMetric(gor/float64(b.N), "goroutines/conn")
}

func (s *Server) connCount() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.conns)
}

// idleHelperEnv names the environment variable that makes the test binary
// an idle-connection holder (see TestIdleHelperProcess).
const idleHelperEnv = "CHAT_NODE_IDLE_HELPER"

// measureIdle has the helper open run.n connections and returns the growth
// per connection of resident memory, of live heap and stacks, and of
// goroutines.
func measureIdle(b *testing.B, run idleRun) (rss, live, goroutines float64) {
	b.Helper()
	// Memory an earlier run left free goes back to the system, so that
	// this one grows the process as a fresh one would.
	debug.FreeOSMemory()
	rss0, live0, g0 := memNow()
	b.StartTimer()

	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleHelperProcess$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%s", idleHelperEnv, run.addr, run.n, run.tokens))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close() // the helper exits when its stdin closes
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ok" {
		b.Fatalf("idle helper: %q %v", line, err)
	}
	// Every connection is the node's, and the goroutines that served the
	// handshakes and the logins have gone.
	testenv.WaitFor(b, time.Minute, "the node holds every connection", func() bool { return run.held() == run.n })
	last := -1
	testenv.WaitFor(b, time.Minute, "goroutines to settle", func() bool {
		_, _, g := memNow()
		settled := g == last
		last = g
		return settled
	})
	b.StopTimer()
	rss1, _, g1 := memNow()
	runtime.GC()
	_, live1, _ := memNow()
	if file := os.Getenv("CHAT_IDLE_PROFILE"); file != "" {
		writeHeapProfile(b, file)
	}
	f := float64(run.n)
	return float64(int64(rss1)-int64(rss0)) / f, float64(int64(live1)-int64(live0)) / f, float64(g1-g0) / f
}

// writeHeapProfile writes the heap profile to file, and the heap and
// stack in use to the log: CHAT_IDLE_PROFILE=file has the idle benchmarks
// do so once their connections are held.
func writeHeapProfile(b *testing.B, file string) {
	out, err := os.Create(file)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	if err := pprof.Lookup("heap").WriteTo(out, 0); err != nil {
		b.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.Logf("heap in use %d, stacks %d bytes", ms.HeapAlloc, ms.StackInuse)
}

// idleServer is a node wired by New but not started: enough to serve its
// client listener.
func idleServer(tb testing.TB) *Server {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.Listen, cfg.PeerListen = "n1", "127.0.0.1:0", "127.0.0.1:1"
	cfg.ZK, cfg.Redis, cfg.Mongo = []string{"127.0.0.1:1"}, redisconn.Config{Addr: "127.0.0.1:1"}, "mongodb://127.0.0.1:1"
	cfg.Secret = []byte("0123456789abcdef")
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// startedNode is a whole node, started against the real dependencies in a
// namespace of its own.
func startedNode(tb testing.TB) *Server {
	tb.Helper()
	ns := testenv.Namespace(tb)
	cfg := DefaultConfig()
	base := testenv.PortBlock(tb, 2)
	cfg.ID, cfg.Listen, cfg.PeerListen = "n1", fmt.Sprintf("127.0.0.1:%d", base), fmt.Sprintf("127.0.0.1:%d", base+1)
	cfg.ZK, cfg.ZKRoot = testenv.ZK(tb), "/"+ns
	cfg.Redis, cfg.RedisPrefix = redisconn.Config{Addr: testenv.Redis(tb)}, ns+":"
	cfg.Mongo, cfg.MongoDB = testenv.Mongo(tb), ns
	cfg.Secret = []byte("0123456789abcdef")
	cfg.DrainTimeout = time.Second
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	// Leading: the node is the only one.
	testenv.WaitFor(tb, 30*time.Second, "the node to lead", func() bool { return s.routes.leading() != nil })
	return s
}

// memNow returns the process's resident bytes, its live heap and stack
// bytes, and its goroutines.
func memNow() (rss, live uint64, goroutines int) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseUint(f[1], 10, 64)
			rss = pages * uint64(os.Getpagesize())
		}
	}
	return rss, ms.HeapAlloc + ms.StackInuse, runtime.NumGoroutine()
}

// TestIdleHelperProcess is not a test: run by the idle benchmarks with
// idleHelperEnv set to "addr,n,tokens", it opens n WebSockets to addr (and
// logs each in with a token of the file tokens, if given), prints "ok",
// and holds them, reading nothing, until its stdin closes.
func TestIdleHelperProcess(t *testing.T) {
	spec := os.Getenv(idleHelperEnv)
	if spec == "" {
		t.Skip("helper process for the idle benchmarks")
	}
	parts := strings.SplitN(spec, ",", 3)
	addr, tokensFile := parts[0], parts[2]
	n, _ := strconv.Atoi(parts[1])
	var tokens []string
	if tokensFile != "" {
		b, err := os.ReadFile(tokensFile)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		tokens = strings.Split(string(b), "\n")
	}
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				c, err := rawHandshake(addr)
				if err == nil && tokens != nil {
					err = rawLogin(c, tokens[i])
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				conns[i] = c
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		fmt.Println("error:", err)
		os.Exit(1)
	default:
	}
	fmt.Println("ok")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		_ = c.Close()
	}
	os.Exit(0)
}

// rawHandshake opens a WebSocket to addr and returns the bare connection:
// the holder keeps no buffer per connection.
func rawHandshake(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	var got []byte
	buf := make([]byte, 256)
	for !bytes.HasSuffix(got, []byte("\r\n\r\n")) {
		k, err := c.Read(buf)
		if err != nil {
			c.Close()
			return nil, err
		}
		got = append(got, buf[:k]...)
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 101")) {
		c.Close()
		return nil, fmt.Errorf("handshake answered %q", got)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// rawLogin sends a login with token on c, a client's WebSocket, and reads
// frames until the reply, which must say the login succeeded.
func rawLogin(c net.Conn, token string) error {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	defer c.SetDeadline(time.Time{})
	payload := []byte(`{"action":"login","id":"1","data":{"token":"` + token + `"}}`)
	if len(payload) >= 126 {
		return fmt.Errorf("login frame of %d bytes", len(payload))
	}
	key := [4]byte{1, 2, 3, 4}
	f := append([]byte{0x81, 0x80 | byte(len(payload))}, key[:]...)
	for i, ch := range payload {
		f = append(f, ch^key[i%4])
	}
	if _, err := c.Write(f); err != nil {
		return err
	}
	r := bufio.NewReaderSize(c, 512)
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		size := uint64(h[1] & 0x7f)
		switch size {
		case 126:
			var x [2]byte
			if _, err := io.ReadFull(r, x[:]); err != nil {
				return err
			}
			size = uint64(binary.BigEndian.Uint16(x[:]))
		case 127:
			var x [8]byte
			if _, err := io.ReadFull(r, x[:]); err != nil {
				return err
			}
			size = binary.BigEndian.Uint64(x[:])
		}
		body := make([]byte, size)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		if h[0]&0x0f != websocket.TextMessage || !bytes.Contains(body, []byte(`"action":"login"`)) {
			continue
		}
		if !bytes.Contains(body, []byte(`"code":0`)) {
			return fmt.Errorf("login answered %s", body)
		}
		if r.Buffered() > 0 {
			return fmt.Errorf("%d bytes after the login reply", r.Buffered())
		}
		return nil
	}
}
