package main

import (
	"sync"
	"time"
)

// typingEvery is how often one user's typing in one conversation is
// printed at most: a line-based terminal must not scroll with it.
const typingEvery = 10 * time.Second

// signals remembers what typing and read pushes printed lately, so that
// each is printed once in a while, not with every push. Safe for
// concurrent use; the zero value is ready.
type signals struct {
	mu      sync.Mutex
	typed   map[string]time.Time // conv + " " + user -> when printed last
	seenFor map[string]int64     // conv -> own message whose reading was printed
}

// typing reports whether from's typing in conv at now is to be printed.
func (s *signals) typing(conv, from string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.typed == nil {
		s.typed = map[string]time.Time{}
	}
	k := conv + " " + from
	if last, ok := s.typed[k]; ok && now.Sub(last) < typingEvery {
		return false
	}
	for key, t := range s.typed {
		if now.Sub(t) >= typingEvery {
			delete(s.typed, key) // bounded by the users typing lately
		}
	}
	s.typed[k] = now
	return true
}

// seen reports whether the other side's reading of own message seq of conv
// is to be printed: once per message.
func (s *signals) seen(conv string, seq int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seenFor == nil {
		s.seenFor = map[string]int64{}
	}
	if s.seenFor[conv] >= seq {
		return false
	}
	s.seenFor[conv] = seq
	return true
}
