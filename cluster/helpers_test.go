package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/rs/zerolog"

	"chatcluster/internal/testenv"
)

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// env is one test's ZooKeeper servers and root.
type env struct {
	t       *testing.T
	servers []string
	root    string
	cred    Credential // given to every node unless mod changes it; zero: none
}

// newEnv returns the ZooKeeper of the test run and a fresh root, removed
// when the test ends.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, servers: testenv.ZK(t), root: "/" + testenv.Namespace(t)}
	t.Cleanup(func() { // registered first: runs after every node is closed
		conn := e.rawAuth(e.cred)
		deleteTree(conn, e.root)
		conn.Close()
	})
	return e
}

// newAuthEnv is newEnv with a fresh credential that every node gets.
func newAuthEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.cred = randomCred(t)
	return e
}

// randomCred returns a credential of its own.
func randomCred(t *testing.T) Credential {
	t.Helper()
	return Credential{User: "chat-" + testenv.Namespace(t), Password: testenv.Namespace(t)}
}

// node builds a node called id with a 1s session timeout; mod may change
// its Config. The node is closed when the test ends.
func (e *env) node(id string, mod func(*Config)) *Cluster {
	e.t.Helper()
	cfg := Config{
		Servers:        e.servers,
		Root:           e.root,
		Auth:           e.cred,
		SessionTimeout: time.Second,
		Self:           Member{ID: id, WS: "ws://127.0.0.1:9000/" + id, Peer: "127.0.0.1:7000/" + id},
		Logger:         zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.InfoLevel).With().Timestamp().Logger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			e.t.Errorf("close %s: %v", id, err)
		}
	})
	return c
}

// started is node followed by a successful Start.
func (e *env) started(id string, mod func(*Config)) *Cluster {
	e.t.Helper()
	c := e.node(id, mod)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		e.t.Fatalf("start %s: %v", id, err)
	}
	return c
}

// raw opens a plain ZooKeeper client without credentials for checks; the
// caller closes it.
func (e *env) raw() *zk.Conn {
	e.t.Helper()
	return e.rawAuth(Credential{})
}

// rawAuth is raw authenticated with cred (none if zero).
func (e *env) rawAuth(cred Credential) *zk.Conn {
	e.t.Helper()
	conn, _, err := zk.Connect(e.servers, 5*time.Second, zk.WithLogger(discard{}))
	if err != nil {
		e.t.Fatal(err)
	}
	testenv.WaitFor(e.t, testTimeout, "raw ZooKeeper client has a session", func() bool {
		return conn.State() == zk.StateHasSession
	})
	if !cred.IsZero() {
		if err := conn.AddAuth("digest", cred.auth()); err != nil {
			conn.Close()
			e.t.Fatalf("raw client: add auth: %v", err)
		}
	}
	return conn
}

type discard struct{}

func (discard) Printf(string, ...any) {}

func deleteTree(conn *zk.Conn, p string) {
	children, _, err := conn.Children(p)
	if err != nil {
		return
	}
	for _, ch := range children {
		deleteTree(conn, p+"/"+ch)
	}
	_ = conn.Delete(p, -1)
}

// agreed reports the leader when every node is connected, sees n members
// and the same leader, and exactly that leader has IsLeader set.
func agreed(n int, nodes ...*Cluster) (Leader, bool) {
	var l Leader
	for i, c := range nodes {
		s := c.State()
		if !s.Connected || len(s.Members) != n || s.Leader.ID == "" {
			return Leader{}, false
		}
		if i == 0 {
			l = s.Leader
		} else if s.Leader != l {
			return Leader{}, false
		}
		if s.IsLeader != (s.Leader.ID == c.cfg.Self.ID) {
			return Leader{}, false
		}
	}
	return l, true
}

// waitAgreed waits until the nodes agree (see agreed) and returns the
// leader.
func waitAgreed(t *testing.T, n int, nodes ...*Cluster) Leader {
	t.Helper()
	var l Leader
	testenv.WaitFor(t, testTimeout, "nodes agree on members and leader", func() bool {
		var ok bool
		l, ok = agreed(n, nodes...)
		return ok
	})
	return l
}

// ownElection returns the node's election znode name and the one it
// watches.
func ownElection(c *Cluster) (own, watching string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.own, c.watching
}

// viaProxy makes a node reach ZooKeeper through p.
func viaProxy(p *testenv.Proxy) func(*Config) {
	return func(c *Config) { c.Servers = []string{p.Addr()} }
}

// latest takes whatever snapshot is waiting on ch without blocking, and
// reports whether ch is closed.
func latest(ch <-chan State, last *State) (closed bool) {
	select {
	case s, ok := <-ch:
		if !ok {
			return true
		}
		*last = s
	default:
	}
	return false
}

func isClosed(err error) bool { return errors.Is(err, ErrClosed) }

func memberIDs(ms []Member) string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return strings.Join(ids, ",")
}
