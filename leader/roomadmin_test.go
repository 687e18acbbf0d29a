package leader

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"chatcluster/protocol"
	"chatcluster/room"
)

// memRooms is the rooms' store and the conversation lists of a term under
// test, in memory.
type memRooms struct {
	mu      sync.Mutex
	rooms   map[string][]string
	deleted map[string]bool
	saved   map[string]room.Room       // as last saved, with its owner
	convs   map[string]map[string]bool // user -> conversations
}

func newMemRooms() *memRooms {
	return &memRooms{rooms: map[string][]string{}, deleted: map[string]bool{}, saved: map[string]room.Room{}, convs: map[string]map[string]bool{}}
}

func (m *memRooms) ClaimRooms(context.Context, int64) error { return nil }
func (m *memRooms) Rooms(context.Context) ([]room.Room, error) {
	return nil, nil
}
func (m *memRooms) SaveRoom(_ context.Context, r room.Room, _ int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rooms[r.Name], m.deleted[r.Name], m.saved[r.Name] = r.Members, false, r
	return nil
}
func (m *memRooms) DeleteRoom(_ context.Context, name string, _ int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rooms[name], m.deleted[name] = nil, true
	return nil
}
func (m *memRooms) Flush(context.Context, int64) (int, error) { return 0, nil }

func (m *memRooms) set(user, conv string, in bool) {
	if m.convs[user] == nil {
		m.convs[user] = map[string]bool{}
	}
	m.convs[user][conv] = in
}
func (m *memRooms) AddMembers(_ context.Context, rooms []room.Room) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range rooms {
		for _, u := range r.Members {
			m.set(u, protocol.RoomConv(r.Name), true)
		}
	}
	return nil
}
func (m *memRooms) AddConv(_ context.Context, user, conv string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set(user, conv, true)
	return nil
}
func (m *memRooms) RemoveConv(_ context.Context, user, conv string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.set(user, conv, false)
	return nil
}
func (m *memRooms) RemoveMembers(_ context.Context, r room.Room) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range r.Members {
		m.set(u, protocol.RoomConv(r.Name), false)
	}
	return nil
}
func (m *memRooms) has(user, conv string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.convs[user][conv]
}

