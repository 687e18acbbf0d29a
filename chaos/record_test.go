package chaos

import (
	"strings"
	"testing"

	"chatcluster/protocol"
)

// Read positions only rise: a reply below the seq sent, or below a
// position acknowledged before, is a position that went back.
func TestRecordReads(t *testing.T) {
	dmc, room := protocol.DMConv("ann", "ben"), protocol.RoomConv("lobby")
	rec := newRecord("ann", "ben")
	for range 5 {
		rec.AddReadSent()
	}
	rec.AddReadAck("ann", dmc, 3, 3)
	rec.AddReadAck("ann", dmc, 2, 3)  // lower: the stored one stays
	rec.AddReadAck("ann", room, 5, 7) // another device read further
	rec.AddReadAck("ann", dmc, 6, 2)  // went back
	rec.AddReadRefused()
	got := rec.ReadsAcked()
	if got["ann"][dmc] != 6 || got["ann"][room] != 7 || len(got) != 1 {
		t.Fatalf("acknowledged reads %v, want ann at 6 and 7", got)
	}
	rec.AddTyping(true)
	rec.AddTyping(false)
	res := Check(rec)
	if res.ReadsSent != 5 || res.ReadsAcked != 4 || res.ReadsRefused != 1 || res.ReadBack != 1 || res.OK() ||
		res.TypingSent != 2 || res.TypingFailed != 1 {
		t.Fatalf("reads and typing: %+v", res)
	}
	if want := "read position went back: ann read dm:ann:ben at 6, and the server answered that it stores 2; 3 was acknowledged before"; len(res.Problems) != 1 || res.Problems[0] != want {
		t.Fatalf("problems %q, want %q", res.Problems, want)
	}
}

// An acknowledged edit or recall is counted like a message: each
// recipient must show it, or it is lost.
func TestCheckRoomEventLost(t *testing.T) {
	rec := newRecord("ann", "ben")
	r1 := rm("r1", "ann", "lobby", "1", 1)
	e2 := edit("e2", r1, "2", 2)
	e2.Text = EditText("ann-2")
	ackRoom(rec, r1, "ann", "ben")
	rec.AddAck(Ack{Msg: e2, ClientMsgID: "ann-2 edit", Recipients: []string{"ann", "ben"}})
	for _, m := range []protocol.Message{r1, e2} {
		rec.AddArrival("ann", m, FromPush)
	}
	rec.AddArrival("ben", r1, FromPush)
	res := Check(rec)
	expect(t, res, counts{expected: 4, delivered: 3, lost: 1})
	if res.Edits != 1 || res.FinalDiffers != 1 {
		t.Fatalf("edits %d, final views differing %d; want 1, 1:\n%s", res.Edits, res.FinalDiffers, strings.Join(res.Problems, "\n"))
	}
	if !strings.Contains(strings.Join(res.Problems, "\n"), "lost: e2 (room:lobby seq 2, from ann, send ann-2 edit) was acknowledged but ben never showed it") {
		t.Fatalf("problems: %q", res.Problems)
	}
}

// An edit sent again after its reply was lost is stored twice, with one
// text: counted, no violation, as long as the final views agree.
func TestCheckEditRetried(t *testing.T) {
	rec := newRecord("ann", "ben")
	m1 := dm("m1", "ann", "ben", "1", 1)
	e2 := edit("e2", m1, "2", 2) // the first attempt: stored, its reply lost
	e3 := edit("e3", m1, "2", 3) // the second, acknowledged
	ackDM(rec, m1)
	rec.AddAck(Ack{Msg: e3, ClientMsgID: "ann-2 edit", Recipients: []string{"ben"}})
	// ann holds its second attempt from the reply, after a gap that a
	// sync filled with the first; ben gets both as pushes.
	rec.AddArrival("ann", m1, FromAck)
	rec.AddArrival("ann", e2, FromSync)
	rec.AddArrival("ann", e3, FromAck)
	for _, m := range []protocol.Message{m1, e2, e3} {
		rec.AddArrival("ben", m, FromPush)
	}
	res := Check(rec)
	expect(t, res, counts{expected: 2, delivered: 2})
	if res.EditRepeats != 1 || res.Unacked != 2 || res.FinalDiffers != 0 || res.FinalChecked != 2 {
		t.Fatalf("edit repeats %d, unacknowledged shown %d, final views differing %d of %d; want 1, 2, 0 of 2:\n%s",
			res.EditRepeats, res.Unacked, res.FinalDiffers, res.FinalChecked, strings.Join(res.Problems, "\n"))
	}
}

