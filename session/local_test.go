package session

import (
	"fmt"
	"sync"
	"testing"
)

type fakeConn struct{ id, user string }

func (c *fakeConn) ConnID() string { return c.id }
func (c *fakeConn) User() string   { return c.user }

func TestLocalReplaceAndRemove(t *testing.T) {
	l := NewLocal[*fakeConn]()
	a1 := &fakeConn{"c1", "alice"}
	a2 := &fakeConn{"c2", "alice"}
	if _, replaced := l.Add(a1); replaced {
		t.Fatal("first add replaced something")
	}
	old, replaced := l.Add(a2)
	if !replaced || old != a1 {
		t.Fatalf("second add: replaced=%v old=%v, want a1", replaced, old)
	}
	if l.Remove(a1) {
		t.Fatal("a replaced connection removed its successor")
	}
	if c, ok := l.Get("alice"); !ok || c != a2 {
		t.Fatalf("Get after stale remove = %v %v, want a2", c, ok)
	}
	if !l.Remove(a2) {
		t.Fatal("current connection not removed")
	}
	if _, ok := l.Get("alice"); ok || l.Len() != 0 {
		t.Fatal("registry not empty after remove")
	}
}

func TestLocalConcurrent(t *testing.T) {
	l := NewLocal[*fakeConn]()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				c := &fakeConn{fmt.Sprintf("%d-%d", g, i), fmt.Sprintf("u%d", i%50)}
				l.Add(c)
				l.Get(c.user)
				if i%3 == 0 {
					l.Remove(c)
				}
			}
		}(g)
	}
	wg.Wait()
	n := 0
	l.Each(func(*fakeConn) bool { n++; return true })
	if n != l.Len() || n > 50 {
		t.Fatalf("Each saw %d, Len %d; at most 50 users exist", n, l.Len())
	}
}

func TestLocalDevices(t *testing.T) {
	l := NewLocal[*fakeConn]()
	phone := &fakeConn{"c1", "alice"}
	laptop := &fakeConn{"c2", "alice"}
	anon1 := &fakeConn{"c3", "alice"}
	anon2 := &fakeConn{"c4", "alice"}
	for _, add := range []struct {
		c      *fakeConn
		device string
	}{{phone, "phone"}, {laptop, "laptop"}, {anon1, ""}, {anon2, ""}} {
		if _, replaced := l.AddDevice(add.c, add.device); replaced {
			t.Fatalf("adding %s on device %q replaced a connection", add.c.id, add.device)
		}
	}
	if got := l.Conns("alice"); len(got) != 4 || got[0] != phone || got[3] != anon2 || l.Len() != 4 {
		t.Fatalf("Conns = %v, Len %d; want the four connections, oldest first", got, l.Len())
	}
	if c, ok := l.Get("alice"); !ok || c != anon2 {
		t.Fatalf("Get = %v, want the newest connection", c)
	}
	// The phone logs in again: its earlier connection is replaced, the
	// others stay.
	phone2 := &fakeConn{"c5", "alice"}
	if old, replaced := l.AddDevice(phone2, "phone"); !replaced || old != phone {
		t.Fatalf("the phone's new connection replaced %v (%v), want its old one", old, replaced)
	}
	if l.Len() != 4 {
		t.Fatalf("Len = %d after a device reconnected, want 4", l.Len())
	}
	if _, ok := l.Conn("alice", "c1"); ok {
		t.Fatal("the replaced connection is still registered")
	}
	if l.Remove(phone) {
		t.Fatal("a replaced connection removed something")
	}
	if !l.Remove(anon1) || l.Len() != 3 {
		t.Fatalf("Remove of one device: Len %d, want 3", l.Len())
	}
	if c, ok := l.Conn("alice", "c5"); !ok || c != phone2 {
		t.Fatal("the phone's new connection is not found by its id")
	}
	// A connection without a device name never replaces one.
	if _, replaced := l.AddDevice(&fakeConn{"c6", "alice"}, ""); replaced {
		t.Fatal("an unnamed connection replaced another")
	}
	// The single policy's Add replaces every connection of the user.
	if _, replaced := l.Add(&fakeConn{"c7", "alice"}); !replaced || l.Len() != 1 {
		t.Fatalf("Add: replaced %v, Len %d; want the user's one connection", replaced, l.Len())
	}
}
