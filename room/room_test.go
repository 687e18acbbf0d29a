package room

import (
	"reflect"
	"testing"

	"chatcluster/protocol"
)

func TestMembership(t *testing.T) {
	r := New()
	r.Load([]Room{{Name: "lobby", Owner: "zed", Members: []string{"bob", "alice"}}, {Name: "empty"}})
	if got, ok := r.Members("lobby"); !ok || !reflect.DeepEqual(got, []string{"alice", "bob"}) {
		t.Fatalf("Members(lobby) = %v, %v", got, ok)
	}
	if _, ok := r.Members("nope"); ok {
		t.Fatal("unknown room exists")
	}
	if exists, member := r.IsMember("lobby", "carol"); !exists || member {
		t.Fatalf("IsMember(lobby, carol) = %v, %v", exists, member)
	}

	with := r.WithMember("lobby", "carol")
	if !reflect.DeepEqual(with, []string{"alice", "bob", "carol"}) {
		t.Fatalf("WithMember = %v", with)
	}
	if _, member := r.IsMember("lobby", "carol"); member {
		t.Fatal("WithMember changed the registry")
	}
	r.Set("lobby", "carol", with) // a room that exists keeps its owner
	if _, member := r.IsMember("lobby", "carol"); !member {
		t.Fatal("Set did not add carol")
	}
	r.Set("lobby", "", r.WithoutMember("lobby", "alice"))
	r.Set("new", "alice", r.WithMember("new", "alice"))
	want := []protocol.RoomInfo{
		{Name: "empty", Members: 0},
		{Name: "lobby", Members: 2, Joined: true, Owner: "zed"},
		{Name: "new", Members: 1, Owner: "alice"},
	}
	if got := r.List("bob"); !reflect.DeepEqual(got, want) {
		t.Fatalf("List(bob) = %+v, want %+v", got, want)
	}
	if r.Len() != 3 {
		t.Fatalf("Len = %d", r.Len())
	}
	if r.Owner("new") != "alice" || r.Owner("empty") != "" || r.Owner("nope") != "" {
		t.Fatalf("owners %q %q %q", r.Owner("new"), r.Owner("empty"), r.Owner("nope"))
	}
	for _, rm := range r.Rooms() {
		if rm.Name == "lobby" && rm.Owner != "zed" {
			t.Fatalf("Rooms gives lobby's owner as %q", rm.Owner)
		}
	}
}

