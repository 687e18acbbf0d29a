// Package lease is a lease in Redis: one holder at a time among the
// processes that compete for it (the history writers, the webhook
// dispatchers), renewed by its holder and lapsing when the holder stops
// renewing it.
package lease

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// holdScript takes the lease KEYS[1] for ARGV[1] for ARGV[2] ms if it is
// free, or extends it if ARGV[1] holds it; it returns 1 if ARGV[1] holds
// it now.
var holdScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return 1
end
if not v then
	redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
	return 1
end
return 0`)

// releaseScript deletes the lease KEYS[1] if ARGV[1] holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0`)

// Hold takes the lease key for holder for ttl if it is free, or renews it
// if holder holds it, and reports whether holder holds it now.
func Hold(ctx context.Context, rdb redis.UniversalClient, key, holder string, ttl time.Duration) (bool, error) {
	n, err := holdScript.Run(ctx, rdb, []string{key}, holder, ttl.Milliseconds()).Int()
	return n == 1, err
}

// Release gives the lease key up if holder holds it, so that another
// takes it at once.
func Release(ctx context.Context, rdb redis.UniversalClient, key, holder string) error {
	return releaseScript.Run(ctx, rdb, []string{key}, holder).Err()
}
