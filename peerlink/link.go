package peerlink

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"chatcluster/internal/wsconn"
	"chatcluster/protocol"
)

// Link is one authenticated peer connection. Like a client it has one
// read loop and one write loop; the write loop alone writes data frames to
// ws, in batches (see WriteLoop). Dial opens one from the leader's end,
// Acceptor.Accept from a node's.
//
// The owner runs WriteLoop and ReadLoop, each on a goroutine of its own,
// or calls Drop when the write loop is not to run. Every other method is
// safe from any goroutine.
type Link struct {
	ws     *websocket.Conn
	out    *wsconn.Conn // the connection under ws, which batches what the write loop writes; nil when not wrapped
	remote string       // the other node's id
	epoch  int64        // the leader's epoch this link was opened under
	log    zerolog.Logger

	send    chan []byte
	closing chan struct{}
	once    sync.Once
	done    chan struct{} // closed when the write loop has returned

	// Acknowledgements of numbered frames (PeerFrame.Up). On the node's
	// link to the leader, acks says the leader sends them; set before the
	// link is used. On the leader's link to a node, ackFrom is the
	// leader's id (set before the write loop starts) and handled the
	// highest number handled, which the write loop acknowledges every
	// ackEvery.
	acks    bool
	ackFrom string
	// busy, on the leader's link to a node, says whether the leader is
	// overloaded; acknowledgements carry it (set before the write loop
	// starts).
	busy    func() bool
	handled atomic.Uint64

	// The lazy lane (EnqueueLazy): frames that wait for the next write.
	lazyMu   sync.Mutex
	lazy     [][]byte      // guarded by lazyMu
	lazyDue  bool          // the write loop was told of lazy and has not flushed it since; guarded by lazyMu
	lazyWake chan struct{} // has a value when lazy went from not due to due
}

// Options are what the owner of a new link chooses.
type Options struct {
	// Queue is how many frames may wait for the write loop.
	Queue int
	// Log is the logger the link adds its peer and epoch to.
	Log zerolog.Logger
	// Busy, on the leader's link to a node (Dial), says whether the
	// leader is overloaded; acknowledgements carry it. nil: never.
	Busy func() bool
	// TLS, for Dial, is this node's peer certificate and the cluster's
	// CA: the link is then mutual TLS. nil: plain TCP. The accepting end
	// has it on its listener (Listen).
	TLS *TLS
}

// ackEvery is how often a leader acknowledges what a node sent it.
const ackEvery = 50 * time.Millisecond

func newLink(ws *websocket.Conn, remote string, epoch int64, queue int, log zerolog.Logger) *Link {
	ws.SetReadLimit(protocol.MaxPeerFrame)
	return &Link{
		ws: ws, out: wsconn.Of(ws.NetConn()), remote: remote, epoch: epoch, log: log.With().Str("peer", remote).Int64("epoch", epoch).Logger(),
		send: make(chan []byte, queue), closing: make(chan struct{}), done: make(chan struct{}),
		lazyWake: make(chan struct{}, 1),
	}
}

// Remote is the id of the node at the other end.
func (l *Link) Remote() string { return l.remote }

// Epoch is the leader's epoch the link was opened under.
func (l *Link) Epoch() int64 { return l.epoch }

// Acks reports, on a node's link to its leader, whether the leader
// acknowledges numbered frames (PeerFrame.Up); a node keeps its frames for
// resending only then.
func (l *Link) Acks() bool { return l.acks }

// Log is the link's logger: its owner's, with the peer and the epoch.
func (l *Link) Log() *zerolog.Logger { return &l.log }

// SetHandled records up as the highest numbered frame the leader handled
// from the node at the other end; the write loop acknowledges it. The
// leader's links only (Dial).
func (l *Link) SetHandled(up uint64) { l.handled.Store(up) }

// Enqueue queues a frame without blocking; false when the link is closed
// or its queue is full (the frame's recipients then catch up by sync).
func (l *Link) Enqueue(b []byte) bool {
	select {
	case <-l.closing:
		return false
	default:
	}
	select {
	case l.send <- b:
		return true
	default:
		return false
	}
}