// The server API's room operations on the leader: create, members,
// enter, delete (with the push to the online members on their node), and
// the deleted name refused afterwards.
func TestServerRoomOperations(t *testing.T) {
	l, link := forwardingLeader("alice", "bob")
	store := newMemRooms()
	j := &memJournal{convs: map[string][]protocol.Message{}}
	l.d.Store, l.d.Convs, l.d.Journal, l.d.RequestTimeout = store, store, j, 5*time.Second
	n := 0
	l.d.NewID = func() string { n++; return "ev" + string(rune('a'+n)) }
	l.ctx = context.Background()
	run := func(f protocol.PeerFrame) protocol.PeerFrame {
		t.Helper()
		f.Type = protocol.PeerRoom
		return l.rooms.run(f)
	}

	out := run(protocol.PeerFrame{Op: protocol.RoomCreate, Room: "ops", Members: []string{"bob", "alice", "bob"}})
	if out.Code != 0 || !slices.Equal(out.Members, []string{"alice", "bob"}) || !slices.Equal(store.rooms["ops"], []string{"alice", "bob"}) {
		t.Fatalf("create: %+v; stored %v", out, store.rooms)
	}
	if !store.has("alice", "room:ops") || !store.has("bob", "room:ops") {
		t.Fatal("the members do not have the room in their conversation lists")
	}
	// Its conversation starts with the members' joins, as by joinRoom.
	var joined []string
	for _, m := range j.convs["room:ops"] {
		if m.Kind == protocol.KindJoin {
			joined = append(joined, m.From)
		}
	}
	if !slices.Equal(joined, []string{"alice", "bob"}) {
		t.Fatalf("join events of the created room: %v, want alice's and bob's", joined)
	}
	if out := run(protocol.PeerFrame{Op: protocol.RoomCreate, Room: "ops"}); out.Code != protocol.CodeConflict || out.Error != `room "ops" exists already` {
		t.Fatalf("create again: %+v", out)
	}
	if out := run(protocol.PeerFrame{Op: protocol.RoomEnter, User: "bot", Room: "nowhere"}); out.Code != protocol.CodeNotFound || out.Error != `unknown room "nowhere"` {
		t.Fatalf("enter of an unknown room: %+v", out)
	}
	if l.rooms.reg.Exists("nowhere") {
		t.Fatal("enter created a room")
	}
	if out := run(protocol.PeerFrame{Op: protocol.RoomEnter, User: "bot", Room: "ops"}); out.Code != 0 || out.Members != nil {
		t.Fatalf("enter: %+v", out)
	}
	out = run(protocol.PeerFrame{Op: protocol.RoomMembers, Room: "ops"})
	if out.Code != 0 || !slices.Equal(out.Members, []string{"alice", "bob", "bot"}) || !slices.Equal(out.Users, []string{"alice", "bob"}) {
		t.Fatalf("members: %+v", out)
	}
	out = run(protocol.PeerFrame{Op: protocol.RoomOnline, Server: &protocol.ServerPeer{Limit: 1}})
	if out.Server == nil || !out.Server.More || len(out.Server.Present) != 1 || out.Server.Present[0] != (protocol.OnlineUser{Username: "alice", Node: "n3"}) {
		t.Fatalf("online: %+v", out.Server)
	}

	for len(link.send) > 0 {
		<-link.send
	}
	if n := len(j.convs["room:ops"]); n != 3 || j.convs["room:ops"][2].Kind != protocol.KindJoin || j.convs["room:ops"][2].From != "bot" {
		t.Fatalf("room conversation %+v, want the bot's join third", j.convs["room:ops"])
	}
	out = run(protocol.PeerFrame{Op: protocol.RoomDelete, Room: "ops", Server: &protocol.ServerPeer{Reason: "done"}})
	if out.Code != 0 || !slices.Equal(out.Members, []string{"alice", "bob", "bot"}) || !store.deleted["ops"] {
		t.Fatalf("delete: %+v; deleted %v", out, store.deleted)
	}
	select {
	case b := <-link.send:
		f, err := protocol.DecodePeer(b)
		var push struct {
			Action string                   `json:"action"`
			Data   protocol.RoomDeletedPush `json:"data"`
		}
		if err != nil || f.Type != protocol.PeerPush || f.Recipients != "alice,bob" || json.Unmarshal(f.Push, &push) != nil ||
			push.Action != protocol.PushRoomDeleted || push.Data != (protocol.RoomDeletedPush{Room: "ops", Reason: "done"}) {
			t.Fatalf("sent %s (%v), want the roomDeleted push to alice and bob", b, err)
		}
	default:
		t.Fatal("nothing sent to the online members' node")
	}
	for _, u := range []string{"alice", "bob", "bot"} {
		if store.has(u, "room:ops") {
			t.Fatalf("%s still has the deleted room in its conversation list", u)
		}
	}
	for _, f := range []protocol.PeerFrame{
		{Op: protocol.RoomJoin, User: "alice", Room: "ops"},
		{Op: protocol.RoomLeave, User: "alice", Room: "ops"},
		{Op: protocol.RoomPost, User: "alice", Room: "ops", Message: &protocol.Message{Text: "x"}},
		{Op: protocol.RoomEnter, User: "bot", Room: "ops"},
		{Op: protocol.RoomMembers, Room: "ops"},
		{Op: protocol.RoomDelete, Room: "ops"},
	} {
		if out := run(f); out.Code != protocol.CodeNotFound || out.Error != `room "ops" was deleted` {
			t.Errorf("%s of the deleted room: %+v", f.Op, out)
		}
	}
	if out := run(protocol.PeerFrame{Op: protocol.RoomCreate, Room: "ops"}); out.Code != protocol.CodeConflict {
		t.Fatalf("create of a deleted name: %+v", out)
	}
	if l.rooms.reg.Exists("ops") {
		t.Fatal("the deleted room came back")
	}
}