func TestPresenceAndPlan(t *testing.T) {
	r := New()
	r.Load([]Room{{Name: "lobby", Members: []string{"a", "b", "c", "d"}}, {Name: "side", Members: []string{"a", "e"}}})
	if !r.Online("a", "n1", "c1", 1) || !r.Online("b", "n2", "c2", 2) || !r.Online("c", "n2", "c3", 3) {
		t.Fatal("first login is not a presence change")
	}
	if r.Online("a", "n3", "c4", 4) {
		t.Fatal("a login that replaces another is a presence change")
	}
	// A late report about a's older login does not move a back to it.
	r.Online("a", "n1", "c1", 1)
	if n, _ := r.Where("a"); n != "n3" {
		t.Fatalf("a late report moved a to %s", n)
	}
	if off, _ := r.Roster("n1", []Session{{User: "a", Conn: "c1", Ver: 1}}); len(off) != 0 {
		t.Fatalf("roster of n1 took %v offline", off)
	}
	if n, _ := r.Where("a"); n != "n3" {
		t.Fatalf("a stale roster moved a to %s", n)
	}
	if r.Offline("a", "c1") {
		t.Fatal("the end of a replaced connection took the user offline")
	}
	if n, _ := r.Where("a"); n != "n3" {
		t.Fatalf("a is on %s", n)
	}
	want := map[string][]string{"n3": {"a"}, "n2": {"b", "c"}}
	if got := r.Plan("lobby"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Plan = %v, want %v", got, want)
	}
	r.Online("e", "n1", "c5", 5)
	if got, want := r.Mates("a"), map[string][]string{"n1": {"e"}, "n2": {"b", "c"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Mates(a) = %v, want %v", got, want)
	}

	off, on := r.Roster("n2", []Session{{User: "c", Conn: "c3", Ver: 3}, {User: "f", Conn: "c6", Ver: 6}})
	if !reflect.DeepEqual(off, []string{"b"}) || !reflect.DeepEqual(on, []string{"f"}) {
		t.Fatalf("Roster = %v, %v", off, on)
	}
	if got, off := r.NodeGone("n2"); !reflect.DeepEqual(got, []Session{{User: "c", Conn: "c3"}, {User: "f", Conn: "c6"}}) || !reflect.DeepEqual(off, []string{"c", "f"}) {
		t.Fatalf("NodeGone = %v, %v", got, off)
	}
	if !r.Offline("a", "c4") {
		t.Fatal("the current connection ending did not take a offline")
	}
	if got := r.Plan("lobby"); len(got) != 0 {
		t.Fatalf("Plan with nobody online = %v", got)
	}
}

// Under the multi login policy a user is online on every connection its
// nodes report: a room message goes to each node that holds one, the user
// comes online with the first and goes offline with the last.
func TestMultiDevicePresenceAndPlan(t *testing.T) {
	r := NewMulti()
	r.Load([]Room{{Name: "lobby", Members: []string{"a", "b"}}})
	if !r.Online("a", "n1", "a1", 1) {
		t.Fatal("a's first device is not a presence change")
	}
	if r.Online("a", "n2", "a2", 2) || r.Online("a", "n1", "a3", 3) {
		t.Fatal("a's second or third device is a presence change")
	}
	// A late report about a's first login adds nothing.
	if r.Online("a", "n1", "a1", 1) {
		t.Fatal("a report of a known connection is a presence change")
	}
	r.Online("b", "n3", "b1", 4)
	if got := r.Nodes("a"); !reflect.DeepEqual(got, []string{"n2", "n1"}) {
		t.Fatalf("Nodes(a) = %v, want n2 and n1 (the newest login's last)", got)
	}
	if n, _ := r.Where("a"); n != "n1" {
		t.Fatalf("Where(a) = %s, want n1, the newest login's", n)
	}
	want := map[string][]string{"n1": {"a"}, "n2": {"a"}, "n3": {"b"}}
	if got := r.Plan("lobby"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Plan = %v, want %v (a once per node)", got, want)
	}
	if got := r.Mates("b"); !reflect.DeepEqual(got, map[string][]string{"n1": {"a"}, "n2": {"a"}}) {
		t.Fatalf("Mates(b) = %v", got)
	}
	if r.Offline("a", "a1") || r.Offline("a", "nope") {
		t.Fatal("one of several devices ending took a offline")
	}
	if got := r.Nodes("a"); !reflect.DeepEqual(got, []string{"n2", "n1"}) {
		t.Fatalf("Nodes(a) after a1 ended = %v", got)
	}
	// n1's roster no longer has a3 but has a new a4; n2's has nothing.
	if off, on := r.Roster("n1", []Session{{User: "a", Conn: "a4", Ver: 5}}); len(off) != 0 || len(on) != 0 {
		t.Fatalf("Roster(n1) = %v, %v; want no presence change", off, on)
	}
	if off, on := r.Roster("n2", nil); len(off) != 0 || len(on) != 0 {
		t.Fatalf("Roster(n2) = %v, %v; want no presence change (a is on n1)", off, on)
	}
	if got := r.Nodes("a"); !reflect.DeepEqual(got, []string{"n1"}) {
		t.Fatalf("Nodes(a) after the rosters = %v", got)
	}
	r.Online("a", "n2", "a5", 6)
	if gone, off := r.NodeGone("n1"); !reflect.DeepEqual(gone, []Session{{User: "a", Conn: "a4"}}) || len(off) != 0 {
		t.Fatalf("NodeGone(n1) = %v, %v; want a4 gone, a still online on n2", gone, off)
	}
	if off, on := r.Roster("n2", []Session{{User: "c", Conn: "c1"}}); !reflect.DeepEqual(off, []string{"a"}) || !reflect.DeepEqual(on, []string{"c"}) {
		t.Fatalf("Roster(n2) = %v, %v; want a offline, c online", off, on)
	}
	if !r.Offline("b", "b1") {
		t.Fatal("b's only device ending did not take b offline")
	}
	if got := r.Nodes("b"); got != nil {
		t.Fatalf("Nodes of an offline user = %v", got)
	}
}

// A deleted room leaves the registry, its members' room lists and the
// online members' plan, and stays deleted across a load.
func TestDeleteRoom(t *testing.T) {
	r := New()
	r.Load([]Room{{Name: "lobby", Members: []string{"alice", "bob"}}, {Name: "gone", Deleted: true}})
	if !r.Deleted("gone") || r.Exists("gone") {
		t.Fatalf("a room loaded as deleted: Deleted %v, Exists %v", r.Deleted("gone"), r.Exists("gone"))
	}
	r.Online("alice", "n1", "c1", 1)
	r.Online("bob", "n2", "c2", 2)
	r.Delete("lobby")
	if r.Exists("lobby") || !r.Deleted("lobby") {
		t.Fatal("lobby still exists after Delete")
	}
	if _, member := r.IsMember("lobby", "alice"); member {
		t.Fatal("alice is still a member of a deleted room")
	}
	if plan := r.Plan("lobby"); len(plan) != 0 {
		t.Fatalf("plan of a deleted room: %v", plan)
	}
	if mates := r.Mates("alice"); len(mates) != 0 {
		t.Fatalf("alice still has room mates: %v", mates)
	}
	if list := r.List("alice"); len(list) != 0 {
		t.Fatalf("rooms listed after the delete: %v", list)
	}
	if rooms := r.Rooms(); len(rooms) != 0 {
		t.Fatalf("Rooms after the delete: %v", rooms)
	}
}

func TestOnlinePage(t *testing.T) {
	r := New()
	for i, u := range []string{"dave", "alice", "carol", "bob", "erin"} {
		r.Online(u, []string{"n1", "n2"}[i%2], "c-"+u, int64(i+1))
	}
	r.Offline("erin", "c-erin")
	page, more := r.OnlinePage("", 2)
	want := []protocol.OnlineUser{{Username: "alice", Node: "n2"}, {Username: "bob", Node: "n2"}}
	if !more || !reflect.DeepEqual(page, want) {
		t.Fatalf("first page = %v, more %v; want %v, more", page, more, want)
	}
	page, more = r.OnlinePage("bob", 2)
	want = []protocol.OnlineUser{{Username: "carol", Node: "n1"}, {Username: "dave", Node: "n1"}}
	if more || !reflect.DeepEqual(page, want) {
		t.Fatalf("second page = %v, more %v; want %v, no more", page, more, want)
	}
	if page, more = r.OnlinePage("dave", 2); more || len(page) != 0 {
		t.Fatalf("page after the last = %v, more %v", page, more)
	}
}
