package testenv

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy to a real server that a test can cut (connections
// closed, new ones refused: a crashed or killed peer) or blackhole
// (connections held open but nothing forwarded: a network partition).
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  int // proxyUp, proxyCut, proxyBlackhole
	held  int // connections accepted in blackhole mode
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

const (
	proxyUp = iota
	proxyCut
	proxyBlackhole
)

// NewProxy starts a proxy to target on loopback, closed when the test
// ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return NewProxyOn(t, "127.0.0.1", target)
}

// NewProxyOn starts a proxy to target listening on a free port of host,
// an address of this machine (for example a bridge that network
// namespaces reach it by), closed when the test ends.
func NewProxyOn(t testing.TB, host, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.closeConns()
		p.wg.Wait()
	})
	return p
}

// Addr is where clients connect instead of the server.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		if mode == proxyCut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in] = struct{}{}
		if mode == proxyBlackhole {
			p.held++
		}
		p.mu.Unlock()
		if mode == proxyBlackhole {
			p.wg.Add(1)
			go func() { defer p.wg.Done(); _, _ = io.Copy(io.Discard, in) }()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[out] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// pipe copies src to dst while the proxy is up; in blackhole mode it reads
// and drops.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			up := p.mode == proxyUp
			p.mu.Unlock()
			if up {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Cut closes every connection and refuses new ones, like a killed process.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.mode = proxyCut
	p.mu.Unlock()
	p.closeConns()
}

// Blackhole keeps connections open but stops forwarding, like a partition.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.mode = proxyBlackhole
	p.mu.Unlock()
}

// Restore heals the proxy; held connections are closed so that the client
// reconnects through a working one.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.mode = proxyUp
	p.mu.Unlock()
	p.closeConns()
}

// Held returns how many connections were accepted in blackhole mode.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}
