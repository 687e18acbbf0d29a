package node

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"chatcluster/internal/wsconn"
	"chatcluster/protocol"
)

// Peer-link handshake headers. The leader dials a node's peer listener and
// proves it knows the cluster secret; the node answers with its own proof
// over the leader's nonce, so both ends are authenticated.
const (
	hdrNode   = "X-Chat-Node"
	hdrEpoch  = "X-Chat-Epoch"
	hdrTime   = "X-Chat-Time"
	hdrNonce  = "X-Chat-Nonce"
	hdrAuth   = "X-Chat-Auth"
	hdrAccept = "X-Chat-Accept"
	// hdrAcks, sent by the leader, says it acknowledges numbered frames
	// (ack frames); a node keeps its frames for resending only then.
	hdrAcks = "X-Chat-Acks"

	peerPath      = "/peer"
	handshakeSkew = 30 * time.Second
)

func mac(secret []byte, parts ...string) string {
	h := hmac.New(sha256.New, secret)
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dialProof is what the leader sends; acceptProof what the node answers.
func dialProof(secret []byte, leader, target string, epoch int64, ts, nonce string) string {
	return mac(secret, "dial", leader, target, strconv.FormatInt(epoch, 10), ts, nonce)
}

func acceptProof(secret []byte, node, nonce string) string {
	return mac(secret, "accept", node, nonce)
}

// nonces remembers handshake nonces inside the clock-skew window so a
// captured handshake cannot be replayed.
type nonces struct {
	mu   sync.Mutex
	seen map[string]time.Time // guarded by mu
}

func (n *nonces) fresh(nonce string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = make(map[string]time.Time)
	}
	for k, t := range n.seen {
		if now.Sub(t) > 2*handshakeSkew {
			delete(n.seen, k)
		}
	}
	if _, ok := n.seen[nonce]; ok {
		return false
	}
	n.seen[nonce] = now
	return true
}

// peerLink is one authenticated peer connection. Like a client it has one
// read loop and one write loop; the write loop alone writes data frames to
// ws, in batches (see writeLoop).
type peerLink struct {
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
}

// ackEvery is how often a leader acknowledges what a node sent it.
const ackEvery = 50 * time.Millisecond

func newPeerLink(ws *websocket.Conn, remote string, epoch int64, queue int, log zerolog.Logger) *peerLink {
	ws.SetReadLimit(protocol.MaxPeerFrame)
	return &peerLink{
		ws: ws, out: wsconn.Of(ws.NetConn()), remote: remote, epoch: epoch, log: log.With().Str("peer", remote).Int64("epoch", epoch).Logger(),
		send: make(chan []byte, queue), closing: make(chan struct{}), done: make(chan struct{}),
	}
}

// enqueue queues a frame without blocking; false when the link is closed
// or its queue is full (the frame's recipients then catch up by sync).
func (l *peerLink) enqueue(b []byte) bool {
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

func (l *peerLink) close() { l.once.Do(func() { close(l.closing) }) }

func (l *peerLink) closed() bool {
	select {
	case <-l.closing:
		return true
	default:
		return false
	}
}

// writeLoop drains the queue and pings, so a dead peer is noticed. What
// is queued goes out in batches: the frames waiting when the loop comes
// for them (up to maxLinkBatch) are written together and flushed once,
// in one write on the socket when they fit the link's buffer (see
// wsconn); those queued meanwhile make the next batch.
func (l *peerLink) writeLoop(writeTimeout time.Duration) {
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
	// batch writes b, then what else is queued, and flushes.
	batch := func(b []byte) error {
		l.out.Cork()
		err := write(b)
		for n := 1; err == nil && n < maxLinkBatch; n++ {
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
	for {
		select {
		case <-ackC:
			n := l.handled.Load()
			busy := l.busy != nil && l.busy()
			if n == acked && !busy {
				continue
			}
			b, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerAck, Epoch: l.epoch, From: l.ackFrom, Up: n, Busy: busy})
			if err := batch(b); err != nil {
				l.log.Warn().Err(err).Msg("peer write failed, closing link")
				l.close()
				return
			}
			acked = n
		case b := <-l.send:
			if err := batch(b); err != nil {
				l.log.Warn().Err(err).Msg("peer write failed, closing link")
				l.close()
				return
			}
		case <-ping.C:
			if err := l.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				l.close()
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

// readLoop calls fn for every frame until the link fails or closes. A peer
// silent for several ping intervals is dropped.
func (l *peerLink) readLoop(fn func(protocol.PeerFrame)) {
	defer l.close()
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
			if !l.closed() {
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

// peerUpgrader is the upgrader of the peer listener. Links are few and
// busy, so each keeps its buffers: reads use the HTTP server's 4 KiB
// buffer, which the upgrade takes over, and frames are put together in a
// write buffer of the link's own before they join a batch (see wsconn).
func peerUpgrader() websocket.Upgrader {
	return websocket.Upgrader{
		ReadBufferSize:  0,
		WriteBufferSize: 4 << 10,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
}

// peerDialer is the dialer of peer links. The connection it opens
// batches what the link's write loop writes (wsconn).
func peerDialer(timeout time.Duration) *websocket.Dialer {
	return &websocket.Dialer{
		HandshakeTimeout: timeout, ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nd net.Dialer
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wsconn.New(c, nil), nil
		},
	}
}

// dialPeer opens an authenticated link from this node (the leader, with
// epoch) to the node m.
func dialPeer(secret []byte, self, target, addr string, epoch int64, timeout time.Duration) (*websocket.Conn, error) {
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	h := http.Header{}
	h.Set(hdrNode, self)
	h.Set(hdrEpoch, strconv.FormatInt(epoch, 10))
	h.Set(hdrTime, ts)
	h.Set(hdrNonce, nonce)
	h.Set(hdrAuth, dialProof(secret, self, target, epoch, ts, nonce))
	h.Set(hdrAcks, "1")
	d := peerDialer(timeout)
	ws, resp, err := d.Dial("ws://"+addr+peerPath, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("peer %s refused the link: %s", target, resp.Status)
		}
		return nil, err
	}
	want := acceptProof(secret, target, nonce)
	if !hmac.Equal([]byte(resp.Header.Get(hdrAccept)), []byte(want)) {
		ws.Close()
		return nil, fmt.Errorf("peer %s did not prove the cluster secret", target)
	}
	return ws, nil
}
