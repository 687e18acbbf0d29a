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
	if got := r.NodeGone("n2"); !reflect.DeepEqual(got, []Session{{User: "c", Conn: "c3"}, {User: "f", Conn: "c6"}}) {
		t.Fatalf("NodeGone = %v", got)
	}
	if !r.Offline("a", "c4") {
		t.Fatal("the current connection ending did not take a offline")
	}
	if got := r.Plan("lobby"); len(got) != 0 {
		t.Fatalf("Plan with nobody online = %v", got)
	}
}
