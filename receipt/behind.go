package receipt

import (
	"context"
	"math"
	"sync"
	"time"
)

// Write-behind: positions that rose wait here, one per conversation and
// user (the highest), until Run writes them to Durable.
const (
	// gatherFor is how long Run waits, after the first position arrives,
	// for others to write with it. A user reading along raises a position
	// several times a second; one write every few seconds carries only the
	// highest, which spares MongoDB nearly all of them (on the embedded
	// store each is a read and a replace, about 2 ms of its CPU).
	gatherFor = 5 * time.Second
	// maxWrite bounds the positions of one write, and pace is the pause
	// between two writes of one round: the store's work comes in small
	// steps beside the message path's, never in one burst (at most 400
	// positions a second).
	maxWrite = 20
	pace     = 50 * time.Millisecond
	// writeTimeout bounds one write; finalWrite the last one, at stop.
	writeTimeout = 5 * time.Second
	finalWrite   = 2 * time.Second
	// retryMin and retryMax bound the wait after a failed write.
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

type posKey struct{ conv, user string }

// behind is the queue of positions to make durable. add never blocks.
type behind struct {
	max  int
	wake chan struct{} // has a value when something was added since Run last looked

	mu      sync.Mutex
	pending map[posKey]int64 // guarded by mu
}

func newBehind(max int) *behind {
	return &behind{max: max, wake: make(chan struct{}, 1), pending: map[posKey]int64{}}
}

// add queues p, or raises the one queued for its conversation and user.
// It reports false when p was not queued: the queue is full.
func (b *behind) add(p Position) bool {
	k := posKey{p.Conv, p.User}
	b.mu.Lock()
	cur, ok := b.pending[k]
	switch {
	case ok:
		b.pending[k] = max(cur, p.Seq)
	case len(b.pending) >= b.max:
		b.mu.Unlock()
		return false
	default:
		b.pending[k] = p.Seq
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return true
}

// take removes and returns up to n queued positions.
func (b *behind) take(n int) []Position {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Position, 0, min(n, len(b.pending)))
	for k, seq := range b.pending {
		if len(out) == n {
			break
		}
		out = append(out, Position{Conv: k.conv, User: k.user, Seq: seq})
		delete(b.pending, k)
	}
	return out
}

// putBack queues again positions whose write failed, under what was
// queued meanwhile (the higher one stays). They were accepted once, so
// they go back past the bound.
func (b *behind) putBack(ps []Position) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range ps {
		k := posKey{p.Conv, p.User}
		b.pending[k] = max(b.pending[k], p.Seq)
	}
}

// Len is how many positions wait to be made durable.
func (s *Store) Len() int {
	s.behind.mu.Lock()
	defer s.behind.mu.Unlock()
	return len(s.behind.pending)
}

// Run writes the positions that rose to Durable until ctx ends, then
// writes what is still queued, for at most a moment, and returns. One
// goroutine runs it: the Store's owner starts it, and stops it through
// ctx. A failed write is retried with a growing wait; what is queued
// meanwhile joins it. Without Durable it only returns when ctx ends.
func (s *Store) Run(ctx context.Context) {
	wait := retryMin
	for {
		select {
		case <-ctx.Done():
			s.final()
			return
		case <-s.behind.wake:
		}
		gather := time.NewTimer(gatherFor)
		select {
		case <-ctx.Done():
			gather.Stop()
			s.final()
			return
		case <-gather.C:
		}
		if s.durable == nil {
			s.behind.take(s.behind.max)
			continue
		}
		if err := s.writeAll(ctx, writeTimeout, pace); err != nil {
			if ctx.Err() == nil {
				s.warn.Warn().Err(err).Int("waiting", s.Len()).Dur("retry", wait).
					Msg("cannot make read positions durable; retrying (logged at most 5 a second)")
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				s.final()
				return
			case <-t.C:
			}
			wait = min(2*wait, retryMax)
			select {
			case s.behind.wake <- struct{}{}:
			default:
			}
			continue
		}
		wait = retryMin
	}
}

// writeAll writes what is queued now, maxWrite at a time, each write
// within timeout and the next after a pause of gap (none when 0). What
// is queued meanwhile waits for the next round: positions that keep
// rising would otherwise keep a round going for ever. A failed write,
// and what is left when ctx ends during a pause, go back in the queue.
func (s *Store) writeAll(ctx context.Context, timeout, gap time.Duration) error {
	round := s.behind.take(math.MaxInt)
	for len(round) > 0 {
		batch := round[:min(maxWrite, len(round))]
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := s.durable.SaveReadPositions(wctx, batch)
		if err == nil {
			s.heal(wctx, batch)
		}
		cancel()
		if err != nil {
			s.behind.putBack(round)
			return err
		}
		round = round[len(batch):]
		if len(round) == 0 || gap == 0 {
			continue
		}
		t := time.NewTimer(gap)
		select {
		case <-ctx.Done():
			t.Stop()
			s.behind.putBack(round)
			return nil
		case <-t.C:
		}
	}
	return nil
}

// final writes what is queued when Run stops, for at most finalWrite.
func (s *Store) final() {
	if s.durable == nil || s.Len() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finalWrite)
	defer cancel()
	if err := s.writeAll(ctx, finalWrite, 0); err != nil {
		s.log.Warn().Err(err).Int("positions", s.Len()).Msg("stopping with read positions not made durable; Redis holds them")
	}
}
