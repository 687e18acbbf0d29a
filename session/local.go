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

// Local is a node's registry of its logged-in connections, at most one per
// user. It is sharded by user so that logins and lookups on different users
// do not contend. Safe for concurrent use.
type Local[C Conn] struct {
	seed   maphash.Seed
	shards [shards]localShard[C]
}

type localShard[C Conn] struct {
	mu    sync.RWMutex
	users map[string]C // guarded by mu
}

// NewLocal returns an empty registry.
func NewLocal[C Conn]() *Local[C] {
	l := &Local[C]{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].users = make(map[string]C)
	}
	return l
}

func (l *Local[C]) shard(user string) *localShard[C] {
	return &l.shards[maphash.String(l.seed, user)%shards]
}

// Add registers c for its user and returns the connection it replaced, if
// any. The caller kicks the replaced connection.
func (l *Local[C]) Add(c C) (old C, replaced bool) {
	s := l.shard(c.User())
	s.mu.Lock()
	old, replaced = s.users[c.User()]
	s.users[c.User()] = c
	s.mu.Unlock()
	return old, replaced
}

// Remove unregisters c if it is still the user's connection: a connection
// that was already replaced never removes its successor.
func (l *Local[C]) Remove(c C) bool {
	s := l.shard(c.User())
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.users[c.User()]
	if !ok || cur.ConnID() != c.ConnID() {
		return false
	}
	delete(s.users, c.User())
	return true
}

// Get returns the user's connection on this node.
func (l *Local[C]) Get(user string) (C, bool) {
	s := l.shard(user)
	s.mu.RLock()
	c, ok := s.users[user]
	s.mu.RUnlock()
	return c, ok
}

// Len returns the number of registered connections.
func (l *Local[C]) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		n += len(s.users)
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
		cs := make([]C, 0, len(s.users))
		for _, c := range s.users {
			cs = append(cs, c)
		}
		s.mu.RUnlock()
		for _, c := range cs {
			if !f(c) {
				return
			}
		}
	}
}
