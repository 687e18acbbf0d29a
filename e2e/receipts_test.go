package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// typings returns the typing pushes u received, in order.
func (u *user) typings() []protocol.TypingPush {
	var out []protocol.TypingPush
	for _, p := range u.otherPushes() {
		var tp protocol.TypingPush
		if p.Action == protocol.PushTyping && json.Unmarshal(p.Data, &tp) == nil {
			out = append(out, tp)
		}
	}
	return out
}

// readPushes returns the read pushes u received, in order.
func (u *user) readPushes() []protocol.ReadPush {
	var out []protocol.ReadPush
	for _, p := range u.otherPushes() {
		var rp protocol.ReadPush
		if p.Action == protocol.PushRead && json.Unmarshal(p.Data, &rp) == nil {
			out = append(out, rp)
		}
	}
	return out
}

func (u *user) typing(t *testing.T, conv string) {
	t.Helper()
	var r map[string]any
	if err := u.conn.Do(ctxT(t, 5*time.Second), protocol.ActionTyping, protocol.TypingData{Conv: conv}, &r); err != nil || len(r) != 0 {
		t.Fatalf("%s typing in %s: %v, %v; want {}", u.name, conv, r, err)
	}
}

func (u *user) read(t *testing.T, conv string, seq int64) int64 {
	t.Helper()
	var r protocol.ReadReply
	if err := u.conn.Do(ctxT(t, 5*time.Second), protocol.ActionRead, protocol.ReadData{Conv: conv, Seq: seq}, &r); err != nil {
		t.Fatalf("%s read %s up to %d: %v", u.name, conv, seq, err)
	}
	if r.Conv != conv {
		t.Fatalf("%s read %s: reply names %s", u.name, conv, r.Conv)
	}
	return r.Seq
}

