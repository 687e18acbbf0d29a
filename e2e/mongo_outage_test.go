package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"chatcluster/history"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// The core runs without the database: MongoDB goes away, then the leader
// is killed. The new leader loads the rooms from their copy in Redis, room
// chat goes on, a user logs in with a password (checked against the copy
// of the hash) and joins, another leaves; when MongoDB is back, the
// membership changed meanwhile and the messages are written to it.
func TestLeaderKilledDuringMongoOutage(t *testing.T) {
	mongo := testenv.StartMongo(t)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv, Mongo: mongo.URI()})
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	li := c.Index(leader)
	var survivors []int
	for i := range 3 {
		if i != li {
			survivors = append(survivors, i)
		}
	}
	register(t, c, "mo1", "mo2", "mo3")
	a := connect(t, c.Node(survivors[0]).WSURL, "mo1")
	b := connect(t, c.Node(survivors[1]).WSURL, "mo2")
	join(t, a, "lobby")
	join(t, b, "lobby")
	if _, err := a.conn.ChatRoom(ctxT(t, 10*time.Second), "lobby", "before", "mo1-0"); err != nil {
		t.Fatal(err)
	}

	mongo.Stop(t)
	c.Kill(li)
	if nl := c.WaitLeader(t); nl == leader {
		t.Fatalf("leader %s still listed after kill -9", leader)
	}
	testenv.WaitFor(t, 20*time.Second, "new leader links to every node", func() bool { return linked(t, c) })

	// Room chat, through a leader that never reached MongoDB.
	post := func(u *user, text, cid string) {
		t.Helper()
		testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%s posts %q", u.name, text), func() bool {
			_, err := u.conn.ChatRoom(ctxT(t, 5*time.Second), "lobby", text, cid)
			return err == nil
		})
	}
	post(a, "during", "mo1-1")
	testenv.WaitFor(t, 10*time.Second, "mo2 gets the message posted during the outage", func() bool {
		return slices.ContainsFunc(b.roomMsgs("lobby"), func(m protocol.Message) bool { return m.Text == "during" })
	})

	// A password login (at the gateway, and at a node) and a join.
	if _, _, err := gw(c).Login(ctxT(t, 10*time.Second), "mo3", password); err != nil {
		t.Fatalf("password login at the gateway during the outage: %v", err)
	}
	m3 := connect(t, c.Node(survivors[1]).WSURL, "mo3")
	join(t, m3, "lobby")
	if _, err := b.conn.LeaveRoom(ctxT(t, 10*time.Second), "lobby"); err != nil {
		t.Fatalf("leave during the outage: %v", err)
	}
	post(a, "welcome", "mo1-2")
	testenv.WaitFor(t, 10*time.Second, "mo3, who joined during the outage, gets the room's message", func() bool {
		return slices.ContainsFunc(m3.roomMsgs("lobby"), func(m protocol.Message) bool { return m.Text == "welcome" })
	})
	if slices.ContainsFunc(b.roomMsgs("lobby"), func(m protocol.Message) bool { return m.Text == "welcome" }) {
		t.Fatal("mo2, who left, got a message posted after")
	}

	// MongoDB comes back: it learns the membership and the messages.
	mongo.Start(t)
	s, err := history.Open(ctxT(t, 30*time.Second), mongo.URI(), c.Namespace(), history.WithLogger(zerolog.Nop()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	testenv.WaitFor(t, 60*time.Second, "MongoDB holds the membership changed during the outage", func() bool {
		rooms, err := s.Rooms(ctxT(t, 5*time.Second))
		if err != nil {
			return false
		}
		for _, r := range rooms {
			if r.Name == "lobby" {
				return slices.Equal(r.Members, []string{"mo1", "mo3"})
			}
		}
		return false
	})
	testenv.WaitFor(t, 60*time.Second, "MongoDB holds the messages posted during the outage", func() bool {
		msgs, err := s.Messages(ctxT(t, 5*time.Second), protocol.RoomConv("lobby"), 0, 0, 0, false)
		if err != nil {
			return false
		}
		var texts []string
		for _, m := range msgs {
			if m.Kind == "" { // not the joins and the leave
				texts = append(texts, m.Text)
			}
		}
		return slices.Equal(texts, []string{"before", "during", "welcome"})
	})
}
