package accounts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrThrottled is what a password login gets, without its password being
// checked, while its account or source address waits after failed logins.
// The error is a *ThrottledError, which says how long.
var ErrThrottled = errors.New("accounts: too many failed logins")

// ThrottledError says how long a throttled login has to wait.
// errors.Is(err, ErrThrottled) holds for it.
type ThrottledError struct {
	Wait time.Duration
}

func (e *ThrottledError) Error() string { return "accounts: " + e.Reason() }

// Reason is the error as clients are told it.
func (e *ThrottledError) Reason() string {
	return fmt.Sprintf("too many failed logins for this username or from this address; retry in %d s", e.RetryAfter())
}

// Is makes errors.Is(err, ErrThrottled) true.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// RetryAfter is Wait in whole seconds, rounded up, at least 1: the value
// of an HTTP Retry-After header.
func (e *ThrottledError) RetryAfter() int {
	return max(1, int((e.Wait+time.Second-1)/time.Second))
}

// ThrottleConfig sets how failed password logins slow down the next
// ones. An account and a source address each count their failed logins;
// the first FreeFailures (FreeFailuresAddr for an address) cost nothing.
// After each further failure the next attempt has to wait Backoff, then
// twice that after the next failure, and so on up to MaxBackoff. A counter
// is forgotten Forget after its last wait ended; a successful login resets
// its account's counter (not the address's). Backoff 0 turns throttling
// off.
type ThrottleConfig struct {
	FreeFailures     int
	FreeFailuresAddr int
	Backoff          time.Duration
	MaxBackoff       time.Duration
	Forget           time.Duration
}

// DefaultThrottle is the throttle the gateway and the nodes use by default.
func DefaultThrottle() ThrottleConfig {
	return ThrottleConfig{FreeFailures: 5, FreeFailuresAddr: 20, Backoff: time.Second, MaxBackoff: 15 * time.Minute, Forget: time.Hour}
}

// Validate checks the configuration; the flag names are the commands'.
func (c ThrottleConfig) Validate() error {
	var errs []error
	if c.FreeFailures < 0 {
		errs = append(errs, errors.New("--login-free-failures must not be negative"))
	}
	if c.FreeFailuresAddr < 0 {
		errs = append(errs, errors.New("--login-free-failures-addr must not be negative"))
	}
	if c.Backoff < 0 || c.Backoff > 0 && c.Backoff < time.Millisecond {
		errs = append(errs, errors.New("--login-backoff must be 0 (no throttling) or at least 1ms"))
	}
	if c.Backoff > 0 && c.MaxBackoff < c.Backoff {
		errs = append(errs, fmt.Errorf("--login-backoff-max %s must be at least --login-backoff %s", c.MaxBackoff, c.Backoff))
	}
	if c.Backoff > 0 && c.Forget <= 0 {
		errs = append(errs, errors.New("--login-forget must be positive"))
	}
	return errors.Join(errs...)
}

// throttle keeps the failure counters in Redis, so that every gateway and
// node sees the same ones. A counter is a hash {n: attempts that count as
// failed, until: unix ms before which no attempt is let through}, with a
// TTL so that counters nobody feeds disappear.
//
// A password check takes a slot first (acquire): it is refused if its
// account's or its address's counter waits; else the account's counter
// counts it as failed at once, and sets the wait that follows if it does
// fail. So attempts at one account made in parallel are throttled like
// attempts made one after the other, and a refused attempt costs one
// Redis call and no bcrypt. A check that succeeds, or that could not be
// made (a store was down), gives the slot back (release). The address's
// counter counts an attempt only once it failed (failed): many users
// behind one address logging in at the same moment must not throttle each
// other, so a burst of guesses from one address may pass its free
// failures by the attempts in flight.
type throttle struct {
	rdb    redis.UniversalClient
	prefix string
	cfg    ThrottleConfig
}

func (t *throttle) on() bool { return t.cfg.Backoff > 0 }

// wait is the wait after the over-th failure past the free ones (over >
// 0; 0 before the first), as countScript computes it.
func (t *throttle) wait(over int64) time.Duration {
	if over <= 0 {
		return 0
	}
	d := t.cfg.Backoff
	for i := int64(1); i < over && d < t.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxBackoff)
}

func (t *throttle) userKey(key string) string  { return t.prefix + "login-failures:user:" + key }
func (t *throttle) addrKey(addr string) string { return t.prefix + "login-failures:addr:" + addr }

