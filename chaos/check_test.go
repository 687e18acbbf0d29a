package chaos

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"chatcluster/protocol"
)

// Hand-made records, each with one kind of violation (or none): the
// checker must count exactly what is wrong.

// dm is a direct message of send from-n, stored as id with seq.
func dm(id, from, to string, n string, seq int64) protocol.Message {
	return protocol.Message{ID: id, Conv: protocol.DMConv(from, to), Seq: seq, From: from, To: to, Text: Text(from + "-" + n), TS: 1000 + seq}
}

// rm is a room message of send from-n, stored as id with seq.
func rm(id, from, room string, n string, seq int64) protocol.Message {
	return protocol.Message{ID: id, Conv: protocol.RoomConv(room), Seq: seq, From: from, Room: room, Text: Text(from + "-" + n), TS: 1000 + seq}
}

func ackDM(rec *Record, m protocol.Message) {
	rec.AddAck(Ack{Msg: m, ClientMsgID: strings.TrimPrefix(m.Text, textPrefix), Recipients: []string{m.To}})
}

func ackRoom(rec *Record, m protocol.Message, members ...string) {
	rec.AddAck(Ack{Msg: m, ClientMsgID: strings.TrimPrefix(m.Text, textPrefix), Recipients: members})
}

func newRecord(users ...string) *Record {
	rec := NewRecord()
	for _, u := range users {
		rec.AddClient(u)
	}
	return rec
}

type counts struct{ expected, delivered, lost, dups, ooo int }

func expect(t *testing.T, res Result, want counts) {
	t.Helper()
	got := counts{res.Expected, res.Delivered, res.Lost, res.Duplicates, res.OutOfOrder}
	if got != want {
		t.Errorf("got %+v, want %+v; problems:\n%s", got, want, strings.Join(res.Problems, "\n"))
	}
	if res.OK() != (want.lost == 0 && want.dups == 0 && want.ooo == 0) {
		t.Errorf("OK() = %v for %+v", res.OK(), want)
	}
}

func TestCheckCleanRun(t *testing.T) {
	rec := newRecord("ann", "ben", "cy")
	m1 := dm("m1", "ann", "ben", "1", 1)
	m2 := dm("m2", "ben", "ann", "1", 2)
	r1 := rm("r1", "ann", "lobby", "2", 1)
	r2 := rm("r2", "cy", "lobby", "1", 2)
	ackDM(rec, m1)
	ackDM(rec, m2)
	ackRoom(rec, r1, "ann", "ben", "cy")
	ackRoom(rec, r2, "ann", "ben", "cy")

	rec.AddArrival("ann", m1, FromAck)
	rec.AddArrival("ann", m2, FromPush)
	rec.AddArrival("ann", r1, FromPush)
	rec.AddArrival("ann", r2, FromPush)
	rec.AddArrival("ann", r1, FromSync) // after a reconnect: held already
	rec.AddArrival("ann", r2, FromSync)

	rec.AddArrival("ben", m1, FromPush)
	rec.AddArrival("ben", m2, FromAck)
	rec.AddArrival("ben", r1, FromSync)
	rec.AddArrival("ben", r2, FromSync)
	rec.AddArrival("ben", r2, FromPush) // the push after the sync

	rec.AddArrival("cy", r1, FromPush)
	rec.AddArrival("cy", r2, FromPush)

	res := Check(rec)
	expect(t, res, counts{expected: 8, delivered: 8})
	if res.Acked != 4 || res.Raw != 11 || res.Redelivered != 3 || res.HiddenOther != 0 || res.Unacked != 0 {
		t.Errorf("information: %+v", res)
	}
}

func TestCheckLostNeverArrived(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	ackDM(rec, m1)
	rec.AddArrival("ann", m1, FromAck) // the sender's own copy is no delivery
	res := Check(rec)
	expect(t, res, counts{expected: 1, lost: 1})
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0], "never reached ben") {
		t.Errorf("problems: %q", res.Problems)
	}
}

// A message still waiting behind a gap at the end is not shown; the
// violation says where it was.
func TestCheckLostWhileWaiting(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	m2 := dm("m2", "ann", "ben", "2", 2)
	ackDM(rec, m1)
	ackDM(rec, m2)
	rec.AddWaiting("ben", m2, FromPush)
	res := Check(rec)
	expect(t, res, counts{expected: 2, lost: 2})
	if !strings.Contains(strings.Join(res.Problems, "\n"), "push at seq 2, still waiting at the end") {
		t.Errorf("waiting message not described: %q", res.Problems)
	}
}

// A room message must be shown to its sender too: the chat reply does not
// count, only a push or a sync.
func TestCheckLostRoomSender(t *testing.T) {
	rec := newRecord("ann", "ben")
	r1 := rm("r1", "ann", "lobby", "1", 1)
	ackRoom(rec, r1, "ann", "ben")
	rec.AddArrival("ben", r1, FromPush)
	expect(t, Check(rec), counts{expected: 2, delivered: 1, lost: 1})
}

