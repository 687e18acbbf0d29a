package node

import (
	"context"
	"sync"
	"time"
)

// Read receipts and typing indicators come about as often as messages,
// and each would cost a write on its connection of its own (a system call
// on both sides, the costliest part of a small frame). No one waits on
// them the way a message is waited for, so they wait in the connection's
// queue, for at most lazyFlush, for a frame that is written at once (a
// message push, a reply) to take them along in the same write; the
// connections whose queues hold only such frames are written by the lazy
// flush when lazyFlush has passed.

// lazyFlush is the longest a read or typing frame waits.
const lazyFlush = 20 * time.Millisecond

// lazyStep is how much earlier than its time a connection may be written
// along with one whose time has come. Each connection is written
// lazyFlush after it was handed over, not all of a window's at its end:
// one flush of every connection that waited would start dozens of write
// loops at once, on both sides, and a message arriving then waits behind
// them all.
const lazyStep = time.Millisecond

// lazyFlusher holds the connections whose queues hold frames that wait,
// and starts their write loops lazyFlush after each was handed over. One
// goroutine, run, owned by the server, stopped by its context.
type lazyFlusher struct {
	wake chan struct{} // has a value when due went from empty to not

	mu  sync.Mutex
	due []lazyConn // in the order handed over; guarded by mu
}

// lazyConn is a connection handed to the flush, and when.
type lazyConn struct {
	c  *client
	at time.Time
}

func newLazyFlusher() *lazyFlusher { return &lazyFlusher{wake: make(chan struct{}, 1)} }

// add hands c to the flush: its queue holds a frame that waits, and no
// write loop runs. Never blocks.
func (f *lazyFlusher) add(c *client) {
	f.mu.Lock()
	first := len(f.due) == 0
	f.due = append(f.due, lazyConn{c: c, at: time.Now()})
	f.mu.Unlock()
	if first {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// run writes, lazyFlush after it was added, each connection added, until
// ctx ends.
func (f *lazyFlusher) run(ctx context.Context) {
	t := time.NewTimer(lazyFlush)
	t.Stop()
	var batch []*client
	for {
		f.mu.Lock()
		var next time.Time
		if len(f.due) > 0 {
			next = f.due[0].at.Add(lazyFlush)
		}
		f.mu.Unlock()
		if next.IsZero() {
			select {
			case <-ctx.Done():
				return
			case <-f.wake:
			}
			continue
		}
		if wait := time.Until(next); wait > 0 {
			t.Reset(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		batch = f.take(batch[:0], time.Now().Add(lazyStep-lazyFlush))
		for i, c := range batch {
			if c.send.flushLazy() {
				c.startWriter()
			}
			batch[i] = nil
		}
	}
}

// take appends to batch the connections added up to upTo and drops them
// from due.
func (f *lazyFlusher) take(batch []*client, upTo time.Time) []*client {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for n < len(f.due) && !f.due[n].at.After(upTo) {
		batch = append(batch, f.due[n].c)
		n++
	}
	clear(f.due[:n])
	f.due = f.due[n:]
	if len(f.due) == 0 {
		f.due = nil
	}
	// A value left in wake from an add that found due empty is spent:
	// the loop looks at due itself.
	select {
	case <-f.wake:
	default:
	}
	return batch
}
