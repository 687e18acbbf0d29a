package chaos

import (
	"strings"
	"testing"

	"chatcluster/protocol"
)

// A message as a sync reads it back after events: edited, or recalled.
func readBackEdited(m, e protocol.Message) protocol.Message {
	m.Text, m.Edited = e.Text, e.TS
	return m
}

func readBackRecalled(m protocol.Message) protocol.Message {
	m.Text, m.Recalled = "", true
	return m
}

// What a client holds (messages as they came, events applied) and what
// the server reads back (every message in its final state) come to the
// same state; member events and the events themselves are no messages.
func TestViewServerState(t *testing.T) {
	m1 := dm("m1", "ann", "ben", "1", 1)
	m2 := dm("m2", "ann", "ben", "2", 2)
	e3 := edit("e3", m1, "3", 3)
	r4 := recall("r4", m2, 4)
	e5 := edit("e5", m1, "5", 5)
	v := NewView()
	for _, m := range []protocol.Message{m1, m2, e3, r4, e5} {
		v.Accept(m)
	}
	// An edit of a recalled message reads back recalled, without its text.
	server := ServerState([]protocol.Message{readBackEdited(m1, e5), readBackRecalled(m2), e3, r4, e5,
		{ID: "j6", Conv: m1.Conv, Seq: 6, From: "cy", Kind: protocol.KindJoin}})
	want := map[int64]State{1: {Text: e5.Text, Edited: true}, 2: {Recalled: true}}
	got := v.Final(m1.Conv)
	if len(got) != 2 || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("client's final view %v, want %v", got, want)
	}
	if len(server) != 2 || server[1] != want[1] || server[2] != want[2] {
		t.Fatalf("server's state %v, want %v", server, want)
	}
}

