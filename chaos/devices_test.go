package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"

	"chatcluster/protocol"
)

// Users with several devices: each device is a client of its own, with
// its own view, and must show what reaches its user.

// deviceRecord has ann on two devices, ben on two and cy on one.
func deviceRecord() *Record {
	rec := NewRecord()
	rec.AddDevice("ann.d1", "ann")
	rec.AddDevice("ann.d2", "ann")
	rec.AddDevice("ben.d1", "ben")
	rec.AddDevice("ben.d2", "ben")
	rec.AddClient("cy")
	return rec
}

func ackFrom(rec *Record, device string, m protocol.Message, recipients ...string) {
	rec.AddAck(Ack{Msg: m, ClientMsgID: strings.TrimPrefix(m.Text, textPrefix), Recipients: recipients, Device: device})
}

func TestRecordExpectedDevices(t *testing.T) {
	rec := deviceRecord()
	m := dm("m1", "ann", "ben", "1", 1)
	r := rm("r1", "ann", "lobby", "1", 1)
	edit := protocol.Message{ID: "e1", Conv: m.Conv, Seq: 2, From: "ann", To: "ben", Kind: protocol.KindEdit, Ref: 1, Text: EditText("x")}
	for _, c := range []struct {
		name string
		ack  Ack
		want []string
	}{
		// The recipient's devices and the sender's other one; not the
		// sending device, which has the reply.
		{"direct", Ack{Msg: m, Recipients: []string{"ben"}, Device: "ann.d1"}, []string{"ann.d2", "ben.d1", "ben.d2"}},
		{"direct event", Ack{Msg: edit, Recipients: []string{"ben"}, Device: "ann.d2"}, []string{"ann.d1", "ben.d1", "ben.d2"}},
		// Every device of every member, the sending one included.
		{"room", Ack{Msg: r, Recipients: []string{"ann", "ben", "cy"}, Device: "ann.d1"}, []string{"ann.d1", "ann.d2", "ben.d1", "ben.d2", "cy"}},
		// A user with one client named like it: as before.
		{"one device", Ack{Msg: dm("m2", "cy", "ann", "1", 1), Recipients: []string{"ann"}}, []string{"ann.d1", "ann.d2"}},
		{"to one device", Ack{Msg: dm("m3", "ann", "cy", "1", 1), Recipients: []string{"cy"}, Device: "ann.d1"}, []string{"ann.d2", "cy"}},
	} {
		if got := rec.Expected(c.ack); !slices.Equal(got, c.want) {
			t.Errorf("%s: expected %v, want %v", c.name, got, c.want)
		}
	}
	if got := rec.DeviceCounts(); len(got) != 2 || got[2] != 2 || got[1] != 1 {
		t.Errorf("device counts %v, want 2 users with 2, 1 with 1", got)
	}
	if rec.UserOf("ben.d2") != "ben" || rec.UserOf("cy") != "cy" {
		t.Errorf("users of clients wrong")
	}
}

func TestCheckDevicesClean(t *testing.T) {
	rec := deviceRecord()
	m1 := dm("m1", "ann", "ben", "1", 1)
	ackFrom(rec, "ann.d1", m1, "ben")
	r1 := rm("r1", "ben", "lobby", "1", 1)
	ackFrom(rec, "ben.d2", r1, "ann", "ben", "cy")

	rec.AddArrival("ann.d1", m1, FromAck)
	rec.AddArrival("ann.d2", m1, FromPush)
	rec.AddArrival("ann.d2", m1, FromSync) // after its own reconnect: held already
	rec.AddArrival("ben.d1", m1, FromPush)
	rec.AddArrival("ben.d2", m1, FromSync)
	for _, c := range []string{"ann.d1", "ann.d2", "ben.d1", "ben.d2", "cy"} {
		rec.AddArrival(c, r1, FromPush)
	}
	res := Check(rec)
	expect(t, res, counts{expected: 3 + 5, delivered: 3 + 5})
	if res.Redelivered != 1 || res.Devices[2] != 2 || res.Devices[1] != 1 {
		t.Errorf("information: %+v", res)
	}
}

