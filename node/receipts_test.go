package node

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"chatcluster/protocol"
)

// A push that may be lost is queued only while the client has caught up,
// and never makes a client too slow: the pushes that matter still go in.
func TestLossyPushYieldsToAFillingQueue(t *testing.T) {
	q := heldQueue(1024, 1<<20, 0)
	typing := []byte(`{"action":"typing","data":{"conv":"room:lobby","from":"alice"}}`)
	for i := range lossyFrames {
		if ok, _ := q.pushLossy(typing); !ok {
			t.Fatalf("lossy push %d into a queue of %d refused", i, i)
		}
	}
	if ok, _ := q.pushLossy(typing); ok {
		t.Fatalf("lossy push into a queue of %d frames accepted", lossyFrames)
	}
	if _, err := q.push([]byte("reply")); err != nil {
		t.Fatalf("a push that matters after lossy ones: %v", err)
	}
	q.take(nil)
	if ok, _ := q.pushLossy(typing); !ok {
		t.Fatal("lossy push into a drained queue refused")
	}
	// The byte bound: a small part of the queue's.
	small := heldQueue(1024, 16*len(typing), 0)
	if ok, _ := small.pushLossy(typing); !ok {
		t.Fatal("lossy push into an empty queue refused")
	}
	if ok, _ := small.pushLossy(typing); ok {
		t.Fatal("lossy push past a sixteenth of the byte bound accepted")
	}
	// A queue with a low frame bound keeps that bound.
	low := heldQueue(2, 1<<20, 0)
	low.pushLossy(typing)
	low.pushLossy(typing)
	if ok, _ := low.pushLossy(typing); ok {
		t.Fatal("lossy push past the queue's own frame bound accepted")
	}
}

// Typing reaches local recipients while their queues have room, and is
// counted dropped for the others.
func TestDeliverSignal(t *testing.T) {
	s, users, clients := localRecipients(2)
	for range lossyFrames {
		clients[1].send.push([]byte("x"))
	}
	push := []byte(`{"action":"typing","data":{"conv":"room:lobby","from":"alice"}}`)
	s.deliverSignal(slices.Values(append(users, "absent")), push)
	if got := clients[0].send.take(nil); len(got) != 1 || string(got[0]) != string(push) {
		t.Fatalf("recipient with room got %q", got)
	}
	if got := clients[1].send.take(nil); len(got) != lossyFrames {
		t.Fatalf("recipient with a filling queue holds %d frames, want the %d it had", len(got), lossyFrames)
	}
	if n := testutil.ToFloat64(s.m.PushTyping); n != 1 {
		t.Fatalf("typing pushes = %v, want 1", n)
	}
	if n := testutil.ToFloat64(s.m.SignalDropped); n != 1 {
		t.Fatalf("typing dropped = %v, want 1", n)
	}
	// A read push delivered from the leader counts as a read push.
	read, _ := protocol.EncodePush(protocol.PushRead, protocol.ReadPush{Conv: "dm:a:b", User: "a", Seq: 1})
	s.deliverRaw(slices.Values(users[:1]), read, "")
	if n := testutil.ToFloat64(s.m.PushRead); n != 1 {
		t.Fatalf("read pushes = %v, want 1", n)
	}
}