// A recall answered "recalled already" landed the first time: every final
// view must show its message recalled.
func TestCheckRecallLanded(t *testing.T) {
	m1 := dm("m1", "ann", "ben", "1", 1)
	r2 := recall("r2", m1, 2)
	setup := func() *Record {
		rec := newRecord("ann", "ben")
		ackDM(rec, m1)
		rec.AddArrival("ann", m1, FromAck)
		rec.AddArrival("ben", m1, FromPush)
		rec.AddRecallLanded("ann", m1.Conv, 1)
		return rec
	}

	rec := setup()
	rec.AddArrival("ann", r2, FromSync)
	rec.AddArrival("ben", r2, FromPush)
	if res := Check(rec); res.RecallsLanded != 1 || res.FinalDiffers != 0 || !res.OK() || res.Unacked != 2 {
		t.Fatalf("recall landed and shown: %+v", res)
	}

	// Nobody shows the recall: the message is not recalled anywhere.
	res := Check(setup())
	if res.FinalDiffers != 1 || res.OK() || !strings.Contains(strings.Join(res.Problems, "\n"), `ann's recall of dm:ann:ben seq 1 was answered "recalled already", but no recall of it is known`) {
		t.Fatalf("recall landed, never shown: %+v", res)
	}

	// ben alone missed it.
	rec = setup()
	rec.AddArrival("ann", r2, FromSync)
	res = Check(rec)
	if res.FinalDiffers != 2 || !strings.Contains(strings.Join(res.Problems, "\n"), `ben shows dm:ann:ben seq 1 as "chaos ann-1", though ann's recall of it was answered "recalled already"`) {
		t.Fatalf("recall landed, missed by ben: final views differing %d (want 2: against the events known, and the recall):\n%s",
			res.FinalDiffers, strings.Join(res.Problems, "\n"))
	}
}

// The checkpoints' comparisons add up in the result; a skipped one is
// listed with its reason.
func TestCheckCheckpoints(t *testing.T) {
	rec := newRecord("ann")
	rec.AddCheckpoint(CheckpointResult{Name: "after fault 1 (Redis restart)", Compared: 10})
	rec.AddCheckpoint(CheckpointResult{Name: "after fault 2 (kill -9 leader)", Skipped: "clients [c1] did not settle"})
	bad := CheckpointResult{Name: "at the end", Compared: 12, Differs: 1, ReadsChecked: 4, ReadBack: 1, Retaken: true}
	bad.problem("ann shows dm:ann:ben seq 2 as no message; the server has \"x\" (as it answered ann)")
	rec.AddCheckpoint(bad)
	res := Check(rec)
	if res.Checkpoints != 2 || res.CheckpointsSkipped != 1 || res.CheckpointsRetaken != 1 || res.FinalChecked != 22 ||
		res.FinalDiffers != 1 || res.ReadsChecked != 4 || res.ReadBack != 1 || res.OK() {
		t.Fatalf("checkpoints: %+v", res)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].Skipped != "clients [c1] did not settle" {
		t.Fatalf("skipped: %+v", res.Skipped)
	}
	if len(res.Problems) != 1 || res.Problems[0] != `checkpoint at the end: ann shows dm:ann:ben seq 2 as no message; the server has "x" (as it answered ann)` {
		t.Fatalf("problems %q", res.Problems)
	}
}