// A device that misses what its user got on the other device lost it;
// one that shows it twice shows a duplicate, though each of the user's
// devices shows it once.
func TestCheckDevicesLostAndDuplicate(t *testing.T) {
	rec := deviceRecord()
	m1 := dm("m1", "ann", "ben", "1", 1)
	ackFrom(rec, "ann.d1", m1, "ben")
	rec.AddArrival("ann.d1", m1, FromAck)
	rec.AddArrival("ben.d1", m1, FromPush)
	rec.AddArrival("ben.d2", m1, FromPush)
	// ann.d2, the sender's other device, never gets it.
	res := Check(rec)
	expect(t, res, counts{expected: 3, delivered: 2, lost: 1})
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0], "never reached ann.d2") {
		t.Errorf("problems: %q", res.Problems)
	}

	rec = deviceRecord()
	r1 := rm("r1", "cy", "lobby", "1", 1)
	ackFrom(rec, "cy", r1, "ann", "cy")
	rec.AddArrival("cy", r1, FromPush)
	rec.AddArrival("ann.d1", r1, FromPush)
	rec.AddArrival("ann.d2", r1, FromPush)
	// Another id for the same send, shown by one device only.
	again := r1
	again.ID, again.Seq = "r1b", 2
	rec.AddArrival("ann.d2", again, FromPush)
	res = Check(rec)
	expect(t, res, counts{expected: 3, delivered: 3, dups: 1})
	if !strings.Contains(strings.Join(res.Problems, "\n"), "duplicate: ann.d2 showed send cy-1 again") {
		t.Errorf("problems: %q", res.Problems)
	}
}

// A device that passes over a message its user's other device showed
// shows it out of order, and an edit one device never gets leaves its
// final view behind.
func TestCheckDevicesOrderAndFinal(t *testing.T) {
	rec := deviceRecord()
	m1 := dm("m1", "ben", "ann", "1", 1)
	m2 := dm("m2", "ben", "ann", "2", 2)
	edit := protocol.Message{ID: "e1", Conv: m1.Conv, Seq: 3, From: "ben", To: "ann", Kind: protocol.KindEdit, Ref: 1, Text: EditText("ben.d1-9")}
	ackFrom(rec, "ben.d1", m1, "ann")
	ackFrom(rec, "ben.d1", m2, "ann")
	rec.AddAck(Ack{Msg: edit, ClientMsgID: "ben.d1-9 edit", Recipients: []string{"ann"}, Device: "ben.d1"})
	for _, m := range []protocol.Message{m1, m2, edit} {
		rec.AddArrival("ben.d1", m, FromAck)
		rec.AddArrival("ben.d2", m, FromPush)
		rec.AddArrival("ann.d1", m, FromPush)
	}
	rec.AddArrival("ann.d2", m2, FromPush) // passed over seq 1, and never got the edit
	res := Check(rec)
	expect(t, res, counts{expected: 9, delivered: 7, lost: 2, ooo: 1})
	if res.FinalDiffers != 0 {
		// ann.d2 holds no seq 1, so its final view has nothing to differ.
		t.Errorf("final differs %d: %q", res.FinalDiffers, res.Problems)
	}
	all := strings.Join(res.Problems, "\n")
	for _, want := range []string{"out of order: ann.d2 showed dm:ann:ben seq 2", "ann.d2 never showed it"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}

	// With seq 1 but without the edit, ann.d2 shows the old text.
	rec = deviceRecord()
	ackFrom(rec, "ben.d1", m1, "ann")
	rec.AddAck(Ack{Msg: edit, ClientMsgID: "ben.d1-9 edit", Recipients: []string{"ann"}, Device: "ben.d1"})
	for _, m := range []protocol.Message{m1, edit} {
		rec.AddArrival("ben.d1", m, FromAck)
		rec.AddArrival("ben.d2", m, FromSync)
		rec.AddArrival("ann.d1", m, FromPush)
	}
	rec.AddArrival("ann.d2", m1, FromPush)
	res = Check(rec)
	if res.Lost != 1 || res.FinalDiffers != 1 || !strings.Contains(strings.Join(res.Problems, "\n"), "final view: ann.d2 shows dm:ann:ben seq 1") {
		t.Errorf("lost %d, final differs %d: %q", res.Lost, res.FinalDiffers, res.Problems)
	}
}

