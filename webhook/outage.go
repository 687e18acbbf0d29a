package webhook

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// Waits after a failed Redis command.
const (
	minRedisBackoff = 200 * time.Millisecond
	maxRedisBackoff = 5 * time.Second
)

// outage tracks the failures of a dependency so that an outage is logged
// once when it starts and once when it ends, not once per attempt. Its
// owner's goroutine only.
type outage struct {
	what   string // "Redis"
	effect string // what waits meanwhile, for the log line
	down   bool
	since  time.Time
	tries  int
	delay  time.Duration
}

// fail records a failed attempt and returns how long to wait before the
// next one.
func (o *outage) fail(log zerolog.Logger, err error) time.Duration {
	o.tries++
	if !o.down {
		o.down, o.since = true, time.Now()
		log.Error().Err(err).Msgf("%s failed; %s (retrying with backoff)", o.what, o.effect)
	}
	o.delay = max(minRedisBackoff, min(2*o.delay, maxRedisBackoff))
	return o.delay
}

// ok records a success; it logs the end of an outage that was on.
func (o *outage) ok(log zerolog.Logger) {
	if o.down {
		log.Info().Dur("down", time.Since(o.since)).Int("attempts", o.tries).Msgf("%s is back", o.what)
	}
	o.down, o.tries, o.delay = false, 0, 0
}

// sleep waits d or until ctx is done, and reports whether the full d
// passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
