package node

import (
	"context"
	"fmt"
	"time"

	"chatcluster/handler"
	"chatcluster/hotwords"
	"chatcluster/protocol"
)

// wordsQueue is how many message texts may wait to be counted; beyond it
// texts are not counted (the ranking is a statistic; chat never waits on it).
const wordsQueue = 4096

// wordsSvc implements handler.Words: counting happens off the request
// path, on one goroutine that owns the queue.
type wordsSvc struct {
	s       *Server
	counter *hotwords.Counter
	queue   chan string
}

func newWordsSvc(s *Server) *wordsSvc {
	return &wordsSvc{s: s, counter: hotwords.New(s.rdb, s.cfg.RedisPrefix), queue: make(chan string, wordsQueue)}
}

// Count queues m's text to be counted; it never blocks. The handler calls
// it once per message stored for a client of this node, so it also counts
// the messages the node accepted. Direct messages count only with
// HotWordsDirect: the ranking is visible to every user.
func (w *wordsSvc) Count(m protocol.Message) {
	w.s.messagesIn.Add(1)
	if m.Room != "" {
		w.s.m.MessagesInRoom.Inc()
	} else {
		w.s.m.MessagesInDM.Inc()
		if !w.s.cfg.HotWordsDirect {
			return
		}
	}
	select {
	case w.queue <- m.Text:
	default:
	}
}

// Top returns the n most used words.
func (w *wordsSvc) Top(ctx context.Context, n int) ([]protocol.WordCount, error) {
	out, err := w.counter.Top(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	return out, nil
}

// Words are counted in memory and added to Redis together, every
// wordsFlushEvery or once wordsPending distinct words wait: one round trip
// a second instead of one per message.
const (
	wordsFlushEvery = time.Second
	wordsPending    = 10_000
)

// run counts queued texts until the node stops.
func (w *wordsSvc) run() {
	t := time.NewTicker(wordsFlushEvery)
	defer t.Stop()
	counts := map[string]int64{}
	failing := false
	flush := func() {
		ctx, cancel := context.WithTimeout(w.s.ctx, 2*time.Second)
		err := w.counter.AddCounts(ctx, counts)
		cancel()
		// Counted or not, they are not counted again: a statistic never
		// holds chat back.
		clear(counts)
		switch {
		case err != nil && !failing && w.s.ctx.Err() == nil:
			w.s.log.Warn().Err(err).Msg("cannot count hot words; they are skipped until Redis answers")
			failing = true
		case err == nil && failing:
			w.s.log.Info().Msg("counting hot words again")
			failing = false
		}
	}
	for {
		select {
		case <-w.s.ctx.Done():
			return
		case text := <-w.queue:
			for _, tok := range hotwords.Tokens(text) {
				counts[tok]++
			}
			if len(counts) >= wordsPending {
				flush()
			}
		case <-t.C:
			if len(counts) > 0 {
				flush()
			}
		}
	}
}