// A push of seq 2 shown before seq 1: seq 1 is passed over, and when it
// comes it is at or below the offset, so a client never shows it.
func TestCheckOutOfOrderAndLost(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	m2 := dm("m2", "ann", "ben", "2", 2)
	ackDM(rec, m1)
	ackDM(rec, m2)
	rec.AddArrival("ben", m2, FromPush)
	rec.AddArrival("ben", m1, FromPush)
	res := Check(rec)
	expect(t, res, counts{expected: 2, delivered: 1, lost: 1, ooo: 1})
	if res.HiddenOther != 1 {
		t.Errorf("hidden other %d, want 1", res.HiddenOther)
	}
	if !strings.Contains(strings.Join(res.Problems, "\n"), "push at seq 1 hidden (offset 2)") {
		t.Errorf("lost message's arrival not described: %q", res.Problems)
	}
}

// Seq numbers that hold no acknowledged message for the recipient (a gap
// the server leaves after Redis lost its data, or the recipient's own
// direct messages it already holds) may be skipped.
func TestCheckSkipWithoutAcknowledgedMessageIsInOrder(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	m2 := dm("m2", "ann", "ben", "2", 1002)
	ackDM(rec, m1)
	ackDM(rec, m2)
	rec.AddArrival("ben", m1, FromPush)
	rec.AddArrival("ben", m2, FromSync)
	expect(t, Check(rec), counts{expected: 2, delivered: 2})
}

// A client's own direct message taken over a gap passes over the other's
// message, which it then hides.
func TestCheckOwnAckOverGap(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ben", "ann", "1", 1)
	m2 := dm("m2", "ann", "ben", "1", 2)
	ackDM(rec, m1)
	ackDM(rec, m2)
	rec.AddArrival("ann", m2, FromAck)
	rec.AddArrival("ann", m1, FromPush)
	rec.AddArrival("ben", m1, FromAck)
	rec.AddArrival("ben", m2, FromPush)
	expect(t, Check(rec), counts{expected: 2, delivered: 1, lost: 1, ooo: 1})
}

// The same message id at two seqs: shown twice.
func TestCheckDuplicateByID(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	ackDM(rec, m1)
	again := m1
	again.Seq = 2
	rec.AddArrival("ben", m1, FromPush)
	rec.AddArrival("ben", again, FromSync)
	// Shown twice, the second time at a seq it was not acknowledged with.
	expect(t, Check(rec), counts{expected: 1, delivered: 1, dups: 1, ooo: 1})
}

// One send stored twice (its resend was not recognised): the recipient
// shows the same send under two ids.
func TestCheckDuplicateSend(t *testing.T) {
	rec := newRecord("ann", "ben")
	first := dm("m1", "ann", "ben", "1", 1) // stored, reply lost
	second := dm("m2", "ann", "ben", "1", 2)
	ackDM(rec, second)
	rec.AddArrival("ben", first, FromPush)
	rec.AddArrival("ben", second, FromPush)
	res := Check(rec)
	expect(t, res, counts{expected: 1, delivered: 1, dups: 1})
	if res.Unacked != 1 {
		t.Errorf("unacked %d, want 1", res.Unacked)
	}
}

// Shown at another seq than acknowledged.
func TestCheckWrongSeq(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	ackDM(rec, m1)
	moved := m1
	moved.Seq = 5
	rec.AddArrival("ben", moved, FromSync)
	expect(t, Check(rec), counts{expected: 1, delivered: 1, ooo: 1})
}

// Two acknowledged messages with one seq: a recipient shows one of them.
func TestCheckSeqConflict(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	m2 := dm("m2", "ann", "ben", "2", 1)
	ackDM(rec, m1)
	ackDM(rec, m2)
	rec.AddArrival("ben", m1, FromPush)
	rec.AddArrival("ben", m2, FromSync)
	res := Check(rec)
	expect(t, res, counts{expected: 2, delivered: 1, lost: 1})
	if res.SeqConflicts != 1 {
		t.Errorf("seq conflicts %d, want 1", res.SeqConflicts)
	}
}

// Two sends acknowledged with one message: one of them is lost.
func TestCheckTwoSendsOneMessage(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	ackDM(rec, m1)
	rec.AddAck(Ack{Msg: m1, ClientMsgID: "ann-2", Recipients: []string{"ben"}})
	rec.AddArrival("ben", m1, FromPush)
	expect(t, Check(rec), counts{expected: 2, delivered: 1, lost: 1})
}

