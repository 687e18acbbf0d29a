package peerlink

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// logBuffer is a zerolog sink the tests read while servers write.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// peerListener serves a node's peer listener as the node does, with TLS
// when t is set: Listen, ErrorLog, Verify then Accept. It returns the
// address and the node's log.
func peerListener(t *testing.T, a *Acceptor, tlsConf *TLS) (addr string, accepted <-chan *Link, logs *logBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs = &logBuffer{}
	log := zerolog.New(logs)
	links := make(chan *Link, 4)
	hs := &http.Server{
		ErrorLog: ErrorLog(log),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h, err := a.Verify(r)
			var rf *Refusal
			if errors.As(err, &rf) {
				http.Error(w, rf.Reason, rf.Status)
				return
			}
			if link, err := a.Accept(w, r, h, Options{Queue: 8, Log: log}); err == nil {
				links <- link
			}
		}),
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.Serve(Listen(ln, tlsConf, log)) }()
	t.Cleanup(func() { _ = hs.Close(); <-served })
	return ln.Addr().String(), links, logs
}

// loadTLS issues a peer certificate of ca for hosts and loads it with the
// CA file trusted.
func loadTLS(t *testing.T, ca *testenv.CA, trusted *testenv.CA, name string, hosts ...string) *TLS {
	t.Helper()
	cert, key := ca.Issue(t, name, hosts...)
	tl, err := LoadTLS(cert, key, trusted.File)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// Over mutual TLS a leader links to a node as over plain TCP, and the
// frames of the link still leave in batches.
func TestDialOverMutualTLS(t *testing.T) {
	ca := testenv.NewCA(t, "cluster")
	addr, accepted, logs := peerListener(t, NewAcceptor(testSecret, "n2"), loadTLS(t, ca, ca, "n2", "127.0.0.1"))
	lead, err := Dial(testSecret, "n1", "n2", addr, 7, 10*time.Second, Options{Queue: 8, Log: zerolog.Nop(), TLS: loadTLS(t, ca, ca, "n1", "127.0.0.1")})
	if err != nil {
		t.Fatalf("%v; node log: %s", err, logs)
	}
	var node *Link
	select {
	case node = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not accept the link")
	}
	if lead.out == nil || node.out == nil {
		t.Fatal("a link over TLS does not batch its writes")
	}
	got := make(chan protocol.PeerFrame, 8)
	for _, l := range []*Link{lead, node} {
		go l.WriteLoop(10 * time.Second)
		go l.ReadLoop(func(f protocol.PeerFrame) { got <- f })
	}
	t.Cleanup(func() { lead.Close(); node.Close() })
	b, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerPush, Epoch: 7, From: "n1", Recipients: "bob"})
	if !lead.Enqueue(b) {
		t.Fatal("frame refused")
	}
	for {
		select {
		case f := <-got:
			if f.Type == protocol.PeerPush {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the frame did not arrive over TLS")
		}
	}
}

// A link between a node with peer TLS and one without fails, both ways,
// with an error that says so at the dialling end and a log line at the
// accepting end; it never goes on in plain text. Certificates the
// cluster's CA did not sign, or that do not name the address dialled,
// fail the link too.
func TestPeerTLSRefusals(t *testing.T) {
	ca, other := testenv.NewCA(t, "cluster"), testenv.NewCA(t, "other")
	leaderTLS := loadTLS(t, ca, ca, "n1", "127.0.0.1")
	for _, tc := range []struct {
		name     string
		node     *TLS // the accepting node's
		leader   *TLS // the dialling leader's
		wantErr  error
		errSays  string
		nodeLogs string // in the accepting node's log
	}{
		{name: "leader TLS, node plain", node: nil, leader: leaderTLS, wantErr: ErrTLSMismatch,
			errSays: "does not speak TLS on its peer listener", nodeLogs: "the dialling node speaks TLS and this peer listener does not"},
		{name: "leader plain, node TLS", node: loadTLS(t, ca, ca, "n2", "127.0.0.1"), leader: nil, wantErr: ErrTLSMismatch,
			errSays: "requires TLS on its peer listener and this node has no peer TLS", nodeLogs: "the dialling node speaks plain text and this peer listener requires TLS"},
		{name: "node certificate of another CA", node: loadTLS(t, other, other, "n2", "127.0.0.1"), leader: leaderTLS, wantErr: ErrPeerCertificate,
			errSays: "did not sign", nodeLogs: "TLS handshake failed"},
		{name: "leader certificate of another CA", node: loadTLS(t, ca, ca, "n2", "127.0.0.1"), leader: loadTLS(t, other, ca, "n1", "127.0.0.1"), wantErr: ErrPeerCertificate,
			errSays: "refused this node's certificate", nodeLogs: "TLS handshake failed over a certificate"},
		{name: "node certificate for another host", node: loadTLS(t, ca, ca, "n2", "10.9.9.9", "host-b"), leader: leaderTLS, wantErr: ErrPeerCertificate,
			errSays: "its --peer-advertise host must be one of the certificate's names", nodeLogs: "TLS handshake failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, accepted, logs := peerListener(t, NewAcceptor(testSecret, "n2"), tc.node)
			_, err := Dial(testSecret, "n1", "n2", addr, 7, 10*time.Second, Options{Queue: 8, Log: zerolog.Nop(), TLS: tc.leader})
			t.Logf("dial: %v", err)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errSays) {
				t.Fatalf("dial: %v, want %v saying %q", err, tc.wantErr, tc.errSays)
			}
			testenv.WaitFor(t, 10*time.Second, "the node logs "+tc.nodeLogs, func() bool { return strings.Contains(logs.String(), tc.nodeLogs) })
			select {
			case <-accepted:
				t.Fatal("the node accepted the link")
			default:
			}
		})
	}
}

// A reloaded CA and certificate apply to the links opened next: a node
// that moves to a new CA links again once the leader trusts it too.
func TestPeerTLSReload(t *testing.T) {
	ca, next := testenv.NewCA(t, "cluster"), testenv.NewCA(t, "next")
	cert, key := ca.Issue(t, "n1", "127.0.0.1")
	leader, err := LoadTLS(cert, key, ca.File)
	if err != nil {
		t.Fatal(err)
	}
	addr, _, _ := peerListener(t, NewAcceptor(testSecret, "n2"), loadTLS(t, next, next, "n2", "127.0.0.1"))
	if _, err := Dial(testSecret, "n1", "n2", addr, 7, 10*time.Second, Options{Queue: 8, Log: zerolog.Nop(), TLS: leader}); !errors.Is(err, ErrPeerCertificate) {
		t.Fatalf("dial before the reload: %v", err)
	}
	copyFile(t, next.File, leader.caFile)
	ncert, nkey := next.Issue(t, "n1-next", "127.0.0.1")
	copyFile(t, ncert, cert)
	copyFile(t, nkey, key)
	if err := leader.Reload(); err != nil {
		t.Fatal(err)
	}
	link, err := Dial(testSecret, "n1", "n2", addr, 7, 10*time.Second, Options{Queue: 8, Log: zerolog.Nop(), TLS: leader})
	if err != nil {
		t.Fatalf("dial after the reload: %v", err)
	}
	link.Drop()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