// countScript: KEYS the counters, the first of them the one to count in;
// ARGV now (unix ms), the first wait, the longest wait, the forget time
// (ms), "1" to refuse (and count nothing) while any of KEYS waits, "1" to
// count the attempt in KEYS[1] as failed, and KEYS[1]'s free failures.
// It returns {0, wait ms} when refused, else {1, n, the until before, the
// until now} of KEYS[1] (zeros when nothing was counted).
var countScript = redis.NewScript(`
local now, base, cap, forget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[5] == '1' then
  local wait = 0
  for _, k in ipairs(KEYS) do
    local u = tonumber(redis.call('HGET', k, 'until') or '0')
    if u - now > wait then wait = u - now end
  end
  if wait > 0 then return {0, wait} end
end
if ARGV[6] ~= '1' then return {1, 0, 0, 0} end
local k = KEYS[1]
local n = redis.call('HINCRBY', k, 'n', 1)
local before = tonumber(redis.call('HGET', k, 'until') or '0')
local u, ttl = before, forget
local over = n - tonumber(ARGV[7])
if over > 0 then
  local d = cap
  if over <= 40 then d = math.min(cap, base * 2 ^ (over - 1)) end
  u = now + d
  redis.call('HSET', k, 'until', string.format('%d', u))
  ttl = d + forget
end
if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
return {1, n, before, u}
`)

// releaseScript: KEYS[1] a counter; ARGV "reset" (delete it), or "undo",
// the until before the attempt and the until it set: the attempt is taken
// back, and its wait with it unless a later attempt changed that.
var releaseScript = redis.NewScript(`
local k = KEYS[1]
if ARGV[1] == 'reset' then
  redis.call('DEL', k)
  return 0
end
local before, set = ARGV[2], ARGV[3]
local n = redis.call('HINCRBY', k, 'n', -1)
if n <= 0 then
  redis.call('DEL', k)
elseif redis.call('HGET', k, 'until') == set and set ~= before then
  if before == '0' then redis.call('HDEL', k, 'until') else redis.call('HSET', k, 'until', before) end
end
return 0
`)

// slot is an attempt acquire let through.
type slot struct {
	account     string // the account's counter; "" if none
	addr        string // the address's counter; "" if none
	n           int64  // attempts the account's counter holds, this one included
	before, set string // its until before this attempt and after it
}

// count runs countScript.
func (t *throttle) count(ctx context.Context, keys []string, check, counted bool, free int) ([]int64, error) {
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	res, err := countScript.Run(ctx, t.rdb, keys, time.Now().UnixMilli(), t.cfg.Backoff.Milliseconds(),
		t.cfg.MaxBackoff.Milliseconds(), t.cfg.Forget.Milliseconds(), flag(check), flag(counted), free).Int64Slice()
	if err == nil && (len(res) < 2 || res[0] == 1 && len(res) != 4) {
		err = fmt.Errorf("login throttle: unexpected reply %v", res)
	}
	return res, err
}

// acquire takes a slot for a password check of the account with the given
// key ("" for a name that cannot be an account) from addr (the source
// key, "" if unknown). It returns the wait instead when one applies.
func (t *throttle) acquire(ctx context.Context, account, addr string) (slot, time.Duration, error) {
	var s slot
	var keys []string
	if account != "" {
		s.account = t.userKey(account)
		keys = append(keys, s.account)
	}
	if addr != "" {
		s.addr = t.addrKey(addr)
		keys = append(keys, s.addr)
	}
	if len(keys) == 0 {
		return s, 0, nil
	}
	if len(keys) == 2 {
		// The two counters are in two slots of a Redis Cluster, which a
		// script may not span: the address's wait is checked first, on
		// its own, then the account's with its count.
		res, err := t.count(ctx, keys[1:], true, false, 0)
		if err != nil {
			return s, 0, err
		}
		if res[0] == 0 {
			return s, time.Duration(res[1]) * time.Millisecond, nil
		}
		keys = keys[:1]
	}
	res, err := t.count(ctx, keys, true, account != "", t.cfg.FreeFailures)
	if err != nil {
		return s, 0, err
	}
	if res[0] == 0 {
		return s, time.Duration(res[1]) * time.Millisecond, nil
	}
	if account != "" {
		s.n, s.before, s.set = res[1], strconv.FormatInt(res[2], 10), strconv.FormatInt(res[3], 10)
	}
	return s, 0, nil
}

// failed counts the failure of s's attempt in its address's counter and
// returns the failures that counter holds (0 without an address).
func (t *throttle) failed(ctx context.Context, s slot) (int64, error) {
	if s.addr == "" {
		return 0, nil
	}
	res, err := t.count(ctx, []string{s.addr}, false, true, t.cfg.FreeFailuresAddr)
	if err != nil {
		return 0, err
	}
	return res[1], nil
}

// release gives s back: the attempt does not count as failed. With reset,
// the account's counter is deleted (a successful login).
func (t *throttle) release(ctx context.Context, s slot, reset bool) error {
	if s.account == "" {
		return nil
	}
	args := []any{"undo", s.before, s.set}
	if reset {
		args = []any{"reset"}
	}
	return releaseScript.Run(ctx, t.rdb, []string{s.account}, args...).Err()
}

// SourceKey is the source address failed logins are counted by: the IP
// address of remote (host:port or a bare host), IPv4-mapped addresses as
// IPv4, and for IPv6 its /64 network, which one host usually holds whole.
// Something that is not an IP address is used as it is.
func SourceKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
