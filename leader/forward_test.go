package leader

import (
	"context"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"chatcluster/internal/testenv"
	"chatcluster/metrics"
	"chatcluster/protocol"
)

// forwardingLeader is a term of node n1 with a link to n3 whose queue
// the caller drains, and users placed on n3.
func forwardingLeader(users ...string) (*Term, *queueLink) {
	m := metrics.NewNode(prometheus.NewRegistry(), metrics.NodeSources{})
	d := Deps{ID: "n1", PeerQueue: 1 << 16, Log: zerolog.Nop(), Metrics: m, Parked: NewParking(m.RouteParkExpired), Ups: &UpMarks{}}
	l := &Term{node: &fakeNode{replies: make(chan protocol.PeerFrame, 16)}, d: d, id: d.ID, log: d.Log, m: d.Metrics,
		epoch: 7, links: map[string]memberLink{}, held: map[string][][]byte{}, unlinked: map[string]time.Time{}}
	l.parked = d.Parked
	l.rooms = newRoomService(l)
	link := &queueLink{send: make(chan []byte, 1<<16)}
	l.links["n3"] = link
	for _, u := range users {
		l.rooms.reg.Online(u, "n3", "c-"+u, 1)
	}
	return l, link
}

// fakeNode is the node of a term under test: it has no local users, and
// keeps the replies to its own requests.
type fakeNode struct {
	replies chan protocol.PeerFrame
	wg      sync.WaitGroup
}

func (n *fakeNode) Go(f func()) bool {
	n.wg.Go(f)
	return true
}
func (n *fakeNode) DeliverLocal(iter.Seq[string], *protocol.Message)                    {}
func (n *fakeNode) DeliverPushed(iter.Seq[string], string, int64, []byte, bool)         {}
func (n *fakeNode) DeliverRaw(iter.Seq[string], []byte)                                 {}
func (n *fakeNode) DeliverExcept(iter.Seq[string], string, string, int64, []byte, bool) {}
func (n *fakeNode) DeliverSignal(iter.Seq[string], []byte)                              {}
func (n *fakeNode) KickLocal(string, string, string)                                    {}
func (n *fakeNode) RosterFrames(int64) [][]byte                                         { return nil }
func (n *fakeNode) OnReply(f protocol.PeerFrame)                                        { n.replies <- f }
func (n *fakeNode) LocalCount() int                                                     { return 0 }
func (n *fakeNode) MessagesIn() int64                                                   { return 0 }

// queueLink is a term's link to a member whose queue the test drains.
type queueLink struct {
	send   chan []byte
	closed atomic.Bool
	lazy   atomic.Int64 // frames queued with EnqueueLazy
}

func (q *queueLink) Enqueue(b []byte) bool {
	if q.closed.Load() {
		return false
	}
	select {
	case q.send <- b:
		return true
	default:
		return false
	}
}

// EnqueueLazy queues like Enqueue, and counts: the test takes every
// frame alike.
func (q *queueLink) EnqueueLazy(b []byte) bool {
	q.lazy.Add(1)
	return q.Enqueue(b)
}
func (q *queueLink) Queued() int  { return len(q.send) }
func (q *queueLink) Cap() int     { return cap(q.send) }
func (q *queueLink) Close()       { q.closed.Store(true) }
func (q *queueLink) Closed() bool { return q.closed.Load() }

func dmMessage(i int) protocol.Message {
	return protocol.Message{ID: fmt.Sprintf("mjuoj484-%016x", i), Conv: "dm:alice:bob", Seq: int64(i + 1), From: "alice", To: "bob",
		Text: "a message of a typical length, some forty bytes", TS: 1767225662500}
}

// A route frame without a destination reaches the recipient's node, as
// the leader places them, with the push bytes as the sender encoded them.
func TestLeaderRoutesByRoster(t *testing.T) {
	l, link := forwardingLeader("bob")
	m := dmMessage(0)
	push := encodeMessage(m)
	frame, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerRoute, From: "n2", Users: []string{"bob"}, Push: push, Conv: m.Conv, Seq: m.Seq})
	f, err := protocol.DecodePeer(frame)
	if err != nil {
		t.Fatal(err)
	}
	l.Handle("n2", f)
	select {
	case b := <-link.send:
		out, err := protocol.DecodePeer(b)
		if err != nil || out.Type != protocol.PeerPush || out.Recipients != "bob" || out.Conv != m.Conv || out.Seq != m.Seq || string(out.Push) != string(push) || out.Epoch != 7 {
			t.Fatalf("forwarded %s (%v), want a push frame to bob with the sender's bytes", b, err)
		}
		if n := link.lazy.Load(); n != 0 {
			t.Fatalf("a message push went on the link's lazy lane (%d frames)", n)
		}
	default:
		t.Fatal("nothing forwarded to n3")
	}
	// A recipient the leader cannot place waits, and follows when placed.
	m2 := dmMessage(1)
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerRoute, From: "n2", Users: []string{"carol"}, Push: encodeMessage(m2), Conv: m2.Conv, Seq: m2.Seq})
	if len(link.send) != 0 {
		t.Fatal("a push for an unplaced user went out")
	}
	l.Handle("n3", protocol.PeerFrame{Type: protocol.PeerOnline, From: "n3", User: "carol", Conn: "c-carol", Online: true, Ver: 2})
	select {
	case b := <-link.send:
		if out, _ := protocol.DecodePeer(b); out.Recipients != "carol" || out.Seq != m2.Seq {
			t.Fatalf("after carol's login, forwarded %s", b)
		}
	default:
		t.Fatal("the parked push did not follow carol's login")
	}
}