// snapshot is a clean checkpoint: ann and ben in their direct conversation
// and a room with cy, all agreeing with the server, read positions as
// acknowledged.
func snapshot() Snapshot {
	dmc, room := protocol.DMConv("ann", "ben"), protocol.RoomConv("lobby")
	dmState := map[int64]State{1: {Text: "chaos ann-1"}, 2: {Text: "chaos edit ann-3", Edited: true}, 4: {Recalled: true}}
	roomState := map[int64]State{7: {Text: "chaos cy-1"}, 8: {Text: "chaos ben-2"}}
	clone := func(m map[int64]State) map[int64]State {
		out := map[int64]State{}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	s := Snapshot{Name: "after fault 1 (kill -9 leader)",
		Views: map[string]map[string]map[int64]State{}, Server: map[string]map[string]map[int64]State{},
		Reads: map[string]map[string]ReadPos{
			"ann": {dmc: {Read: 4, PeerRead: 2}, room: {Read: 7}},
			"ben": {dmc: {Read: 2, PeerRead: 4}, room: {}},
			"cy":  {room: {Read: 8}},
		},
		AckedReads: map[string]map[string]int64{"ann": {dmc: 4, room: 7}, "ben": {dmc: 2}, "cy": {room: 8}},
	}
	for _, u := range []string{"ann", "ben", "cy"} {
		s.Views[u] = map[string]map[int64]State{room: clone(roomState)}
		s.Server[u] = map[string]map[int64]State{room: clone(roomState)}
		if u != "cy" {
			s.Views[u][dmc] = clone(dmState)
			s.Server[u][dmc] = clone(dmState)
		}
	}
	return s
}

func TestCheckSnapshotAgrees(t *testing.T) {
	res := CompareSnapshot(snapshot())
	// dm: 2 views and 1 other server answer of 3 messages; room: 3 views
	// and 2 other server answers of 2.
	if !res.OK() || res.Compared != 3*3+5*2 || res.ReadsChecked != 6 || len(res.Problems) != 0 {
		t.Fatalf("a clean snapshot: %+v", res)
	}
}

func TestCheckSnapshotDiffers(t *testing.T) {
	dmc, room := protocol.DMConv("ann", "ben"), protocol.RoomConv("lobby")
	cases := []struct {
		name    string
		change  func(s *Snapshot)
		differs int
		want    string
	}{
		{"an edit missed", func(s *Snapshot) { s.Views["ben"][dmc][2] = State{Text: "chaos ann-2"} },
			1, `ben shows dm:ann:ben seq 2 as "chaos ann-2"; the server has "chaos edit ann-3" (edited) (as it answered ann)`},
		{"a recall missed", func(s *Snapshot) { s.Views["ann"][dmc][4] = State{Text: "chaos ann-4"} },
			1, `ann shows dm:ann:ben seq 4 as "chaos ann-4"; the server has recalled`},
		{"a message missing", func(s *Snapshot) { delete(s.Views["cy"][room], 8) },
			1, `cy shows room:lobby seq 8 as no message; the server has "chaos ben-2"`},
		{"a message the server does not have", func(s *Snapshot) { s.Views["cy"][room][9] = State{Text: "chaos cy-2"} },
			1, `cy shows room:lobby seq 9 as "chaos cy-2"; the server has no message`},
		{"the nodes answer differently", func(s *Snapshot) { s.Server["ben"][room][7] = State{Recalled: true} },
			1, `the server answered ben that room:lobby seq 7 is recalled, and ann that it is "chaos cy-1"`},
		{"a conversation left out", func(s *Snapshot) { delete(s.Server["ben"], room) },
			1, `the server left room:lobby out of ben's sync`},
		{"a conversation left out for everyone", func(s *Snapshot) {
			for _, u := range []string{"ann", "ben", "cy"} {
				delete(s.Server[u], room)
			}
		}, 3, `the server left room:lobby out of the sync of every member (ann, ben, cy)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := snapshot()
			c.change(&s)
			res := CompareSnapshot(s)
			if res.Differs != c.differs || res.OK() || res.ReadBack != 0 {
				t.Fatalf("differs %d, want %d; %+v", res.Differs, c.differs, res)
			}
			if !strings.Contains(strings.Join(res.Problems, "\n"), "after fault 1 (kill -9 leader): "+c.want) {
				t.Fatalf("problems %q lack %q", res.Problems, c.want)
			}
		})
	}
}

func TestCheckSnapshotReadBack(t *testing.T) {
	dmc, room := protocol.DMConv("ann", "ben"), protocol.RoomConv("lobby")
	s := snapshot()
	s.Reads["ann"][dmc] = ReadPos{Read: 3, PeerRead: 1} // ann's own went back, and ben's as ann is told
	s.Reads["ben"][dmc] = ReadPos{Read: 2, PeerRead: 3} // ann's as ben is told
	s.Reads["ann"][room] = ReadPos{Read: 9}             // higher than acknowledged: fine
	res := CompareSnapshot(s)
	if res.ReadBack != 3 || res.OK() || res.Differs != 0 || res.ReadsChecked != 6 {
		t.Fatalf("read back %d of %d, want 3 of 6: %+v", res.ReadBack, res.ReadsChecked, res)
	}
	all := strings.Join(res.Problems, "\n")
	for _, want := range []string{
		"read position went back: the server gives ann's read of dm:ann:ben as 3; 4 was acknowledged",
		"read position went back: the server gives ann's read of dm:ann:ben to ben (peerRead) as 3; 4 was acknowledged",
		"read position went back: the server gives ben's read of dm:ann:ben to ann (peerRead) as 1; 2 was acknowledged",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
}

// A checkpoint with floors compares only the seqs above the floor of
// each conversation, the same for every member: a difference below it is
// not seen, one above it is.
func TestCheckSnapshotFloors(t *testing.T) {
	dmc, room := protocol.DMConv("ann", "ben"), protocol.RoomConv("lobby")
	s := snapshot()
	// The dm holds 1, 2 and 4, the room 7 and 8: a floor is the seq of
	// a message, never a gap (3) or a seq below the first (6).
	s.Floors = Floors(s.Views, 1)
	if s.Floors[dmc] != 2 || s.Floors[room] != 7 {
		t.Fatalf("floors %v, want %s at 2 and %s at 7", s.Floors, dmc, room)
	}
	if f := Floors(s.Views, 2); f[dmc] != 2 || f[room] != 0 {
		t.Fatalf("floors %v with a window of 2, want %s at 2 and %s at 0", f, dmc, room)
	}
	s.Floors = Floors(s.Views, 2)
	s.Views["ben"][dmc][1] = State{Text: "chaos ann-0"} // below the floor
	res := CompareSnapshot(s)
	// dm: seq 4 only (3 pairs); room: 7 and 8 (5 pairs each).
	if !res.OK() || res.Compared != 3*1+5*2 {
		t.Fatalf("a difference below the floor: %+v", res)
	}
	delete(s.Views["ann"][dmc], 4) // above it
	if res := CompareSnapshot(s); res.Differs != 1 || !strings.Contains(res.Problems[0], "ann shows dm:ann:ben seq 4 as no message") {
		t.Fatalf("a difference above the floor: %+v", res)
	}
	if f := Floors(s.Views, 1000); f[dmc] != 0 || f[room] != 0 {
		t.Fatalf("floors of a short history %v, want 0", f)
	}
}
