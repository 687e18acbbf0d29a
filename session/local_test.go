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
