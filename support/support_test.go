package support

import (
	"errors"
	"fmt"
	"testing"

	"chatcluster/protocol"
)

func everyoneOnline(string) bool { return true }

func agent(name string, capacity int) Agent {
	return Agent{Name: name, Capacity: capacity, Status: protocol.AgentAvailable}
}

// open queues visitor v's first conversation at t.
func open(s *State, v string, t int64) Conv {
	c := OpenNew(v, "", "web", 0, t)
	s.Put(c)
	return c
}

// assignAll applies every assignment Next plans, as the leader does.
func assignAll(s *State, online func(string) bool, t int64) []Conv {
	var out []Conv
	for {
		c, a, ok := s.Next(online, t)
		if !ok {
			return out
		}
		s.Put(c)
		s.Assigned(a.Name, t)
		out = append(out, c)
		t++
	}
}

func TestLongestWaitingGoesToTheAgentWithMostRoom(t *testing.T) {
	s := New()
	s.PutAgent(agent("ann", 1))
	s.PutAgent(agent("bob", 3))
	for i, v := range []string{"~c", "~a", "~b"} {
		open(s, v, int64(100+i))
	}
	if p := s.Position(protocol.SupportConvID("~b", 1)); p != 3 {
		t.Fatalf("position of the last one queued = %d, want 3", p)
	}
	got := assignAll(s, everyoneOnline, 1000)
	// bob has 3 free, ann 1: the first goes to bob, and so does the
	// second (2 free against 1); then both have 1 free, and ann, never
	// given one, has been idle longest.
	want := []struct{ visitor, agent string }{{"~c", "bob"}, {"~a", "bob"}, {"~b", "ann"}}
	if len(got) != len(want) {
		t.Fatalf("assigned %d, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Visitor != w.visitor || got[i].Agent != w.agent {
			t.Errorf("assignment %d: %s to %s, want %s to %s", i, got[i].Visitor, got[i].Agent, w.visitor, w.agent)
		}
	}
	if s.Load("ann") != 1 || s.Load("bob") != 2 || s.QueueLen() != 0 {
		t.Errorf("loads ann %d bob %d, queue %d", s.Load("ann"), s.Load("bob"), s.QueueLen())
	}
}

func TestCapacityIsNeverExceeded(t *testing.T) {
	s := New()
	s.PutAgent(agent("ann", 2))
	s.PutAgent(agent("bob", 1))
	away := agent("cid", 5)
	away.Status = protocol.AgentAway
	s.PutAgent(away)
	off := agent("dan", 5)
	s.PutAgent(off)
	online := func(u string) bool { return u != "dan" }
	for i := range 10 {
		open(s, fmt.Sprintf("~v%d", i), int64(i))
	}
	got := assignAll(s, online, 100)
	if len(got) != 3 || s.Load("ann") != 2 || s.Load("bob") != 1 || s.Load("cid") != 0 || s.Load("dan") != 0 {
		t.Fatalf("assigned %d: ann %d bob %d cid %d dan %d", len(got), s.Load("ann"), s.Load("bob"), s.Load("cid"), s.Load("dan"))
	}
	for i, c := range s.Queue() {
		if want := fmt.Sprintf("~v%d", i+3); c.Visitor != want || s.Position(c.ID) != i+1 {
			t.Errorf("queue[%d] = %s at %d, want %s at %d", i, c.Visitor, s.Position(c.ID), want, i+1)
		}
	}
	if _, err := s.Transfer(got[0].ID, got[0].Agent, "bob", 200); !errors.Is(err, ErrNoCapacity) {
		t.Errorf("transfer to a full agent: %v, want ErrNoCapacity", err)
	}
	if _, err := s.Transfer(got[0].ID, got[0].Agent, "cid", 200); !errors.Is(err, ErrNotReady) {
		t.Errorf("transfer to an away agent: %v, want ErrNotReady", err)
	}
	if _, err := s.Transfer(got[0].ID, "bob", "dan", 200); !errors.Is(err, ErrNotYours) && got[0].Agent != "bob" {
		t.Errorf("transfer by an agent that does not hold it: %v, want ErrNotYours", err)
	}
}

func TestRequeuedGoFirstAndCloseFreesCapacity(t *testing.T) {
	s := New()
	s.PutAgent(agent("ann", 1))
	a := open(s, "~a", 1)
	open(s, "~b", 2)
	got := assignAll(s, everyoneOnline, 10)
	if len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("assigned %v, want only %s", got, a.ID)
	}
	open(s, "~c", 3)
	back, ok := s.Requeue(a.ID, 20)
	if !ok {
		t.Fatal("Requeue of an assigned conversation planned nothing")
	}
	s.Put(back)
	if q := s.Queue(); len(q) != 3 || q[0].ID != a.ID || !q[0].Front {
		t.Fatalf("queue after requeue = %v, want %s first", q, a.ID)
	}
	if s.Load("ann") != 0 {
		t.Fatalf("ann holds %d after requeue", s.Load("ann"))
	}
	got = assignAll(s, everyoneOnline, 30)
	if len(got) != 1 || got[0].ID != a.ID || len(got[0].Agents) != 2 {
		t.Fatalf("after requeue assigned %v, want %s again (agents twice)", got, a.ID)
	}
	closed, err := s.Close(a.ID, "~a", 40)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(a.ID, "~b", 40); !errors.Is(err, ErrNotYours) {
		t.Errorf("another visitor closing: %v, want ErrNotYours", err)
	}
	s.Put(closed)
	if _, open := s.OpenOf("~a"); open || s.Load("ann") != 0 {
		t.Fatalf("after close: open %v, ann holds %d", open, s.Load("ann"))
	}
	if n, _ := s.Last("~a"); n != 1 {
		t.Errorf("Last(~a) = %d, want 1", n)
	}
	next := OpenNew("~a", "", "web", 1, 50)
	if next.ID != "cs:~a:2" {
		t.Errorf("next conversation = %s, want cs:~a:2", next.ID)
	}
	if got := assignAll(s, everyoneOnline, 60); len(got) != 1 || got[0].Visitor != "~b" {
		t.Errorf("after close assigned %v, want ~b", got)
	}
}

func TestParseSupportConv(t *testing.T) {
	for _, tc := range []struct {
		conv string
		ok   bool
	}{
		{"cs:~abc:1", true}, {"cs:~abc:12", true}, {"cs:~abc:0", false}, {"cs:~abc:01", false},
		{"cs:abc:1", false}, {"cs:~ABC:1", false}, {"cs:~:1", false}, {"cs:~abc", false}, {"cs:~a:b:1", false},
	} {
		if _, _, ok := protocol.ParseSupportConv(tc.conv); ok != tc.ok {
			t.Errorf("ParseSupportConv(%q) ok = %v, want %v", tc.conv, ok, tc.ok)
		}
		if kind, _, _, ok := protocol.ParseConv(tc.conv); ok != tc.ok || ok && kind != "cs" {
			t.Errorf("ParseConv(%q) = %q, %v", tc.conv, kind, ok)
		}
	}
}
