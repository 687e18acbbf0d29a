package node

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"chatcluster/handler"
	"chatcluster/metrics"
	"chatcluster/protocol"
	"chatcluster/session"
)

// busyTerm is a term of this node that says it is overloaded; the router
// asks it nothing else.
type busyTerm struct{ leaderTerm }

func (busyTerm) Busy() bool { return true }

// An overloaded leader says so in its acknowledgements; nodes then refuse
// new messages (503 with a retryAfter) for a moment instead of
// acknowledging what the cluster cannot deliver, and so does a node whose
// own term is overloaded. (That a term gets overloaded, and refuses room
// posts itself, is the leader package's TestOverloadPushesBack.)
func TestOverloadPushesBack(t *testing.T) {
	s := &Server{cfg: Config{ID: "n1", PeerQueue: 1 << 16}, local: session.NewLocal[*client](), log: zerolog.Nop(),
		m: metrics.NewNode(prometheus.NewRegistry(), metrics.NodeSources{})}
	r := newRouter(s)
	if err := r.Ready(); err != nil {
		t.Fatalf("Ready of an idle node: %v", err)
	}
	r.busyUntil.Store(time.Now().Add(leaderBusyFor).UnixNano())
	if err := r.Ready(); !errors.Is(err, handler.ErrOverloaded) {
		t.Fatalf("Ready while the leader is overloaded: %v, want ErrOverloaded", err)
	}
	r.busyUntil.Store(time.Now().Add(-time.Millisecond).UnixNano())
	if err := r.Ready(); err != nil {
		t.Fatalf("Ready once the leader keeps up again: %v", err)
	}

	s.routes = r
	r.lead = busyTerm{}
	if err := r.Ready(); !errors.Is(err, handler.ErrOverloaded) {
		t.Fatalf("Ready on an overloaded leader: %v, want ErrOverloaded", err)
	}
}

// devicesNode is a node of policy with no leader, whose clients' send
// queues the test reads, and the clients it makes.
func devicesNode(policy string) (*Server, func(id, user, device string) *client) {
	s := &Server{cfg: Config{ID: "n1", PeerQueue: 16, LoginPolicy: policy, MaxDevices: 5}, local: session.NewLocal[*client](), log: zerolog.Nop(),
		m: metrics.NewNode(prometheus.NewRegistry(), metrics.NodeSources{})}
	s.routes = newRouter(s)
	return s, func(id, user, device string) *client {
		c := &client{srv: s, id: id, send: heldQueue(8, 1<<20, time.Hour), closing: make(chan struct{}), device: device}
		c.user.Store(&user)
		if policy == PolicyMulti {
			s.local.AddDevice(c, device)
		} else {
			s.local.Add(c)
		}
		return c
	}
}

// queuedUp takes the frames queued for the leader.
func queuedUp(t *testing.T, r *router) []protocol.PeerFrame {
	t.Helper()
	var out []protocol.PeerFrame
	for len(r.up) > 0 {
		f, err := protocol.DecodePeer((<-r.up).b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

// Under the multi login policy a message reaches every connection of the
// recipient here at once, and goes to the leader for the others, marked
// as delivered here (away); the sender's other connections get it too,
// but the one that sent it.
func TestDeliverToEveryDevice(t *testing.T) {
	s, conn := devicesNode(PolicyMulti)
	phone, laptop := conn("a-phone", "alice", "phone"), conn("a-laptop", "alice", "laptop")
	bob1, bob2 := conn("b-1", "bob", ""), conn("b-2", "bob", "")
	m := protocol.Message{ID: "m1", Conv: "dm:alice:bob", Seq: 4, From: "alice", To: "bob", Text: "hi", TS: 1}
	push := encodeMessage(m)
	s.routes.Deliver(m, push, []string{"bob"})
	s.routes.DeliverExcept("alice", "a-phone", nil, &m)
	for _, c := range []*client{bob1, bob2, laptop} {
		if got := c.send.take(nil); len(got) != 1 || string(got[0]) != string(push) {
			t.Fatalf("%s got %q, want the message push", c.id, got)
		}
	}
	if got := phone.send.take(nil); len(got) != 0 {
		t.Fatalf("the sending connection got %q, want nothing (it has the reply)", got)
	}
	up := queuedUp(t, s.routes)
	if len(up) != 2 {
		t.Fatalf("%d frames for the leader, want 2: %+v", len(up), up)
	}
	if f := up[0]; f.Type != protocol.PeerRoute || !f.Away || f.Except != "" || len(f.Users) != 1 || f.Users[0] != "bob" || f.Seq != 4 || string(f.Push) != string(push) {
		t.Fatalf("route to bob = %+v", f)
	}
	if f := up[1]; f.Type != protocol.PeerRoute || !f.Away || f.Except != "a-phone" || len(f.Users) != 1 || f.Users[0] != "alice" || f.Conv != m.Conv || string(f.Push) != string(push) {
		t.Fatalf("route to alice's other devices = %+v", f)
	}
	// A push that is no message, as read receipts are, goes the same way.
	raw := []byte(`{"action":"x","data":{}}`)
	s.routes.DeliverExcept("bob", "b-1", raw, nil)
	if got := bob2.send.take(nil); len(got) != 1 || string(got[0]) != string(raw) {
		t.Fatalf("b-2 got %q, want the raw push", got)
	}
	if got := bob1.send.take(nil); len(got) != 0 {
		t.Fatalf("b-1 got %q, want nothing", got)
	}
	if f := queuedUp(t, s.routes); len(f) != 1 || f[0].Conv != "" || f[0].Except != "b-1" || string(f[0].Push) != string(raw) {
		t.Fatalf("route of the raw push = %+v", f)
	}
	// From the leader: a push for alice but one connection.
	s.deliverPushed(slices.Values([]string{"alice"}), "dm:alice:carol", 9, push, false, "a-laptop")
	if len(laptop.send.take(nil)) != 0 || len(phone.send.take(nil)) != 1 {
		t.Fatal("a push from the leader except a-laptop did not reach a-phone alone")
	}
}

// Under the single policy nothing changes: a user connected here has no
// other connection, so nothing goes to the leader for them.
func TestDeliverSinglePolicy(t *testing.T) {
	s, conn := devicesNode(PolicySingle)
	alice := conn("a-1", "alice", "")
	bob := conn("b-1", "bob", "")
	m := protocol.Message{ID: "m1", Conv: "dm:alice:bob", Seq: 1, From: "alice", To: "bob", Text: "hi", TS: 1}
	s.routes.Deliver(m, nil, []string{"bob", "carol"})
	s.routes.DeliverExcept("alice", "a-1", nil, &m)
	if len(bob.send.take(nil)) != 1 || len(alice.send.take(nil)) != 0 {
		t.Fatal("bob did not get the message, or its sender did")
	}
	up := queuedUp(t, s.routes)
	if len(up) != 1 || up[0].Away || len(up[0].Users) != 1 || up[0].Users[0] != "carol" {
		t.Fatalf("frames for the leader = %+v, want one route to carol, who is not here", up)
	}
}
