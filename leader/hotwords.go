package leader

import (
	"context"
	"time"

	"chatcluster/hotwords"
)

// hotWordsLoop resets the hot-word ranking every HotWordsReset while this
// term lasts. The schedule follows the last reset recorded in Redis, so a
// new leader continues it rather than starting over, and the reset is
// fenced by epoch, so a deposed leader cannot reset.
func (l *Term) hotWordsLoop() {
	every := l.d.HotWordsReset
	if every <= 0 {
		return
	}
	check := min(max(every/10, 50*time.Millisecond), time.Minute)
	t := time.NewTicker(check)
	defer t.Stop()
	counter := l.d.HotWords
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
		last, err := counter.LastReset(ctx)
		if err == nil && last.At.IsZero() {
			_, err = counter.Begin(ctx, l.id, l.epoch, time.Now())
		} else if err == nil && hotwords.Due(last, every, time.Now()) {
			var done bool
			done, err = counter.Reset(ctx, l.id, l.epoch, time.Now())
			switch {
			case err == nil && done:
				l.log.Info().Dur("every", every).Msg("hot words reset")
			case err == nil:
				l.log.Warn().Int64("epoch", l.epoch).Msg("hot words not reset: a newer leader exists")
			}
		}
		cancel()
		if err != nil && l.ctx.Err() == nil {
			l.log.Warn().Err(err).Msg("cannot reset hot words")
		}
	}
}