// BenchmarkLeaderForward measures the leader forwarding a batch of 64
// direct messages as they arrive on a node's link: decoding each frame,
// placing the recipient and queueing the frame for the recipient's node.
// "push" is this build's frame (the encoded push travels as bytes);
// "message" the earlier one (the message decoded and encoded again).
func BenchmarkLeaderForward(b *testing.B) {
	const batch = 64
	l, link := forwardingLeader("bob")
	frames := map[string][][]byte{}
	for i := range batch {
		m := dmMessage(i)
		p, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerRoute, Epoch: 7, From: "n2", Up: uint64(i + 1), Users: []string{"bob"}, Push: encodeMessage(m), Conv: m.Conv, Seq: m.Seq})
		o, _ := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerRoute, Epoch: 7, From: "n2", Up: uint64(i + 1), Dest: "n3", Users: []string{"bob"}, Message: &m})
		frames["push"] = append(frames["push"], p)
		frames["message"] = append(frames["message"], o)
	}
	for _, kind := range []string{"push", "message"} {
		b.Run(kind, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, fr := range frames[kind] {
					f, err := protocol.DecodePeer(fr)
					if err != nil {
						b.Fatal(err)
					}
					l.Handle("n2", f)
				}
				for range batch {
					<-link.send
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
		})
	}
}

// An overloaded leader says so (its links' acknowledgements carry Busy,
// and nodes then refuse new messages for a moment: see the node's
// TestOverloadPushesBack), and refuses room posts itself, 503 with a
// retryAfter, instead of acknowledging what the cluster cannot deliver.
func TestOverloadPushesBack(t *testing.T) {
	l, link := forwardingLeader("bob")
	// The leader: a link three quarters full makes it busy.
	for range cap(link.send)*3/4 + 1 {
		link.send <- []byte("{}")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.ctx = ctx
	go l.overloadLoop()
	testenv.WaitFor(t, 10*time.Second, "the leader notices its full link", l.Busy)
	replies := l.node.(*fakeNode).replies
	l.rooms.submit("n1", protocol.PeerFrame{Type: protocol.PeerRoom, Op: protocol.RoomPost, Req: 99, Room: "lobby", User: "bob"})
	select {
	case rep := <-replies:
		if rep.Req != 99 || rep.Code != protocol.CodeUnavailable || rep.RetryAfter != 1 {
			t.Fatalf("post to an overloaded leader answered %+v, want 503 with retryAfter 1", rep)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("post to an overloaded leader not answered")
	}
	for len(link.send) > 0 {
		<-link.send
	}
	testenv.WaitFor(t, 10*time.Second, "the leader keeps up again with an empty link", func() bool { return !l.Busy() })
}

// Under the multi login policy a route frame reaches every node that holds
// a connection of the recipient, but the sender's node when it delivered
// there itself (away), and the push names the connection it is not for
// (except): the one that sent the message.
func TestLeaderRoutesToEveryDevice(t *testing.T) {
	l, n3 := forwardingLeader()
	l.d.MultiDevice = true
	l.rooms = newRoomService(l)
	n2 := &queueLink{send: make(chan []byte, 16)}
	l.links["n2"] = n2
	for _, s := range []struct{ user, node, conn string }{
		{"alice", "n2", "a-sending"}, {"alice", "n2", "a-tablet"}, {"alice", "n3", "a-phone"},
		{"bob", "n2", "b-laptop"}, {"bob", "n3", "b-phone"},
	} {
		l.Handle(s.node, protocol.PeerFrame{Type: protocol.PeerOnline, From: s.node, User: s.user, Conn: s.conn, Online: true, Ver: 1})
	}
	m := dmMessage(0)
	push := encodeMessage(m)
	pushes := func(link *queueLink) []protocol.PeerFrame {
		var out []protocol.PeerFrame
		for len(link.send) > 0 {
			f, err := protocol.DecodePeer(<-link.send)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
		return out
	}
	// Bob gets alice's message on both nodes but n2, which delivered to
	// its own connections of bob.
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerRoute, From: "n2", Away: true, Users: []string{"bob"}, Push: push, Conv: m.Conv, Seq: m.Seq})
	// Alice's other devices get it too, but the connection that sent it.
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerRoute, From: "n2", Away: true, Except: "a-sending", Users: []string{"alice"}, Push: push, Conv: m.Conv, Seq: m.Seq})
	if got := pushes(n2); len(got) != 0 {
		t.Fatalf("the sender's node got %+v, want nothing: it delivered itself", got)
	}
	got := pushes(n3)
	if len(got) != 2 || got[0].Recipients != "bob" || got[0].Except != "" || got[1].Recipients != "alice" || got[1].Except != "a-sending" ||
		string(got[1].Push) != string(push) || got[1].Conv != m.Conv {
		t.Fatalf("n3 got %+v, want the push for bob, then for alice but a-sending", got)
	}
	// Without away (a frame of a node that has none of bob's connections)
	// every node holding one gets it.
	l.Handle("n1", protocol.PeerFrame{Type: protocol.PeerRoute, From: "n1", Users: []string{"bob"}, Push: push, Conv: m.Conv, Seq: m.Seq})
	if a, b := pushes(n2), pushes(n3); len(a) != 1 || len(b) != 1 {
		t.Fatalf("a route to bob from another node reached n2 %d times and n3 %d times, want once each", len(a), len(b))
	}
	// A kick carries its reason on.
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerKick, From: "n2", Dest: "n3", Users: []string{"alice"}, Conn: "a-phone", Reason: protocol.KickSameDevice})
	if k := pushes(n3); len(k) != 1 || k[0].Type != protocol.PeerKick || k[0].Conn != "a-phone" || k[0].Reason != protocol.KickSameDevice {
		t.Fatalf("kick forwarded as %+v", k)
	}
}
