package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"chatcluster/internal/keyspace"
)

// Defaults of Config.
const (
	DefaultAttempts    = 12
	DefaultRetryMin    = time.Second
	DefaultRetryMax    = 10 * time.Minute
	DefaultTimeout     = 5 * time.Second
	DefaultConcurrency = 4
	DefaultHeld        = 256
	// DefaultQueueCap bounds the queue, all shards together: past it the
	// oldest events go, delivered or not (20000 per shard).
	DefaultQueueCap  = 20000 * keyspace.Shards
	DefaultDeadCap   = 10000
	DefaultPoll      = 100 * time.Millisecond
	DefaultLease     = 5 * time.Second
	DefaultClaimIdle = 30 * time.Second

	DefaultHookTimeout = 200 * time.Millisecond
)

// MinSecret is the shortest secret accepted, in bytes.
const MinSecret = 16

// Config is the operator's webhook configuration, the same on every node.
// The zero value (no endpoint, no hook) turns webhooks off on the node.
// Validate fills in the defaults.
type Config struct {
	Endpoints []Endpoint
	// BeforeMessage is the before-message hook; URL "" none.
	BeforeMessage HookConfig

	Attempts    int           // attempts of one event to one endpoint before it is dead-lettered
	RetryMin    time.Duration // wait after the first failed attempt; doubled after each further one
	RetryMax    time.Duration // longest wait between two attempts
	Timeout     time.Duration // one attempt, unless the endpoint sets its own
	Concurrency int           // requests in flight per endpoint
	// Held bounds the events an endpoint holds: read from the queue and
	// not yet delivered or dead-lettered (in flight or waiting to be
	// tried again). The rest wait in the queue.
	Held int
	// QueueCap bounds the queue's length, all shards together (each
	// shard's stream holds about QueueCap/Shards): an endpoint that falls
	// further behind loses the oldest events it has not read. The nodes'
	// history writers and the login events use it too.
	QueueCap int64
	DeadCap  int64 // bound of the dead-letter stream, approximately

	Poll      time.Duration // pause before reading again after the queue was empty
	Lease     time.Duration // the active dispatcher's lease
	ClaimIdle time.Duration // take over events of a dispatcher that stopped, idle this long
}

// Endpoint is one receiver of events.
type Endpoint struct {
	// Name is the endpoint's id: its consumer group, its metrics' label,
	// its log lines. 1 to 64 letters, digits, '.', '_' or '-'; default
	// derived from the URL (so changing the URL starts a new queue).
	Name    string
	URL     string
	Events  []string // types to send; none: all
	Secret  []byte   // at least MinSecret bytes; never logged
	Timeout time.Duration
}

// HookConfig is the before-message hook: called before each message is
// stored, it allows, rejects or rewrites it.
type HookConfig struct {
	URL     string
	Secret  []byte
	Timeout time.Duration // default DefaultHookTimeout
	// FailClosed refuses messages (503) when the hook fails or does not
	// answer in time; by default they are stored as sent (fail-open).
	FailClosed bool
}

