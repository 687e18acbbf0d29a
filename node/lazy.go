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

// lazyFlusher holds the connections whose queues hold frames that wait,
// and starts their write loops after lazyFlush. One goroutine, run, owned
// by the server, stopped by its context.
type lazyFlusher struct {
	wake chan struct{} // has a value when due went from empty to not

	mu  sync.Mutex
	due []*client // guarded by mu
}

func newLazyFlusher() *lazyFlusher { return &lazyFlusher{wake: make(chan struct{}, 1)} }

// add hands c to the flush: its queue holds a frame that waits, and no
// write loop runs. Never blocks.
func (f *lazyFlusher) add(c *client) {
	f.mu.Lock()
	first := len(f.due) == 0
	f.due = append(f.due, c)
	f.mu.Unlock()
	if first {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// run flushes, lazyFlush after the first connection was added, every
// connection added by then, until ctx ends.
func (f *lazyFlusher) run(ctx context.Context) {
	t := time.NewTimer(lazyFlush)
	t.Stop()
	var batch []*client
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		}
		t.Reset(lazyFlush)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		f.mu.Lock()
		batch, f.due = f.due, batch[:0]
		f.mu.Unlock()
		for i, c := range batch {
			if c.send.flushLazy() {
				c.startWriter()
			}
			batch[i] = nil
		}
	}
}
