package leader

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"chatcluster/protocol"
)

// A typing push reaches the other online members of the room, one frame
// per node, never the sender; a sender who is no member reaches no one;
// a busy link drops it rather than queue it.
func TestSignalFansOutToOtherMembers(t *testing.T) {
	l, link := forwardingLeader("alice", "bob", "carol")
	l.rooms.reg.Set("lobby", "alice", []string{"alice", "bob", "carol", "dave"}) // dave is offline
	push := []byte(`{"action":"typing","data":{"conv":"room:lobby","from":"alice"}}`)
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerSignal, From: "n2", Room: "lobby", User: "alice", Push: push})
	if len(link.send) != 1 {
		t.Fatalf("%d frames to n3, want 1", len(link.send))
	}
	out, err := protocol.DecodePeer(<-link.send)
	if err != nil || out.Type != protocol.PeerSignal || out.Recipients != "bob,carol" || string(out.Push) != string(push) || out.Epoch != 7 {
		t.Fatalf("sent %+v (%v), want a signal to bob and carol with the typing push", out, err)
	}

	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerSignal, From: "n2", Room: "lobby", User: "mallory", Push: push})
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerSignal, From: "n2", Room: "nowhere", User: "alice", Push: push})
	if len(link.send) != 0 {
		t.Fatal("a typing of a non-member, or in a room that does not exist, went out")
	}

	// A direct conversation: to the user where they are.
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerSignal, From: "n2", Users: []string{"bob"}, User: "alice", Push: push})
	if out, _ := protocol.DecodePeer(<-link.send); out.Type != protocol.PeerSignal || out.Recipients != "bob" {
		t.Fatalf("direct typing sent %+v", out)
	}

	// The link is busy: the push is dropped and counted.
	for range signalRoom {
		link.send <- []byte("{}")
	}
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerSignal, From: "n2", Room: "lobby", User: "alice", Push: push})
	if len(link.send) != signalRoom {
		t.Fatalf("a typing went out on a busy link (%d queued)", len(link.send))
	}
	if n := testutil.ToFloat64(l.m.SignalDropped); n != 1 {
		t.Fatalf("signals dropped = %v, want 1", n)
	}
}

// A push that is no message (a read receipt) reaches a user where they
// are online; one for a user the leader cannot place is dropped, not
// parked.
func TestRawRouteIsNotParked(t *testing.T) {
	l, link := forwardingLeader("bob")
	push, _ := protocol.EncodePush(protocol.PushRead, protocol.ReadPush{Conv: "dm:alice:bob", User: "alice", Seq: 3})
	l.Handle("n2", protocol.PeerFrame{Type: protocol.PeerRoute, From: "n2", Users: []string{"bob", "carol"}, Push: push})
	if len(link.send) != 1 {
		t.Fatalf("%d frames to n3, want 1", len(link.send))
	}
	out, err := protocol.DecodePeer(<-link.send)
	if err != nil || out.Type != protocol.PeerPush || out.Recipients != "bob" || out.Conv != "" || string(out.Push) != string(push) {
		t.Fatalf("sent %+v (%v), want a push frame to bob without a conversation", out, err)
	}
	if n := link.lazy.Load(); n != 1 {
		t.Fatalf("%d frames on the link's lazy lane, want the read push", n)
	}
	if n := l.parked.n.Load(); n != 0 {
		t.Fatalf("%d pushes parked, want 0", n)
	}
	l.Handle("n3", protocol.PeerFrame{Type: protocol.PeerOnline, From: "n3", User: "carol", Conn: "c-carol", Online: true, Ver: 2})
	if len(link.send) != 0 {
		t.Fatal("the read push followed carol's login: it was parked")
	}
}
