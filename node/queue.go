package node

import (
	"errors"
	"sync"
	"time"
)

// Why a push was refused. Both mean the client cannot keep up and is to be
// disconnected; they differ in what the log says.
var (
	errQueueBehind = errors.New("node: client has not caught up with its send queue")
	errQueueBytes  = errors.New("node: client send queue over its byte bound")
)

// frameQueue is a client's queue of frames for its write loop. It judges
// the client, not the size of a burst: frames beyond the soft bound are
// accepted as long as the write loop keeps coming back for them, so a
// burst the cluster produces (a failover flushing what it held, a large
// sync) reaches a client that reads. A push is refused when the queue has
// held soft or more frames for longer than behindFor without the write
// loop taking them (the client reads slower than it is sent to, or not at
// all), or when the bytes waiting would pass maxBytes (memory stays
// bounded whatever happens).
//
// Unlike a buffered channel, which is allocated whole with the connection,
// it holds memory only while frames wait: an idle connection costs a few
// words.
//
// It also says when a write loop is to run: a connection has one only
// while there is something to write (see client.writeLoop). The first push
// (or poke) while none runs tells its caller to start one; the loop asks
// next for work and, when there is none, it is told to return, in the
// same step that lets the next push start another. So at most one runs,
// and none is left out.
//
// Safe for concurrent use; one goroutine at a time takes.
type frameQueue struct {
	soft      int           // frames that may wait before the clock starts
	maxBytes  int           // bytes that may wait, ever
	behindFor time.Duration // how long the queue may stay at soft or more

	mu      sync.Mutex
	pushed  map[string]int64 // the highest seq pushed per conversation; see pushMessage
	frames  [][]byte
	bytes   int       // total length of frames
	behind  time.Time // when frames reached soft since the last take; zero if not
	writing bool      // a write loop runs, or its start was asked for
	poked   bool      // something besides frames wants the write loop; see poke
	lazy    bool      // the connection waits in the server's lazy flush (pushLazy)
}

// keepCap is the capacity a drained queue keeps; a larger one, left by a
// burst, is given back.
const keepCap = 16

func newFrameQueue(soft, maxBytes int, behindFor time.Duration) *frameQueue {
	return &frameQueue{soft: soft, maxBytes: maxBytes, behindFor: behindFor}
}

// push adds b, or refuses it with errQueueBehind or errQueueBytes when the
// client is to be disconnected as too slow. start says that no write loop
// runs: the caller is to start one.
func (q *frameQueue) push(b []byte) (start bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.addLocked(b); err != nil {
		return false, err
	}
	return q.startLocked(), nil
}

// addLocked adds b, or refuses it (see push). q.mu held.
func (q *frameQueue) addLocked(b []byte) error {
	if q.bytes+len(b) > q.maxBytes {
		return errQueueBytes
	}
	if len(q.frames) >= q.soft {
		now := time.Now()
		if q.behind.IsZero() {
			q.behind = now
		} else if now.Sub(q.behind) > q.behindFor {
			return errQueueBehind
		}
	}
	q.frames = append(q.frames, b)
	q.bytes += len(b)
	return nil
}

// pushLazy adds b like push, but starts no write loop: b goes out with
// the next frame that does, or when the server's lazy flush calls
// flushLazy. due says the caller is to hand the connection to the lazy
// flush (it is not there yet, and no write loop runs to take b).
func (q *frameQueue) pushLazy(b []byte) (due bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.addLocked(b); err != nil {
		return false, err
	}
	return q.dueLocked(), nil
}

// pushLossy adds b, a push that may be lost (typing), only while the
// queue holds fewer than lossyFrames frames and a small part of its byte
// bound: a client that has fallen behind is sent nothing it can do
// without, and such a push never makes a client too slow. It may wait
// too, as for pushLazy. ok says b was added; due is as for pushLazy.
func (q *frameQueue) pushLossy(b []byte) (ok, due bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) >= min(lossyFrames, q.soft) || q.bytes+len(b) > q.maxBytes/16 {
		return false, false
	}
	q.frames = append(q.frames, b)
	q.bytes += len(b)
	return true, q.dueLocked()
}

func (q *frameQueue) dueLocked() bool {
	if q.writing || q.lazy {
		return false
	}
	q.lazy = true
	return true
}

// flushLazy is the lazy flush's call for a connection handed to it:
// start says a write loop is to be started for what waits.
func (q *frameQueue) flushLazy() (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.lazy = false
	if len(q.frames) == 0 {
		return false
	}
	return q.startLocked()
}

// lossyFrames is how many frames may wait in a queue that still takes a
// push that may be lost.
const lossyFrames = 32

// poke has the write loop look at the connection again (a ping is due, or
// the connection is closing) even with no frame waiting. start is as for
// push.
func (q *frameQueue) poke() (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.poked = true
	return q.startLocked()
}

func (q *frameQueue) startLocked() bool {
	if q.writing {
		return false
	}
	q.writing = true
	return true
}

// next is take for the write loop: it returns the waiting frames, with
// ok, if there are any or the queue was poked since the last call.
// Otherwise it returns ok false, and the write loop is to return: a
// push from now on starts another.
func (q *frameQueue) next(spare [][]byte) (frames [][]byte, ok bool) {
	q.mu.Lock()
	if len(q.frames) == 0 && !q.poked {
		q.writing = false
		q.frames = nil // an idle connection keeps no slice
		q.mu.Unlock()
		clear(spare)
		if cap(spare) > keepCap {
			spare = nil
		}
		return spare[:0], false
	}
	q.poked = false
	q.mu.Unlock()
	return q.take(spare), true
}

// maxPushed bounds the conversations a queue remembers for pushMessage;
// past it, it starts again from none.
const maxPushed = 4096

// pushMessage adds b, the push of message seq of conv, like push, unless a
// push of that message or a later one of conv was added before: the
// cluster hands a message over again when it cannot tell whether a link
// that failed had carried it, and one connection is shown each message
// once. Messages of one conversation reach a connection in seq order, so
// a lower seq is such a repeat.
func (q *frameQueue) pushMessage(conv string, seq int64, b []byte) (dup, start bool, err error) {
	q.mu.Lock()
	if last, ok := q.pushed[conv]; ok && seq <= last {
		q.mu.Unlock()
		return true, false, nil
	}
	if q.pushed == nil || len(q.pushed) >= maxPushed {
		q.pushed = map[string]int64{}
	}
	q.pushed[conv] = seq
	q.mu.Unlock()
	start, err = q.push(b)
	return false, start, err
}

// take moves every waiting frame, oldest first, into spare (its contents
// are dropped) and returns it. The caller passes the slice back on its
// next call, so the queue and its taker swap two slices. Taking restarts
// the clock of a queue that was behind.
func (q *frameQueue) take(spare [][]byte) [][]byte {
	clear(spare)
	if cap(spare) > keepCap {
		spare = nil
	}
	q.mu.Lock()
	out := q.frames
	q.frames = spare[:0]
	q.bytes = 0
	q.behind = time.Time{}
	q.mu.Unlock()
	return out
}