// The read position is the user's: a reply to one device's read recorded
// after a later, higher one of the other device did not go back.
func TestRecordReadsAcrossDevices(t *testing.T) {
	rec := deviceRecord()
	conv := protocol.DMConv("ann", "ben")
	beforeD1 := rec.ReadAcked("ann", conv) // ann.d1 sends read 9...
	beforeD2 := rec.ReadAcked("ann", conv) // ...ann.d2 sends read 12
	rec.AddReadAckSince("ann", conv, 12, 12, beforeD2)
	rec.AddReadAckSince("ann", conv, 9, 9, beforeD1) // answered before the other, recorded after
	if got := rec.ReadAcked("ann", conv); got != 12 {
		t.Errorf("position %d, want 12", got)
	}
	if res := Check(rec); res.ReadBack != 0 {
		t.Errorf("read back: %q", res.Problems)
	}
	// Sent after 12 was acknowledged, answered 9: went back.
	rec.AddReadAckSince("ann", conv, 10, 9, rec.ReadAcked("ann", conv))
	if res := Check(rec); res.ReadBack != 1 || !strings.Contains(res.Problems[0], "12 was acknowledged before") {
		t.Errorf("read back %d: %q", res.ReadBack, res.Problems)
	}
}

// At a checkpoint, every device of the user gives the user's read
// position back, and every device of the other user its peerRead.
func TestCheckSnapshotDeviceReads(t *testing.T) {
	dmc := protocol.DMConv("ann", "ben")
	st := map[int64]State{1: {Text: "chaos ann.d1-1"}}
	s := Snapshot{Name: "at the end",
		Views:  map[string]map[string]map[int64]State{},
		Server: map[string]map[string]map[int64]State{},
		Reads: map[string]map[string]ReadPos{
			"ann.d1": {dmc: {Read: 1, PeerRead: 1}},
			"ann.d2": {dmc: {Read: 0, PeerRead: 1}}, // went back
			"ben":    {dmc: {Read: 1, PeerRead: 1}},
		},
		AckedReads: map[string]map[string]int64{"ann": {dmc: 1}, "ben": {dmc: 1}},
		Users:      map[string]string{"ann.d1": "ann", "ann.d2": "ann"},
	}
	for _, c := range []string{"ann.d1", "ann.d2", "ben"} {
		s.Views[c] = map[string]map[int64]State{dmc: st}
		s.Server[c] = map[string]map[int64]State{dmc: st}
	}
	res := CompareSnapshot(s)
	// ann's read at her 2 devices and at ben's (peerRead); ben's at his
	// and at ann's 2.
	if res.ReadsChecked != 6 || res.ReadBack != 1 || res.Differs != 0 || res.Compared != 5 {
		t.Fatalf("result %+v", res)
	}
	if want := "the server gives ann's read of dm:ann:ben as 0 to ann.d2; 1 was acknowledged"; !strings.Contains(res.Problems[0], want) {
		t.Errorf("problem %q lacks %q", res.Problems[0], want)
	}
}

// A kick of a connection its client had left, for the reason a login of
// its own device gives, is expected; any other kick is a violation.
func TestCheckKicks(t *testing.T) {
	rec := deviceRecord()
	rec.AddKick("ann.d1", protocol.KickSameDevice, true, protocol.KickSameDevice)
	if res := Check(rec); !res.OK() || res.UnexpectedKicks != 0 || res.KicksAway != 1 || res.Kicks[protocol.KickSameDevice] != 1 {
		t.Fatalf("an expected kick: %+v", res)
	}
	rec.AddKick("ann.d2", protocol.KickSameDevice, false, protocol.KickSameDevice)
	rec.AddKick("ben.d1", protocol.KickTooManyDevices(5), true, protocol.KickSameDevice)
	res := Check(rec)
	if res.OK() || res.UnexpectedKicks != 2 || res.KicksAway != 1 || res.Kicks[protocol.KickSameDevice] != 2 {
		t.Fatalf("unexpected kicks: %+v", res)
	}
	all := strings.Join(res.Problems, "\n")
	for _, want := range []string{"ann.d2 was kicked on its live connection", "ben.d1 was kicked while reconnecting with reason \"logged in on more than 5 devices"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	table := Report{Clients: 5, Users: 3, Login: "multi", Nodes: 3, Rounds: 1, Elapsed: time.Minute, Result: res}.Table()
	for _, want := range []string{
		"5 clients (devices of 3 users), login policy multi",
		"unexpected kicks                    2  must be 0",
		"users with 1 device                 1",
		"users with 2 devices                2",
		`kicked                              2  info: reason "logged in again on this device"`,
		"kicked while reconnecting           1",
		"result: FAIL",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}