// typeUntilSeen has from type in conv until every one of to has a typing
// push of from in conv. A typing push may be dropped (it yields to
// anything else queued), so it is sent again, once per rate-limit
// interval, until it arrives.
func typeUntilSeen(t *testing.T, from *user, conv string, to ...*user) {
	t.Helper()
	seen := func() bool {
		for _, u := range to {
			found := false
			for _, tp := range u.typings() {
				if tp.Conv == conv && tp.From == from.name {
					found = true
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for !seen() {
		if time.Now().After(deadline) {
			t.Fatalf("%s's typing in %s did not reach every one of %d users in 30 s", from.name, conv, len(to))
		}
		from.typing(t, conv)
		// Wait for the pushes, up to a little over the interval after
		// which another typing is passed on.
		wait := time.Now().Add(protocol.TypingInterval*time.Millisecond + 200*time.Millisecond)
		for !seen() && time.Now().Before(wait) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func noTypingFrom(t *testing.T, u *user, conv, from string) {
	t.Helper()
	for _, tp := range u.typings() {
		if tp.Conv == conv && tp.From == from {
			t.Fatalf("%s got %s's typing in %s", u.name, from, conv)
		}
	}
}

// Typing and read receipts across two nodes: typing in a direct
// conversation and in a room reaches the others online and not the
// sender; a read in a direct conversation is pushed to the other side, a
// lower one changes nothing, one above the latest is refused; a read in a
// room is pushed to no one else; sync returns the read positions.
func TestTypingAndReadReceiptsAcrossNodes(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 20*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "alice", "bob", "carol", "dave", "erin")
	alice := connect(t, c.Node(0).WSURL, "alice")
	bob := connect(t, c.Node(1).WSURL, "bob")
	carol := connect(t, c.Node(1).WSURL, "carol")
	dave := connect(t, c.Node(0).WSURL, "dave")
	erin := connect(t, c.Node(1).WSURL, "erin")
	dm := protocol.DMConv("alice", "bob")
	room := protocol.RoomConv("lobby")
	for _, u := range []*user{alice, bob, carol, dave} {
		join(t, u, "lobby")
	}

	// Typing.
	typeUntilSeen(t, alice, dm, bob)
	typeUntilSeen(t, alice, room, bob, carol, dave)
	typeUntilSeen(t, carol, room, alice, bob, dave)
	for _, code := range []struct {
		conv string
		want int
	}{{"dm:bob:carol", 403}, {"room:nowhere", 403}, {"lobby", 400}} {
		err := alice.conn.Do(ctxT(t, 5*time.Second), protocol.ActionTyping, protocol.TypingData{Conv: code.conv}, nil)
		if chatclient.Code(err) != code.want {
			t.Fatalf("typing in %s: %v, want %d", code.conv, err, code.want)
		}
	}

	// Read receipts in the direct conversation.
	for i := range 3 {
		if _, err := alice.conn.Chat(ctxT(t, 5*time.Second), "bob", text("alice", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "bob receives alice's messages", func() bool { return len(bob.received()) == 3 })
	if got := bob.read(t, dm, 2); got != 2 {
		t.Fatalf("bob's read of 2 stored %d", got)
	}
	if got := bob.read(t, dm, 1); got != 2 {
		t.Fatalf("bob's read of 1 after 2 stored %d, want 2 unchanged", got)
	}
	err := bob.conn.Do(ctxT(t, 5*time.Second), protocol.ActionRead, protocol.ReadData{Conv: dm, Seq: 4}, nil)
	if chatclient.Code(err) != 400 {
		t.Fatalf("read above the latest: %v, want 400", err)
	}
	if got := bob.read(t, dm, 3); got != 3 {
		t.Fatalf("bob's read of 3 stored %d", got)
	}
	testenv.WaitFor(t, 10*time.Second, "alice is told bob read up to 3", func() bool {
		rp := alice.readPushes()
		return len(rp) > 0 && rp[len(rp)-1].Seq == 3
	})
	if got := fmt.Sprint(alice.readPushes()); got != fmt.Sprintf("[{%s bob 2} {%s bob 3}]", dm, dm) {
		t.Fatalf("alice's read pushes %s, want bob at 2 then 3 (the lower read pushes nothing)", got)
	}
	if got := alice.read(t, dm, 2); got != 2 {
		t.Fatalf("alice's read of 2 stored %d", got)
	}
	testenv.WaitFor(t, 10*time.Second, "bob is told alice read up to 2", func() bool { return len(bob.readPushes()) == 1 })

	// A room: the position is kept, nobody else is told.
	for i := range 2 {
		if _, err := dave.conn.ChatRoom(ctxT(t, 5*time.Second), "lobby", text("dave", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := bob.read(t, room, 2); got != 2 {
		t.Fatalf("bob's read of the room stored %d", got)
	}
	// Then a read that is pushed: once alice has it, a room read pushed
	// before it would have arrived too.
	if _, err := bob.conn.Chat(ctxT(t, 5*time.Second), "alice", "one more", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "alice receives bob's message", func() bool {
		for _, m := range alice.received() {
			if m.Conv == dm {
				return true
			}
		}
		return false
	})
	alice.read(t, dm, 4)
	testenv.WaitFor(t, 10*time.Second, "bob is told alice read up to 4", func() bool { return len(bob.readPushes()) == 2 })
	for _, u := range []*user{alice, carol, dave, erin} {
		for _, rp := range u.readPushes() {
			if rp.Conv == room {
				t.Fatalf("%s was told of a room read: %+v", u.name, rp)
			}
		}
	}
	if got := len(carol.readPushes()) + len(dave.readPushes()) + len(erin.readPushes()); got != 0 {
		t.Fatalf("users of neither conversation got %d read pushes", got)
	}

	// sync returns the read positions.
	syncOf := func(u *user) map[string]protocol.SyncConv {
		t.Helper()
		got, err := u.conn.SyncAll(ctxT(t, 10*time.Second), map[string]int64{dm: 4, room: 2})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if s := syncOf(bob); s[dm].Read != 3 || s[dm].PeerRead != 4 || s[room].Read != 2 || s[room].PeerRead != 0 {
		t.Fatalf("bob's sync: dm %+v, room %+v; want read 3, peerRead 4, room read 2", s[dm], s[room])
	}
	if s := syncOf(alice); s[dm].Read != 4 || s[dm].PeerRead != 3 || s[room].Read != 0 {
		t.Fatalf("alice's sync: dm %+v, room %+v; want read 4, peerRead 3, room read 0", s[dm], s[room])
	}

	// No typing push ever reached its sender, or a user outside the
	// conversation.
	noTypingFrom(t, alice, dm, "alice")
	noTypingFrom(t, alice, room, "alice")
	noTypingFrom(t, carol, room, "carol")
	for _, u := range []*user{carol, dave, erin} {
		noTypingFrom(t, u, dm, "alice")
	}
	if n := len(erin.typings()); n != 0 {
		t.Fatalf("erin, in neither conversation, got %d typing pushes", n)
	}
}

// Read positions survive Redis restarting empty: the nodes read them back
// from MongoDB, where they were written behind, and a lower read after
// the loss still changes nothing. The node that took a read is killed
// at once, before it could have written it: the queue is in Redis, so it
// is written all the same.
func TestReadPositionsSurviveRedisLoss(t *testing.T) {
	redisSrv := testenv.StartRedis(t)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Redis: redisSrv.Addr(), Env: fastEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 20*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "amy", "ben")
	amy := connect(t, c.Node(0).WSURL, "amy")
	ben := connect(t, c.Node(1).WSURL, "ben")
	dm := protocol.DMConv("amy", "ben")
	room := protocol.RoomConv("hall")
	join(t, amy, "hall")
	for i := range 3 {
		if _, err := amy.conn.Chat(ctxT(t, 5*time.Second), "ben", text("amy", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := amy.conn.ChatRoom(ctxT(t, 5*time.Second), "hall", "hello hall", ""); err != nil {
		t.Fatal(err)
	}
	amy.read(t, dm, 2)
	amy.read(t, room, 1)
	ben.read(t, dm, 3)
	c.Kill(1)
	c.WaitLeader(t)

	mdb := openMongo(t, testenv.Mongo(t), c.Namespace())
	want := []history.ReadPosition{{Conv: dm, User: "ben"}, {Conv: dm, User: "amy"}, {Conv: room, User: "amy"}}
	testenv.WaitFor(t, 30*time.Second, "the read positions are in MongoDB", func() bool {
		got, err := mdb.s.ReadPositions(ctxT(t, 5*time.Second), want)
		return err == nil && got[0].Seq == 3 && got[1].Seq == 2 && got[2].Seq == 1
	})
	testenv.WaitFor(t, 30*time.Second, "the history writer stores the messages", func() bool {
		n, err := mdb.count(dm)
		m, err2 := mdb.count(room)
		return err == nil && err2 == nil && n == 3 && m == 2 // the room: amy's join, her message
	})

	redisSrv.Restart(t)
	ben = connect(t, c.Node(0).WSURL, "ben")
	var got map[string]protocol.SyncConv
	testenv.WaitFor(t, 30*time.Second, "ben's sync answers after the restart", func() bool {
		var err error
		got, err = ben.conn.SyncAll(ctxT(t, 10*time.Second), map[string]int64{dm: 3})
		return err == nil
	})
	if s := got[dm]; s.Read != 3 || s.PeerRead != 2 {
		t.Fatalf("ben's sync after Redis lost its data: %+v, want read 3 and peerRead 2", s)
	}
	// The room is back in amy's conversations once the leader has put
	// the rooms back (until then sync leaves it out).
	testenv.WaitFor(t, 30*time.Second, "amy's sync answers for both conversations after the restart", func() bool {
		var err error
		got, err = amy.conn.SyncAll(ctxT(t, 10*time.Second), map[string]int64{dm: 3, room: 1})
		_, inRoom := got[room]
		return err == nil && inRoom
	})
	if s := got[dm]; s.Read != 2 || s.PeerRead != 3 {
		t.Fatalf("amy's sync of %s after Redis lost its data: %+v, want read 2 and peerRead 3", dm, s)
	}
	if s := got[room]; s.Read != 1 {
		t.Fatalf("amy's sync of %s after Redis lost its data: %+v, want read 1", room, s)
	}
	if got := ben.read(t, dm, 1); got != 3 {
		t.Fatalf("a lower read after the loss stored %d, want 3", got)
	}
}
