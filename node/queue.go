package node

import "sync"

// frameQueue is a client's bounded queue of frames for its write loop.
// Unlike a buffered channel of the same bound, which is allocated whole
// with the connection (24 KiB for 1024 frames), it holds memory only while
// frames wait: an idle connection costs a few words. Safe for concurrent
// use; one goroutine takes.
type frameQueue struct {
	mu     sync.Mutex
	frames [][]byte
	max    int
	ready  chan struct{} // capacity 1: frames may be waiting
}

// keepCap is the capacity a drained queue keeps; a larger one, left by a
// burst, is given back.
const keepCap = 16

func newFrameQueue(max int) *frameQueue {
	return &frameQueue{max: max, ready: make(chan struct{}, 1)}
}

// push adds b unless max frames already wait; it reports whether it did.
func (q *frameQueue) push(b []byte) bool {
	q.mu.Lock()
	if len(q.frames) >= q.max {
		q.mu.Unlock()
		return false
	}
	q.frames = append(q.frames, b)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take moves every waiting frame, oldest first, into spare (its contents
// are dropped) and returns it. The caller passes the slice back on its
// next call, so the queue and its taker swap two slices.
func (q *frameQueue) take(spare [][]byte) [][]byte {
	clear(spare)
	if cap(spare) > keepCap {
		spare = nil
	}
	q.mu.Lock()
	out := q.frames
	q.frames = spare[:0]
	q.mu.Unlock()
	return out
}
