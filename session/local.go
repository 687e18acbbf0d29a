package session

import (
	"hash/maphash"
	"sync"
)

// Conn is a logged-in client connection as the registry sees it.
type Conn interface {
	// ConnID is unique per connection, cluster-wide.
	ConnID() string
	// User is the logged-in user; it never changes once registered.
	User() string
}

const shards = 64

// Local is a node's registry of its logged-in connections, by user. Under
// the single login policy a user has at most one (Add); under the multi
// policy any number, one per device (AddDevice). It is sharded by user so
// that logins and lookups on different users do not contend. Safe for
// concurrent use.
type Local[C Conn] struct {
	seed   maphash.Seed
	shards [shards]localShard[C]
}

type localShard[C Conn] struct {
	mu sync.RWMutex
	// users holds each user's connections, oldest login first. A slice
	// is never changed once stored (Add, AddDevice and Remove store new
	// ones), so Conns hands it out without copying. Guarded by mu.
	users map[string][]C
	// devices names the device of connections logged in with one, by
	// connection id. Guarded by mu.
	devices map[string]string
	n       int // connections in users; guarded by mu
}

// NewLocal returns an empty registry.
func NewLocal[C Conn]() *Local[C] {
	l := &Local[C]{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].users = make(map[string][]C)
		l.shards[i].devices = make(map[string]string)
	}
	return l
}

func (l *Local[C]) shard(user string) *localShard[C] {
	return &l.shards[maphash.String(l.seed, user)%shards]
}

// Add registers c as its user's only connection (the single login policy)
// and returns the connection it replaced, if any. The caller kicks the
// replaced connection.
func (l *Local[C]) Add(c C) (old C, replaced bool) {
	s := l.shard(c.User())
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.users[c.User()]
	for _, p := range prev {
		delete(s.devices, p.ConnID())
	}
	if n := len(prev); n > 0 {
		old, replaced = prev[n-1], true
	}
	s.n += 1 - len(prev)
	s.users[c.User()] = []C{c}
	return old, replaced
}

// AddDevice registers c as one more connection of its user (the multi
// login policy), on device ("" for a connection that names none). A
// connection of the same named device is replaced: it is returned for the
// caller to kick.
func (l *Local[C]) AddDevice(c C, device string) (old C, replaced bool) {
	s := l.shard(c.User())
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.users[c.User()]
	next := make([]C, 0, len(prev)+1)
	for _, p := range prev {
		if p.ConnID() == c.ConnID() {
			continue
		}
		if device != "" && s.devices[p.ConnID()] == device {
			old, replaced = p, true
			delete(s.devices, p.ConnID())
			continue
		}
		next = append(next, p)
	}
	s.n += len(next) + 1 - len(prev)
	s.users[c.User()] = append(next, c)
	if device != "" {
		s.devices[c.ConnID()] = device
	}
	return old, replaced
}

// Remove unregisters c if it is still registered: a connection that was
// already replaced never removes its successor. It reports whether c was
// registered.
func (l *Local[C]) Remove(c C) bool {
	s := l.shard(c.User())
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.users[c.User()]
	i := l.index(prev, c.ConnID())
	if i < 0 {
		return false
	}
	delete(s.devices, c.ConnID())
	s.n--
	if len(prev) == 1 {
		delete(s.users, c.User())
		return true
	}
	next := make([]C, 0, len(prev)-1)
	next = append(next, prev[:i]...)
	s.users[c.User()] = append(next, prev[i+1:]...)
	return true
}

func (*Local[C]) index(cs []C, conn string) int {
	for i, c := range cs {
		if c.ConnID() == conn {
			return i
		}
	}
	return -1
}

// Get returns the user's newest connection on this node.
func (l *Local[C]) Get(user string) (C, bool) {
	cs := l.Conns(user)
	if len(cs) == 0 {
		var zero C
		return zero, false
	}
	return cs[len(cs)-1], true
}

// Conns returns the user's connections on this node, oldest login first.
// The slice is shared: the caller must not change it.
func (l *Local[C]) Conns(user string) []C {
	s := l.shard(user)
	s.mu.RLock()
	cs := s.users[user]
	s.mu.RUnlock()
	return cs
}

// Conn returns the user's connection conn, if it is registered here.
func (l *Local[C]) Conn(user, conn string) (C, bool) {
	cs := l.Conns(user)
	if i := l.index(cs, conn); i >= 0 {
		return cs[i], true
	}
	var zero C
	return zero, false
}

// Len returns the number of registered connections.
func (l *Local[C]) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		n += s.n
		s.mu.RUnlock()
	}
	return n
}

// Each calls f for every registered connection until f returns false. f
// must not call back into the registry.
func (l *Local[C]) Each(f func(C) bool) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		var cs []C
		for _, ucs := range s.users {
			cs = append(cs, ucs...)
		}
		s.mu.RUnlock()
		for _, c := range cs {
			if !f(c) {
				return
			}
		}
	}
}