// EnqueueLazy queues a frame no one waits for (a typing signal), without
// blocking, to go out in the same write as the next frame Enqueue queues,
// or lazyFlush later when none comes first: such frames come about as
// often as messages, and each would otherwise cost a write on this end
// and a read on the other (system calls, the costliest part of a small
// frame) and wake both loops. Lazy frames keep their order among
// themselves, not with the others. False when the link is closed or
// lazyCap lazy frames wait already.
func (l *Link) EnqueueLazy(b []byte) bool {
	if l.Closed() {
		return false
	}
	l.lazyMu.Lock()
	if len(l.lazy) >= lazyCap {
		l.lazyMu.Unlock()
		return false
	}
	l.lazy = append(l.lazy, b)
	wake := !l.lazyDue
	l.lazyDue = true
	l.lazyMu.Unlock()
	if wake {
		select {
		case l.lazyWake <- struct{}{}:
		default:
		}
	}
	return true
}

// takeLazy returns the lazy frames waiting; due, the lazy flush's call,
// also says that the write loop has flushed what was due.
func (l *Link) takeLazy(due bool) [][]byte {
	l.lazyMu.Lock()
	out := l.lazy
	l.lazy = nil
	if due {
		l.lazyDue = false
	}
	l.lazyMu.Unlock()
	return out
}

// lazyFlush is the longest a lazy frame waits for a write; lazyCap is how
// many may wait.
const (
	lazyFlush = 20 * time.Millisecond
	lazyCap   = 1024
)

// Queue is the link's queue, for a sender that waits for room: it selects
// on it together with Closing. Enqueue is the sender that does not wait.
func (l *Link) Queue() chan<- []byte { return l.send }

// Queued is how many frames wait for the write loop.
func (l *Link) Queued() int { return len(l.send) }

// Cap is how many frames may wait for the write loop (Options.Queue).
func (l *Link) Cap() int { return cap(l.send) }

// Close asks the write loop to write what is queued, for a bounded time,
// and close the connection. Idempotent.
func (l *Link) Close() { l.once.Do(func() { close(l.closing) }) }

// Closed reports whether Close was called.
func (l *Link) Closed() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// Closing is closed by Close.
func (l *Link) Closing() <-chan struct{} { return l.closing }

// Done is closed when the write loop has returned.
func (l *Link) Done() <-chan struct{} { return l.done }

// Drop closes the connection at once, for a link whose write loop is not
// to run: nothing queued goes out, and Done is never closed.
func (l *Link) Drop() { l.ws.Close() }