// Enabled says whether the configuration delivers anything.
func (c *Config) Enabled() bool { return len(c.Endpoints) > 0 }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Validate checks the configuration and fills in the defaults.
func (c *Config) Validate() error {
	var errs []error
	setDur := func(d *time.Duration, def time.Duration, flag string) {
		switch {
		case *d == 0:
			*d = def
		case *d < 0:
			errs = append(errs, fmt.Errorf("%s must be positive", flag))
		}
	}
	setDur(&c.RetryMin, DefaultRetryMin, "--webhook-retry-min")
	setDur(&c.RetryMax, DefaultRetryMax, "--webhook-retry-max")
	setDur(&c.Timeout, DefaultTimeout, "--webhook-timeout")
	setDur(&c.Poll, DefaultPoll, "the webhook poll interval")
	setDur(&c.Lease, DefaultLease, "the webhook dispatcher lease")
	setDur(&c.ClaimIdle, DefaultClaimIdle, "the webhook claim idle time")
	if c.RetryMin > c.RetryMax {
		errs = append(errs, fmt.Errorf("--webhook-retry-min %v is above --webhook-retry-max %v", c.RetryMin, c.RetryMax))
	}
	setInt := func(n *int, def int, flag string) {
		switch {
		case *n == 0:
			*n = def
		case *n < 0:
			errs = append(errs, fmt.Errorf("%s must be positive", flag))
		}
	}
	setInt(&c.Attempts, DefaultAttempts, "--webhook-attempts")
	setInt(&c.Concurrency, DefaultConcurrency, "--webhook-concurrency")
	setInt(&c.Held, DefaultHeld, "the events an endpoint holds")
	switch {
	case c.QueueCap == 0:
		c.QueueCap = DefaultQueueCap
	case c.QueueCap < keyspace.Shards:
		errs = append(errs, fmt.Errorf("--webhook-queue-cap %d must be at least %d (one per shard)", c.QueueCap, keyspace.Shards))
	}
	switch {
	case c.DeadCap == 0:
		c.DeadCap = DefaultDeadCap
	case c.DeadCap < 0:
		errs = append(errs, errors.New("the dead-letter bound must be positive"))
	}
	names := map[string]bool{}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		if err := e.validate(c.Timeout); err != nil {
			errs = append(errs, err)
			continue
		}
		if names[e.Name] {
			errs = append(errs, fmt.Errorf("webhook endpoint %q is configured twice (names, or URLs without a name, must differ)", e.Name))
		}
		names[e.Name] = true
	}
	if c.BeforeMessage.URL != "" {
		h := &c.BeforeMessage
		if err := checkURL(h.URL); err != nil {
			errs = append(errs, fmt.Errorf("--before-message-hook: %w", err))
		}
		if len(h.Secret) < MinSecret {
			errs = append(errs, fmt.Errorf("--before-message-hook: the secret must be at least %d bytes (--before-message-hook-secret-file)", MinSecret))
		}
		switch {
		case h.Timeout == 0:
			h.Timeout = DefaultHookTimeout
		case h.Timeout < 0:
			errs = append(errs, errors.New("--before-message-hook-timeout must be positive"))
		}
	}
	return errors.Join(errs...)
}

func (e *Endpoint) validate(timeout time.Duration) error {
	if err := checkURL(e.URL); err != nil {
		if e.Name != "" {
			return fmt.Errorf("webhook endpoint %q: %w", e.Name, err)
		}
		return fmt.Errorf("webhook endpoint %w", err)
	}
	if e.Name == "" {
		e.Name = NameOf(e.URL)
	}
	if !nameRE.MatchString(e.Name) {
		return fmt.Errorf("webhook endpoint name %q: 1 to 64 letters, digits, '.', '_' or '-'", e.Name)
	}
	if len(e.Secret) < MinSecret {
		return fmt.Errorf("webhook endpoint %q: the secret must be at least %d bytes (--webhook-secret-file or secret_file)", e.Name, MinSecret)
	}
	for _, t := range e.Events {
		if !slices.Contains(Types, t) {
			return fmt.Errorf("webhook endpoint %q: unknown event %q (known: %s)", e.Name, t, strings.Join(Types, ", "))
		}
	}
	switch {
	case e.Timeout == 0:
		e.Timeout = timeout
	case e.Timeout < 0:
		return fmt.Errorf("webhook endpoint %q: the timeout must be positive", e.Name)
	}
	return nil
}

// Wants says whether the endpoint takes events of type typ.
func (e *Endpoint) Wants(typ string) bool {
	return len(e.Events) == 0 || slices.Contains(e.Events, typ)
}

// NameOf is the name of an endpoint configured by URL alone.
func NameOf(rawURL string) string {
	h := sha256.Sum256([]byte(rawURL))
	return "url-" + hex.EncodeToString(h[:4])
}

// checkURL accepts absolute http and https URLs with a host.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("URL %q must be absolute, http:// or https://, with a host and no #fragment", redact(raw))
	}
	return nil
}

// redact is a URL as logs and errors show it: scheme, host and path, no
// user, password or query (which may hold credentials).
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Scheme + "://" + u.Host + u.EscapedPath()
	}
	s := raw
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = "…@" + s[i+1:]
	}
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	return s
}
