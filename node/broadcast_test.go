package node

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"chatcluster/metrics"
	"chatcluster/protocol"
	"chatcluster/session"
)

// localRecipients returns a server with n logged-in local clients whose
// send queues hold one frame, and their names.
func localRecipients(n int) (*Server, []string, []*client) {
	s := &Server{local: session.NewLocal[*client](), log: zerolog.Nop(),
		m: metrics.NewNode(prometheus.NewRegistry(), metrics.NodeSources{})}
	users := make([]string, n)
	clients := make([]*client, n)
	for i := range users {
		users[i] = fmt.Sprintf("user%04d", i)
		c := &client{srv: s, id: users[i], send: heldQueue(1, 1<<20, time.Hour), closing: make(chan struct{})}
		c.user.Store(&users[i])
		s.local.Add(c)
		clients[i] = c
	}
	return s, users, clients
}

func roomMessage() *protocol.Message {
	return &protocol.Message{ID: "mjuohs2s-c83515199ead7b82", Conv: "room:lobby", Seq: 42, From: "alice", Room: "lobby", Text: "hello everyone in the lobby", TS: 1767225600100}
}

// Every local recipient gets the same encoded bytes, once.
func TestDeliverLocalSharesOneEncoding(t *testing.T) {
	s, users, clients := localRecipients(3)
	s.deliverLocal(slices.Values(append(users, "absent")), roomMessage())
	var first []byte
	for i, c := range clients {
		got := c.send.take(nil)
		if len(got) != 1 {
			t.Fatalf("recipient %d got %d frames, want 1", i, len(got))
		}
		if b := got[0]; i == 0 {
			first = b
		} else if &b[0] != &first[0] {
			t.Fatalf("recipient %d got its own copy of the frame", i)
		}
	}
	want, _ := protocol.EncodePush(protocol.PushMessage, *roomMessage())
	if string(first) != string(want) {
		t.Fatalf("pushed %s, want %s", first, want)
	}
	if n := testutil.ToFloat64(s.m.PushMessage); n != 3 {
		t.Fatalf("chat_pushes_out_total{kind=message} = %v, want 3", n)
	}
}

// BenchmarkRoomBroadcast measures a node handing one room message to its
// local recipients: the frame is encoded once and the same bytes go to
// every recipient's queue, so allocations do not grow with recipients.
// The "fromLeader" variant starts from the leader's frame as it arrives on
// the peer link, decoding included.
func BenchmarkRoomBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		s, users, clients := localRecipients(n)
		spares := make([][][]byte, n) // what the write loops would swap
		m := roomMessage()
		b.Run(fmt.Sprintf("local/recipients=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.Seq++ // a new message each time: a repeat is not pushed
				s.deliverLocal(slices.Values(users), m)
				for i, c := range clients {
					spares[i] = c.send.take(spares[i])
				}
			}
		})
		frame, err := protocol.EncodePeer(&protocol.PeerFrame{Type: protocol.PeerDeliver, Epoch: 7, From: "n1", Recipients: protocol.JoinNames(users), Message: m})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("fromLeader/recipients=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			seq := int64(0)
			for b.Loop() {
				f, err := protocol.DecodePeer(frame)
				if err != nil {
					b.Fatal(err)
				}
				seq++
				f.Message.Seq = seq // a new message each time: a repeat is not pushed
				s.deliverLocal(protocol.Names(f.Recipients), f.Message)
				for i, c := range clients {
					spares[i] = c.send.take(spares[i])
				}
			}
		})
	}
}
