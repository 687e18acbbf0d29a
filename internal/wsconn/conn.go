package wsconn

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// OwnBufferSize is the size of the buffer a Conn without a pool keeps.
const OwnBufferSize = 64 << 10

// Buffers is a pool of batch buffers of one size, shared by the Conns given
// it: a Conn holds one only from the first write of a batch to its flush.
// Safe for concurrent use.
type Buffers struct {
	size int
	pool sync.Pool // of *[]byte, each of capacity size and length 0
}

// NewBuffers returns a pool of buffers of size bytes. A batch that
// outgrows its buffer is written out in as many writes as it fills.
func NewBuffers(size int) *Buffers {
	return &Buffers{size: max(size, 512)}
}

func (b *Buffers) get() *[]byte {
	if p, ok := b.pool.Get().(*[]byte); ok {
		return p
	}
	buf := make([]byte, 0, b.size)
	return &buf
}

func (b *Buffers) put(p *[]byte) {
	*p = (*p)[:0]
	b.pool.Put(p)
}

// Conn is a net.Conn whose writes between Cork and Flush are gathered into
// as few writes on the connection under it as the buffer allows. Its
// methods are safe for concurrent use.
//
// Write deadlines: SetWriteDeadline sets the deadline of the writes the
// next Write call makes (it does not cut short a write under way), and
// Flush takes its own. A WebSocket library sets the deadline and writes a
// frame under its own lock, so a frame it writes, in a batch or not, has
// its deadline, whichever goroutine writes it.
type Conn struct {
	net.Conn
	bufs *Buffers // nil: the Conn keeps a buffer of its own, own

	writes atomic.Uint64 // writes made on the connection under it

	mu       sync.Mutex // held across every write on the connection under it
	deadline int64      // for the next Write, in unix ns; 0 for none; guarded by mu
	corked   bool       // a batch is open; guarded by mu
	buf      *[]byte    // the batch written so far; nil until the batch's first write; guarded by mu
	own      *[]byte    // the buffer of a Conn without a pool, from its first batch on; guarded by mu
	err      error      // the first write that failed; every later one fails with it; guarded by mu
}

// New wraps c. With bufs nil the Conn keeps a buffer of OwnBufferSize
// bytes from its first batch on, as suits a connection that is rarely
// idle; otherwise it borrows one from bufs for each batch.
func New(c net.Conn, bufs *Buffers) *Conn {
	return &Conn{Conn: c, bufs: bufs}
}

// Of returns the Conn c is, or the Conn under c when c is a TLS
// connection over one, or nil. The methods of a nil *Conn that batch do
// nothing, so a write loop over a connection that was not wrapped writes
// every frame at once.
//
// Under TLS the Conn sits below the encryption (tls.NewListener over
// Listen, or tls.Client over New): each frame is sealed as it is written
// and the sealed records of a batch leave together, and the HTTP server
// still sees the *tls.Conn it needs to complete the handshake.
func Of(c net.Conn) *Conn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	w, _ := c.(*Conn)
	return w
}

// Cork opens a batch: what is written from now until Flush, by any
// goroutine, is held back (up to the buffer's size) and leaves with the
// flush.
func (c *Conn) Cork() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Flush writes what the batch holds with the given deadline and closes the
// batch. It returns the error of any write on the connection so far, once
// one failed. A nil Conn has nothing to flush.
func (c *Conn) Flush(deadline time.Time) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.buf == nil {
		return c.err
	}
	if b := *c.buf; len(b) > 0 && c.err == nil {
		_, _ = c.writeLocked(deadline, b)
	}
	c.release()
	return c.err
}

// release gives the batch's buffer back, to the pool or to own. c.mu held.
func (c *Conn) release() {
	if c.bufs != nil {
		c.bufs.put(c.buf)
	} else {
		*c.own = (*c.own)[:0]
	}
	c.buf = nil
}

// Write writes p at once outside a batch; in a batch it adds p to the
// buffer, first writing out what the buffer holds when p does not fit, and
// p along with it when p alone would fill the buffer.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.writeLocked(c.nextDeadline(), p)
	}
	if c.buf == nil {
		if c.bufs != nil {
			c.buf = c.bufs.get()
		} else {
			if c.own == nil {
				b := make([]byte, 0, OwnBufferSize)
				c.own = &b
			}
			c.buf = c.own
		}
	}
	b := *c.buf
	if len(b)+len(p) <= cap(b) {
		*c.buf = append(b, p...)
		return len(p), nil
	}
	if len(p) >= cap(b) {
		// Too large to hold: out with what is held, in one write.
		if err := c.writevLocked(c.nextDeadline(), b, p); err != nil {
			return 0, err
		}
		*c.buf = b[:0]
		return len(p), nil
	}
	if _, err := c.writeLocked(c.nextDeadline(), b); err != nil {
		return 0, err
	}
	*c.buf = append(b[:0], p...)
	return len(p), nil
}

// writeLocked writes p to the connection under c with deadline. c.mu
// held.
func (c *Conn) writeLocked(deadline time.Time, p []byte) (int, error) {
	c.writes.Add(1)
	if c.err = c.Conn.SetWriteDeadline(deadline); c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Write(p)
	c.err = err
	return n, err
}

// writevLocked writes a and then b to the connection under c in one call
// with deadline. c.mu held.
func (c *Conn) writevLocked(deadline time.Time, a, b []byte) error {
	c.writes.Add(1)
	if c.err = c.Conn.SetWriteDeadline(deadline); c.err != nil {
		return c.err
	}
	v := net.Buffers{a, b}
	_, c.err = v.WriteTo(c.Conn)
	return c.err
}

// nextDeadline is the deadline SetWriteDeadline set. c.mu held.
func (c *Conn) nextDeadline() time.Time {
	if c.deadline == 0 {
		return time.Time{}
	}
	return time.Unix(0, c.deadline)
}

// SetWriteDeadline sets the deadline of the writes the next Write makes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	c.mu.Lock()
	c.deadline = d
	c.mu.Unlock()
	return nil
}

// SetDeadline sets the read deadline, and the write deadline as
// SetWriteDeadline does.
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// Writes reports how many writes were made on the connection under c.
func (c *Conn) Writes() uint64 {
	if c == nil {
		return 0
	}
	return c.writes.Load()
}

// Listen wraps every connection ln accepts in a Conn with bufs.
func Listen(ln net.Listener, bufs *Buffers) net.Listener {
	return listener{Listener: ln, bufs: bufs}
}

type listener struct {
	net.Listener
	bufs *Buffers
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return New(c, l.bufs), nil
}