// WriteLoop drains the queue and pings, so a dead peer is noticed. What
// is queued goes out in batches: the frames waiting when the loop comes
// for them (up to maxLinkBatch) are written together and flushed once,
// in one write on the socket when they fit the link's buffer (see
// wsconn); those queued meanwhile make the next batch. It returns once
// the link is closed or a write failed, having closed the connection.
func (l *Link) WriteLoop(writeTimeout time.Duration) {
	defer close(l.done)
	defer l.ws.Close()
	ping := time.NewTicker(time.Second)
	defer ping.Stop()
	var ackC <-chan time.Time
	var acked uint64
	if l.ackFrom != "" {
		t := time.NewTicker(ackEvery)
		defer t.Stop()
		ackC = t.C
	}
	write := func(b []byte) error {
		_ = l.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		return l.ws.WriteMessage(websocket.TextMessage, b)
	}
	// batch writes the lazy frames waiting, b (unless nil), then what
	// else is queued, and flushes.
	batch := func(b []byte, due bool) error {
		l.out.Cork()
		var err error
		for _, lb := range l.takeLazy(due) {
			if err = write(lb); err != nil {
				break
			}
		}
		if b != nil && err == nil {
			err = write(b)
		}
		for n := 1; b != nil && err == nil && n < maxLinkBatch; n++ {
			select {
			case b = <-l.send:
			default:
				b = nil
			}
			if b == nil {
				break
			}
			err = write(b)
		}
		if ferr := l.out.Flush(time.Now().Add(writeTimeout)); err == nil {
			err = ferr
		}
		return err
	}
	lazyT := time.NewTimer(lazyFlush)
	lazyT.Stop()
	defer lazyT.Stop()
	for {
		select {
		case <-l.lazyWake:
			lazyT.Reset(lazyFlush)
		case <-lazyT.C:
			if err := batch(nil, true); err != nil {
				l.log.Warn().Err(err).Msg("peer write failed, closing link")
				l.Close()
				return
			}
		case <-ackC:
			n := l.handled.Load()
			busy := l.busy != nil && l.busy()
			if n == acked && !busy {
				continue
			}
			b, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerAck, Epoch: l.epoch, From: l.ackFrom, Up: n, Busy: busy})
			if err := batch(b, false); err != nil {
				l.log.Warn().Err(err).Msg("peer write failed, closing link")
				l.Close()
				return
			}
			acked = n
		case b := <-l.send:
			if err := batch(b, false); err != nil {
				l.log.Warn().Err(err).Msg("peer write failed, closing link")
				l.Close()
				return
			}
		case <-ping.C:
			if err := l.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				l.Close()
				return
			}
		case <-l.closing:
			// Frames queued before the close still go out, for a bounded
			// time: a term that pauses (ZooKeeper lost for a moment) or a
			// node that stops does not drop what it already accepted.
			// Frames of an old term are refused by epoch at the other end.
			flushBy := time.Now().Add(linkFlush)
			l.out.Cork()
		flush:
			for time.Now().Before(flushBy) {
				select {
				case b := <-l.send:
					_ = l.ws.SetWriteDeadline(flushBy)
					if l.ws.WriteMessage(websocket.TextMessage, b) != nil {
						return
					}
				default:
					break flush
				}
			}
			// A last acknowledgement, so that a node this term stops
			// linking to (it is leaving, or the term ends) does not hold
			// on to frames that were handled.
			if n := l.handled.Load(); l.ackFrom != "" && n != acked {
				b, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerAck, Epoch: l.epoch, From: l.ackFrom, Up: n})
				_ = l.ws.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				_ = l.ws.WriteMessage(websocket.TextMessage, b)
			}
			_ = l.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(200*time.Millisecond))
			deadline := time.Now().Add(200 * time.Millisecond)
			if flushBy.After(deadline) {
				deadline = flushBy
			}
			_ = l.out.Flush(deadline)
			return
		}
	}
}

// maxLinkBatch bounds the frames of one batch, so that pings and
// acknowledgements are not held back behind a long queue.
const maxLinkBatch = 1024

// linkFlush bounds how long a closing link keeps writing what was queued.
const linkFlush = time.Second

// ReadLoop calls fn for every frame until the link fails or closes. A peer
// silent for several ping intervals is dropped. It closes the link when it
// returns.
func (l *Link) ReadLoop(fn func(protocol.PeerFrame)) {
	defer l.Close()
	const idle = 5 * time.Second
	_ = l.ws.SetReadDeadline(time.Now().Add(idle))
	l.ws.SetPongHandler(func(string) error { return l.ws.SetReadDeadline(time.Now().Add(idle)) })
	l.ws.SetPingHandler(func(data string) error {
		_ = l.ws.SetReadDeadline(time.Now().Add(idle))
		err := l.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		_, b, err := l.ws.ReadMessage()
		if err != nil {
			if !l.Closed() {
				l.log.Info().Err(err).Msg("peer link lost")
			}
			return
		}
		_ = l.ws.SetReadDeadline(time.Now().Add(idle))
		f, err := protocol.DecodePeer(b)
		if err != nil {
			l.log.Warn().Err(err).Msg("bad peer frame dropped")
			continue
		}
		fn(f)
	}
}
