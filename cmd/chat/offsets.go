package main

import (
	"context"
	"maps"
	"sync"

	"chatcluster/protocol"
)

// offsets is what the client holds of each conversation: the highest seq
// it has (its offset for sync) and the highest seq it printed. A
// conversation is known once it has an entry; the client fetches gaps only
// in known conversations. Safe for concurrent use.
type offsets struct {
	me      string // the user: whose messages are own (set once, before use)
	mu      sync.Mutex
	held    map[string]int64 // highest seq held per known conversation
	shown   map[string]int64 // highest seq printed by this process
	own     map[string]int64 // seq of the user's last message printed, per conversation
	changed chan struct{}    // closed and replaced whenever held grows
}

func newOffsets() *offsets {
	return &offsets{held: map[string]int64{}, shown: map[string]int64{}, own: map[string]int64{}, changed: make(chan struct{})}
}

// ownOffsets returns offsets of user me.
func ownOffsets(me string) *offsets {
	o := newOffsets()
	o.me = me
	return o
}

// get returns the offset of conv and whether conv is known.
func (o *offsets) get(conv string) (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seq, ok := o.held[conv]
	return seq, ok
}

// set makes conv known with offset seq, replacing what was there (the
// baseline at start-up, or the server's latest after a rebuild mark). It
// does not count as printed.
func (o *offsets) set(conv string, seq int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.held[conv] = seq
	o.notifyLocked()
}

// know makes conv known with offset 0 if it is not known yet.
func (o *offsets) know(conv string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.held[conv]; !ok {
		o.held[conv] = 0
	}
}

// forget drops conv (a room the user left).
func (o *offsets) forget(conv string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.held, conv)
	delete(o.shown, conv)
}

// accept records m and reports whether it is new: above the offset of its
// conversation (any m is new in an unknown conversation). An event is
// held, never printed: it does not count as shown.
func (o *offsets) accept(m protocol.Message) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if held, ok := o.held[m.Conv]; ok && m.Seq <= held {
		return false
	}
	o.held[m.Conv] = m.Seq
	if m.Kind == "" {
		o.shown[m.Conv] = max(o.shown[m.Conv], m.Seq)
		o.noteOwnLocked(m)
	}
	o.notifyLocked()
	return true
}

// noteOwnLocked records m when it is the user's. o.mu held.
func (o *offsets) noteOwnLocked(m protocol.Message) {
	if m.From == o.me && m.Kind == "" && !m.Recalled {
		o.own[m.Conv] = max(o.own[m.Conv], m.Seq)
	}
}

// lastOwn is the seq of the user's last message in conv that this process
// printed; 0 for none.
func (o *offsets) lastOwn(conv string) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.own[conv]
}

// acceptRecent records m, one of a room's recent messages shown on join,
// and reports whether to print it: whether this process has not printed it
// (it may be at or below the offset, held but never printed).
func (o *offsets) acceptRecent(m protocol.Message) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if m.Seq <= o.shown[m.Conv] {
		return false
	}
	if m.Kind == "" {
		o.shown[m.Conv] = m.Seq
		o.noteOwnLocked(m)
	}
	if held, ok := o.held[m.Conv]; !ok || m.Seq > held {
		o.held[m.Conv] = m.Seq
		o.notifyLocked()
	}
	return true
}

// snapshot returns the offsets of every known conversation.
func (o *offsets) snapshot() map[string]int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.held)
}

// wait waits until the offset of conv reaches seq and reports whether it
// did before ctx ended.
func (o *offsets) wait(ctx context.Context, conv string, seq int64) bool {
	for {
		o.mu.Lock()
		held, ch := o.held[conv], o.changed
		o.mu.Unlock()
		if held >= seq {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// notifyLocked wakes the waiters; o.mu must be held.
func (o *offsets) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}
