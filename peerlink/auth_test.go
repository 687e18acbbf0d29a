package peerlink

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"chatcluster/protocol"
)

var testSecret = []byte("0123456789abcdef")

// acceptingNode serves a peer listener for node self as a node does: a
// handshake Verify passes is accepted, the others are refused with the
// refusal's status.
func acceptingNode(t *testing.T, a *Acceptor) (addr string, accepted <-chan *Link) {
	t.Helper()
	links := make(chan *Link, 4)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, err := a.Verify(r)
		var rf *Refusal
		if errors.As(err, &rf) {
			http.Error(w, rf.Reason, rf.Status)
			return
		}
		link, err := a.Accept(w, r, h, Options{Queue: 8, Log: zerolog.Nop()})
		if err == nil {
			links <- link
		}
	}))
	t.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://"), links
}

// A leader that knows the cluster secret links to a node, both ends
// proven; frames go both ways, and the node's end knows the leader
// acknowledges.
func TestDialAndAccept(t *testing.T) {
	addr, accepted := acceptingNode(t, NewAcceptor(testSecret, "n2"))
	lead, err := Dial(testSecret, "n1", "n2", addr, 7, 10*time.Second, Options{Queue: 8, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	var node *Link
	select {
	case node = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not accept the link")
	}
	if node.Remote() != "n1" || node.Epoch() != 7 || !node.Acks() || lead.Remote() != "n2" || lead.Epoch() != 7 {
		t.Fatalf("node end: %s epoch %d acks %v; leader end: %s epoch %d", node.Remote(), node.Epoch(), node.Acks(), lead.Remote(), lead.Epoch())
	}
	got := make(chan protocol.PeerFrame, 8)
	for _, l := range []*Link{lead, node} {
		go l.WriteLoop(10 * time.Second)
		go l.ReadLoop(func(f protocol.PeerFrame) { got <- f })
	}
	down, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerPush, Epoch: 7, From: "n1", Recipients: "bob"})
	up, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerLoad, Epoch: 7, From: "n2", Connections: 3})
	if !lead.Enqueue(down) || !node.Enqueue(up) {
		t.Fatal("frames refused")
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case f := <-got:
			if f.Type == protocol.PeerPush || f.Type == protocol.PeerLoad {
				seen[f.Type] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("frames seen: %v", seen)
		}
	}
	lead.Close()
	node.Close()
	<-lead.Done()
	<-node.Done()
}

// A leader without the secret is refused, and so is a node that cannot
// prove it.
func TestHandshakeNeedsTheSecret(t *testing.T) {
	addr, _ := acceptingNode(t, NewAcceptor(testSecret, "n2"))
	_, err := Dial([]byte("another secret, 16+"), "n1", "n2", addr, 7, 10*time.Second, Options{Queue: 8})
	if err == nil || !strings.Contains(err.Error(), "refused the link: 401") {
		t.Fatalf("dial with the wrong secret: %v, want refused 401", err)
	}
	// A node that accepts without proving the secret is not linked to.
	up := websocket.Upgrader{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ws, err := up.Upgrade(w, r, http.Header{hdrAccept: {"no proof"}}); err == nil {
			defer ws.Close()
			_, _, _ = ws.ReadMessage()
		}
	}))
	defer hs.Close()
	_, err = Dial(testSecret, "n1", "n2", strings.TrimPrefix(hs.URL, "http://"), 7, 10*time.Second, Options{Queue: 8})
	if err == nil || !strings.Contains(err.Error(), "did not prove the cluster secret") {
		t.Fatalf("dial to a node without the secret: %v", err)
	}
}

// handshake is the request a leader n1 of epoch 7 sends node n2 at ts.
func handshake(secret []byte, ts time.Time, nonce string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, Path, nil)
	sec := strconv.FormatInt(ts.Unix(), 10)
	req.Header.Set(hdrNode, "n1")
	req.Header.Set(hdrEpoch, "7")
	req.Header.Set(hdrTime, sec)
	req.Header.Set(hdrNonce, nonce)
	req.Header.Set(hdrAuth, dialProof(secret, "n1", "n2", 7, sec, nonce))
	return req
}

// Verify refuses a handshake with a bad proof, one too far from the
// node's clock and one replayed, and says who claimed it.
func TestVerifyRefuses(t *testing.T) {
	a := NewAcceptor(testSecret, "n2")
	now := time.Now()
	h, err := a.Verify(handshake(testSecret, now, "nonce-1"))
	if err != nil || h.From != "n1" || h.Epoch != 7 || h.Acks {
		t.Fatalf("a good handshake: %+v, %v", h, err)
	}
	for _, tc := range []struct {
		name string
		req  *http.Request
		why  string
	}{
		{"replayed", handshake(testSecret, now, "nonce-1"), "replayed peer handshake"},
		{"wrong secret", handshake([]byte("another secret, 16+"), now, "nonce-2"), "bad peer credentials"},
		{"no nonce", handshake(testSecret, now, ""), "bad peer credentials"},
		{"too old", handshake(testSecret, now.Add(-handshakeSkew-2*time.Second), "nonce-3"), "peer handshake too old or clocks apart"},
	} {
		h, err := a.Verify(tc.req)
		var rf *Refusal
		if !errors.As(err, &rf) || rf.Status != http.StatusUnauthorized || rf.Reason != tc.why {
			t.Errorf("%s: %v, want 401 %q", tc.name, err, tc.why)
		}
		if h.From != "n1" || h.Epoch != 7 {
			t.Errorf("%s: the refused hello says %q epoch %d, want n1 epoch 7", tc.name, h.From, h.Epoch)
		}
	}
	// A hello Verify did not pass is not accepted.
	w := httptest.NewRecorder()
	if _, err := a.Accept(w, handshake(testSecret, now, "nonce-4"), Hello{From: "n1", Epoch: 7}, Options{Queue: 8}); err == nil || w.Code != http.StatusUnauthorized {
		t.Fatalf("accept of an unverified hello: %v, status %d", err, w.Code)
	}
}
