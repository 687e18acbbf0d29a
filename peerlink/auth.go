package peerlink

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
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/internal/wsconn"
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

	handshakeSkew = 30 * time.Second
)

// Path is the HTTP path of the peer listener that a leader dials.
const Path = "/peer"

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
	mu     sync.Mutex
	seen   map[string]time.Time // guarded by mu
	pruned time.Time            // when seen was last pruned; guarded by mu
}

func (n *nonces) fresh(nonce string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = make(map[string]time.Time)
	}
	// Pruned at most once a second: calls (call.go) may come many a
	// second.
	if now.Sub(n.pruned) >= time.Second {
		n.pruned = now
		for k, t := range n.seen {
			if now.Sub(t) > 2*handshakeSkew {
				delete(n.seen, k)
			}
		}
	}
	if _, ok := n.seen[nonce]; ok {
		return false
	}
	n.seen[nonce] = now
	return true
}

// upgrader is the upgrader of the peer listener. Links are few and
// busy, so each keeps its buffers: reads use the HTTP server's 4 KiB
// buffer, which the upgrade takes over, and frames are put together in a
// write buffer of the link's own before they join a batch (see wsconn).
func upgrader() websocket.Upgrader {
	return websocket.Upgrader{
		ReadBufferSize:  0,
		WriteBufferSize: 4 << 10,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
}

// dialer is the dialer of peer links. The connection it opens
// batches what the link's write loop writes (wsconn).
func dialer(timeout time.Duration) *websocket.Dialer {
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

// Dial opens an authenticated link from this node, self (the leader, with
// epoch), to the node target, whose peer listener is at addr, within
// timeout for the handshake, over mutual TLS when o.TLS is set (see
// tls.go; errors about TLS wrap ErrTLSMismatch or ErrPeerCertificate). The link acknowledges the numbered frames the
// leader handled (Link.SetHandled), as the handshake tells the node.
func Dial(secret []byte, self, target, addr string, epoch int64, timeout time.Duration, o Options) (*Link, error) {
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
	d := dialer(timeout)
	scheme := "ws://"
	if o.TLS != nil {
		scheme, d.TLSClientConfig = "wss://", o.TLS.clientConfig()
	}
	ws, resp, err := d.Dial(scheme+addr+Path, h)
	if err != nil {
		return nil, dialError(target, addr, o.TLS != nil, resp, err)
	}
	want := acceptProof(secret, target, nonce)
	if !hmac.Equal([]byte(resp.Header.Get(hdrAccept)), []byte(want)) {
		ws.Close()
		return nil, fmt.Errorf("peer %s did not prove the cluster secret", target)
	}
	link := newLink(ws, target, epoch, o.Queue, o.Log)
	link.ackFrom = self
	link.busy = o.Busy
	return link, nil
}

// Acceptor is the accepting half of the handshake, on a node's peer
// listener: it checks a leader's proof of the cluster secret, the clock
// and replays (Verify), and answers with this node's own proof (Accept).
// Whether the leader is the one to accept (its epoch, what ZooKeeper
// says) is for the node to decide between the two. Safe for concurrent
// use.
type Acceptor struct {
	secret []byte
	self   string
	up     websocket.Upgrader
	nonces nonces
}

// NewAcceptor returns the acceptor of node self in a cluster with secret.
func NewAcceptor(secret []byte, self string) *Acceptor {
	return &Acceptor{secret: secret, self: self, up: upgrader()}
}

// Hello is what a dialling leader claims in its handshake.
type Hello struct {
	From  string // the leader's node id
	Epoch int64  // the epoch it leads in
	Acks  bool   // it acknowledges numbered frames
	nonce string
	ok    bool // Verify passed it
}

// Refusal is why Verify refused a handshake: Status is the HTTP status to
// answer with, Reason what to say.
type Refusal struct {
	Status int
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

// Verify checks the handshake of req: the leader must prove the cluster
// secret, within handshakeSkew of this node's clock, with a nonce not seen
// before. It returns what the leader claims, filled in as far as req says
// even when the handshake is refused (for the log), and a *Refusal when it
// is.
func (a *Acceptor) Verify(req *http.Request) (Hello, error) {
	h := Hello{From: req.Header.Get(hdrNode), nonce: req.Header.Get(hdrNonce), Acks: req.Header.Get(hdrAcks) == "1"}
	ts := req.Header.Get(hdrTime)
	h.Epoch, _ = strconv.ParseInt(req.Header.Get(hdrEpoch), 10, 64)
	sec, _ := strconv.ParseInt(ts, 10, 64)
	now := time.Now()
	want := dialProof(a.secret, h.From, a.self, h.Epoch, ts, h.nonce)
	switch {
	case h.From == "" || h.nonce == "" || !hmac.Equal([]byte(req.Header.Get(hdrAuth)), []byte(want)):
		return h, &Refusal{http.StatusUnauthorized, "bad peer credentials"}
	case now.Sub(time.Unix(sec, 0)).Abs() > handshakeSkew:
		return h, &Refusal{http.StatusUnauthorized, "peer handshake too old or clocks apart"}
	case !a.nonces.fresh(h.nonce, now):
		return h, &Refusal{http.StatusUnauthorized, "replayed peer handshake"}
	}
	h.ok = true
	return h, nil
}

// errUnverified: Accept was given a Hello that Verify did not pass.
var errUnverified = errors.New("peerlink: accept of a handshake that was not verified")

// Accept completes the handshake h of req, which Verify passed: it
// answers with this node's proof over the leader's nonce and returns the
// link. On an upgrade that fails the upgrader has answered req.
func (a *Acceptor) Accept(w http.ResponseWriter, req *http.Request, h Hello, o Options) (*Link, error) {
	if !h.ok {
		http.Error(w, "bad peer credentials", http.StatusUnauthorized)
		return nil, errUnverified
	}
	hdr := http.Header{}
	hdr.Set(hdrAccept, acceptProof(a.secret, a.self, h.nonce))
	ws, err := a.up.Upgrade(w, req, hdr)
	if err != nil {
		return nil, err
	}
	link := newLink(ws, h.From, h.Epoch, o.Queue, o.Log)
	link.acks = h.Acks
	return link, nil
}