func TestCheckListsAtMostMaxProblems(t *testing.T) {
	rec := newRecord("ann", "ben")
	for i := range maxProblems + 5 {
		ackDM(rec, dm("m"+string(rune('a'+i)), "ann", "ben", "x", int64(i+1)))
	}
	res := Check(rec)
	if res.Lost != maxProblems+5 || len(res.Problems) != maxProblems || res.Unlisted != 5 {
		t.Errorf("lost %d, listed %d, unlisted %d", res.Lost, len(res.Problems), res.Unlisted)
	}
}

// edit is an edit event of from's message at ref, stored as id with seq.
func edit(id string, of protocol.Message, n string, seq int64) protocol.Message {
	e := of
	e.ID, e.Seq, e.Kind, e.Ref, e.Text, e.TS = id, seq, protocol.KindEdit, of.Seq, Text(of.From+"-"+n), 1000+seq
	return e
}

// recall is a recall event of the message of, stored as id with seq.
func recall(id string, of protocol.Message, seq int64) protocol.Message {
	e := of
	e.ID, e.Seq, e.Kind, e.Ref, e.Text, e.TS = id, seq, protocol.KindRecall, of.Seq, "", 1000+seq
	return e
}

func TestCheckFinalViews(t *testing.T) {
	m1 := dm("m1", "ann", "ben", "1", 1)
	m2 := dm("m2", "ann", "ben", "2", 2)
	e3 := edit("e3", m1, "3", 3)
	r4 := recall("r4", m2, 4)
	setup := func() *Record {
		rec := newRecord("ann", "ben")
		for _, m := range []protocol.Message{m1, m2, e3, r4} {
			ackDM(rec, m)
			rec.AddArrival("ann", m, FromAck)
		}
		return rec
	}

	t.Run("live", func(t *testing.T) {
		rec := setup()
		for _, m := range []protocol.Message{m1, m2, e3, r4} {
			rec.AddArrival("ben", m, FromPush)
		}
		res := Check(rec)
		expect(t, res, counts{expected: 4, delivered: 4})
		if res.FinalChecked != 4 || res.FinalDiffers != 0 || res.Edits != 1 || res.Recalls != 1 {
			t.Errorf("final checked %d differs %d edits %d recalls %d; want 4, 0, 1, 1:\n%s", res.FinalChecked, res.FinalDiffers, res.Edits, res.Recalls, strings.Join(res.Problems, "\n"))
		}
	})

	t.Run("synced after the events", func(t *testing.T) {
		// ben was away: its sync returns the messages in their final
		// state, then the events.
		rec := setup()
		s1 := m1
		s1.Text, s1.Edited = e3.Text, e3.TS
		s2 := m2
		s2.Text, s2.Recalled = "", true
		for _, m := range []protocol.Message{s1, s2, e3, r4} {
			rec.AddArrival("ben", m, FromSync)
		}
		res := Check(rec)
		expect(t, res, counts{expected: 4, delivered: 4})
		if res.FinalDiffers != 0 {
			t.Errorf("final views differ: %s", strings.Join(res.Problems, "\n"))
		}
	})

	t.Run("an event missed", func(t *testing.T) {
		// ben never shows the edit: lost, and its final view of m1 is
		// the old text.
		rec := setup()
		for _, m := range []protocol.Message{m1, m2, r4} {
			rec.AddArrival("ben", m, FromPush)
		}
		res := Check(rec)
		expect(t, res, counts{expected: 4, delivered: 3, lost: 1, ooo: 1})
		if res.FinalDiffers != 1 {
			t.Errorf("final views differing %d, want 1 (ben's m1):\n%s", res.FinalDiffers, strings.Join(res.Problems, "\n"))
		}
	})

	t.Run("a stored edit whose reply was lost", func(t *testing.T) {
		// The second edit was stored but never acknowledged: both
		// clients show it, and both end at its text.
		rec := setup()
		e5 := edit("e5", m1, "5", 5)
		rec.AddArrival("ann", e5, FromPush)
		for _, m := range []protocol.Message{m1, m2, e3, r4, e5} {
			rec.AddArrival("ben", m, FromPush)
		}
		res := Check(rec)
		if res.FinalDiffers != 0 || res.Lost != 0 {
			t.Errorf("final views differing %d, lost %d; want 0:\n%s", res.FinalDiffers, res.Lost, strings.Join(res.Problems, "\n"))
		}
	})
}

// What a client gives back while a gap settles: what it shows and what
// waits, above the floor, each seq once, in order.
func TestAboveFloor(t *testing.T) {
	m := func(seq int64) protocol.Message { return protocol.Message{ID: fmt.Sprint("m", seq), Seq: seq} }
	got := aboveFloor([]protocol.Message{m(3), m(5), m(7)}, []waiting{{m: m(1002)}, {m: m(7)}, {m: m(1001)}}, 4)
	var seqs []int64
	for _, x := range got {
		seqs = append(seqs, x.Seq)
	}
	if want := []int64{5, 7, 1001, 1002}; !slices.Equal(seqs, want) {
		t.Fatalf("aboveFloor = %v, want %v", seqs, want)
	}
}
