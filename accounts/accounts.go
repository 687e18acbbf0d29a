// Package accounts registers users and checks who they are: bcrypt password
// hashes in MongoDB, session tokens in Redis, a Redis set of known names so
// that chat does not ask MongoDB on every message, and counters of failed
// logins in Redis that throttle password guessing. The gateway and every
// node use it alike.
//
// A username is unique under its key (Key: NFKC and case folding); a new
// user is registered under its canonical name (Canonical), which is its
// key, and that is the name it has everywhere (conversation ids, sessions,
// messages). Users registered by earlier builds keep their names as they
// are (see MigrateNames).
package accounts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"chatcluster/history"
	"chatcluster/protocol"
)

// Errors. ErrUnavailable wraps the store failure that caused it.
var (
	ErrInvalid        = errors.New("accounts: invalid username or password")
	ErrTaken          = errors.New("accounts: username taken")
	ErrBadCredentials = errors.New("accounts: bad credentials")
	ErrUnknownUser    = errors.New("accounts: unknown user")
	ErrUnavailable    = errors.New("accounts: store unavailable")
)

// DefaultTokenTTL is how long a login token stays valid.
const DefaultTokenTTL = 24 * time.Hour

// Config of Accounts.
type Config struct {
	Redis    redis.UniversalClient
	Prefix   string         // of every Redis key
	Store    *history.Store // users
	Cost     int            // bcrypt cost of new hashes; 0: bcrypt.DefaultCost
	TokenTTL time.Duration  // 0: DefaultTokenTTL
	// Throttle of failed password logins; the zero value throttles
	// nothing (DefaultThrottle is the commands' default).
	Throttle ThrottleConfig
	Logger   zerolog.Logger
}

// Accounts is safe for concurrent use.
type Accounts struct {
	rdb      redis.UniversalClient
	prefix   string
	store    *history.Store
	cost     int
	tokenTTL time.Duration
	dummy    []byte // a hash to compare against for unknown names
	throttle throttle
	log      zerolog.Logger
	known    knownNames
}

// knownNames remembers, bounded, the names Resolve has found: users are
// never deleted, so a name once resolved resolves the same for good, and
// a message to a known user costs no round trip to Redis.
type knownNames struct {
	mu    sync.RWMutex
	names map[string]string // name as given -> the user's own name; guarded by mu
}

// knownNamesMax bounds the names remembered; past it they are forgotten
// all at once and found again as they are used.
const knownNamesMax = 200_000

func (k *knownNames) get(name string) (string, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	u, ok := k.names[name]
	return u, ok
}

func (k *knownNames) put(name, user string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.names == nil || len(k.names) >= knownNamesMax {
		k.names = make(map[string]string)
	}
	k.names[name] = user
}

// New returns Accounts over the given stores.
func New(cfg Config) *Accounts {
	if cfg.Cost == 0 {
		cfg.Cost = bcrypt.DefaultCost
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("no such user"), cfg.Cost)
	return &Accounts{rdb: cfg.Redis, prefix: cfg.Prefix, store: cfg.Store, cost: cfg.Cost, tokenTTL: cfg.TokenTTL, dummy: dummy,
		throttle: throttle{rdb: cfg.Redis, prefix: cfg.Prefix, cfg: cfg.Throttle}, log: cfg.Logger}
}

func (a *Accounts) usersKey() string           { return a.prefix + "users" }
func (a *Accounts) tokenKey(tok string) string { return a.prefix + "token:" + tok }

// hashKey holds the copy of the bcrypt hash of the user whose name has
// key k: password logins are checked against it while MongoDB does not
// answer (the core runs without the database).
func (a *Accounts) hashKey(k string) string { return a.prefix + "pwhash:" + k }

// hashCopy is what hashKey holds: the user's name and hash.
type hashCopy struct {
	Name string `json:"name"`
	Hash []byte `json:"hash"`
}

// keepHash writes the Redis copy of a user's hash. It is best effort: a
// copy that is missing or stale only matters while MongoDB is away.
func (a *Accounts) keepHash(ctx context.Context, name string, hash []byte) {
	b, _ := json.Marshal(hashCopy{Name: name, Hash: hash})
	if err := a.rdb.Set(ctx, a.hashKey(Key(name)), b, 0).Err(); err != nil {
		a.log.Debug().Err(err).Str("user", name).Msg("could not keep the copy of a password hash in Redis")
	}
}

// cachedHash returns the Redis copy for name, if there is one.
func (a *Accounts) cachedHash(ctx context.Context, name string) (hashCopy, bool) {
	b, err := a.rdb.Get(ctx, a.hashKey(Key(name))).Bytes()
	if err != nil {
		return hashCopy{}, false
	}
	var c hashCopy
	if json.Unmarshal(b, &c) != nil || c.Name == "" || len(c.Hash) == 0 {
		return hashCopy{}, false
	}
	return c, true
}

func unavailable(err error) error { return fmt.Errorf("%w: %v", ErrUnavailable, err) }

// Validate checks a username and password for registration and returns
// the canonical name the user would be registered under.
func Validate(name, password string) (string, error) {
	canon, err := Canonical(name)
	if err != nil {
		return "", err
	}
	if len(password) < protocol.MinPasswordLen || len(password) > protocol.MaxPasswordLen {
		return "", fmt.Errorf("%w: password must be %d to %d bytes", ErrInvalid, protocol.MinPasswordLen, protocol.MaxPasswordLen)
	}
	return canon, nil
}

// Register creates a user with a bcrypt hash of password, under the
// canonical form of name, which it returns. ErrTaken means that a user
// with the same key exists (or an alias reserves it, see MigrateNames).
func (a *Accounts) Register(ctx context.Context, name, password string) (string, error) {
	canon, err := Validate(name, password)
	if err != nil {
		return "", err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), a.cost)
	if err != nil {
		return "", err
	}
	switch err := a.store.CreateUser(ctx, canon, hash); {
	case errors.Is(err, history.ErrUserExists):
		return "", ErrTaken
	case err != nil:
		return "", unavailable(err)
	}
	// The cache is an optimisation: a miss falls back to MongoDB.
	_ = a.rdb.SAdd(ctx, a.usersKey(), canon).Err()
	a.keepHash(ctx, canon, hash)
	return canon, nil
}

// MigrateNames gives the users registered before names had keys (their
// documents have none) their keys, oldest user first, and reserves each
// key for its user, unless another user holds it already. Such a user
// keeps its name as it is: "Bob" stays "Bob" in its conversations and
// sessions, and logs in as "Bob", "bob" or "ＢＯＢ"; no one can register
// "bob" any more. Of old users whose names share a key ("Bob" and "BOB"),
// the one that holds the key (a user named "bob", else the oldest) is
// reached by every spelling, the others by their exact names only. The
// gateway runs it when it starts; it is idempotent.
func (a *Accounts) MigrateNames(ctx context.Context) error {
	keyed, aliased, err := a.store.KeyUsers(ctx, Key)
	if err != nil {
		return unavailable(err)
	}
	if keyed > 0 {
		a.log.Info().Int("users", keyed).Int("aliases", aliased).Int("unreserved", keyed-aliased).
			Msg("gave the users of an earlier build their name keys")
	}
	return nil
}

// user finds the user name stands for: the user of that exact name, else
// the user whose name has the same key (a user registered under it, or the
// old user an alias reserves it for). It returns history.ErrNotFound if
// there is none.
func (a *Accounts) user(ctx context.Context, name string) (history.User, error) {
	u, err := a.store.User(ctx, name)
	if errors.Is(err, history.ErrNotFound) {
		if k := Key(name); k != name && protocol.ValidName(k) {
			u, err = a.store.User(ctx, k)
		}
	}
	if err == nil && u.AliasOf != "" {
		u, err = a.store.User(ctx, u.AliasOf)
	}
	return u, err
}

// check verifies a password and returns the user's name. Unknown names take
// as long as wrong passwords, so timing does not reveal which names exist.
//
// While MongoDB does not answer, the password is checked against the copy
// of the user's hash in Redis (written at registration and at every login
// checked against MongoDB); a user without a copy gets ErrUnavailable.
func (a *Accounts) check(ctx context.Context, name, password string) (string, error) {
	u, err := a.user(ctx, name)
	switch {
	case errors.Is(err, history.ErrNotFound):
		_ = bcrypt.CompareHashAndPassword(a.dummy, []byte(password))
		return "", ErrBadCredentials
	case err != nil:
		c, ok := a.cachedHash(ctx, name)
		if !ok {
			return "", unavailable(err)
		}
		if bcrypt.CompareHashAndPassword(c.Hash, []byte(password)) != nil {
			return "", ErrBadCredentials
		}
		a.log.Info().Str("user", c.Name).Msg("password login checked against the copy in Redis: MongoDB does not answer")
		return c.Name, nil
	}
	if bcrypt.CompareHashAndPassword(u.Hash, []byte(password)) != nil {
		return "", ErrBadCredentials
	}
	a.keepHash(ctx, u.Name, u.Hash)
	return u.Name, nil
}

// Login checks a password login of name from source (the client's
// address, host:port; "" if unknown) and returns the name of the user it
// logs in: the user's own name, whatever spelling of it name is. While the
// account (the key of name) or the source waits after failed logins, it
// returns a *ThrottledError without checking the password. Errors:
// ErrBadCredentials, ErrThrottled, ErrUnavailable.
func (a *Accounts) Login(ctx context.Context, name, password, source string) (string, error) {
	if !a.throttle.on() {
		return a.check(ctx, name, password)
	}
	account := Key(name)
	if !protocol.ValidName(account) {
		account = "" // no account can have it; the source still counts
	}
	addr := SourceKey(source)
	s, wait, err := a.throttle.acquire(ctx, account, addr)
	if err != nil {
		return "", unavailable(err)
	}
	if wait > 0 {
		a.log.Debug().Str("user", name).Str("addr", addr).Dur("wait", wait).Msg("login refused: throttled")
		return "", &ThrottledError{Wait: wait}
	}
	user, err := a.check(ctx, name, password)
	switch {
	case errors.Is(err, ErrBadCredentials):
		n, ferr := a.throttle.failed(context.WithoutCancel(ctx), s)
		if ferr != nil {
			a.log.Warn().Err(ferr).Str("addr", addr).Msg("could not count a failed login of the address")
		}
		a.logFailure(name, addr, s.n, n)
	default:
		// Success, or no answer from a store: not a failed guess.
		if rerr := a.throttle.release(context.WithoutCancel(ctx), s, err == nil); rerr != nil {
			a.log.Warn().Err(rerr).Str("user", name).Msg("could not update the failed-login counters")
		}
	}
	return user, err
}

// logFailure logs a failed login that made its account (with nAccount
// failures now) or source (nAddr) wait: at WARN when the waits begin and
// when they reach the longest, at INFO when the number of failures past
// the free ones is a power of two (so a long attack logs a few lines, not
// one per guess), else at DEBUG.
func (a *Accounts) logFailure(name, addr string, nAccount, nAddr int64) {
	for _, c := range []struct {
		by      string
		n, free int64
	}{{"account", nAccount, int64(a.throttle.cfg.FreeFailures)}, {"address", nAddr, int64(a.throttle.cfg.FreeFailuresAddr)}} {
		over := c.n - c.free
		if c.n == 0 || over <= 0 {
			continue
		}
		wait, top := a.throttle.wait(over), a.throttle.cfg.MaxBackoff
		ev := a.log.Debug()
		switch {
		case over == 1, wait == top && a.throttle.wait(over-1) < top:
			ev = a.log.Warn()
		case over&(over-1) == 0:
			ev = a.log.Info()
		}
		ev.Str("user", name).Str("addr", addr).Str("by", c.by).Int64("failures", c.n).Dur("wait", wait).
			Msg("too many failed logins: password logins wait")
	}
}

// IssueToken creates a session token for name.
func (a *Accounts) IssueToken(ctx context.Context, name string) (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b[:])
	if err := a.rdb.Set(ctx, a.tokenKey(tok), name, a.tokenTTL).Err(); err != nil {
		return "", unavailable(err)
	}
	return tok, nil
}

// TokenUser returns the user a token was issued to.
func (a *Accounts) TokenUser(ctx context.Context, tok string) (string, error) {
	name, err := a.rdb.Get(ctx, a.tokenKey(tok)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", ErrBadCredentials
	case err != nil:
		return "", unavailable(err)
	}
	return name, nil
}

// Resolve returns the name of the user name stands for: name itself for a
// user of that name, else the user whose name has the same key (so
// "Alice" finds the user registered as "alice"). ErrUnknownUser if none.
func (a *Accounts) Resolve(ctx context.Context, name string) (string, error) {
	if u, ok := a.known.get(name); ok {
		return u, nil
	}
	ok, err := a.rdb.SIsMember(ctx, a.usersKey(), name).Result()
	if err != nil {
		return "", unavailable(err)
	}
	if ok {
		a.known.put(name, name)
		return name, nil
	}
	u, err := a.user(ctx, name)
	switch {
	case errors.Is(err, history.ErrNotFound):
		return "", ErrUnknownUser
	case err != nil:
		return "", unavailable(err)
	}
	_ = a.rdb.SAdd(ctx, a.usersKey(), u.Name).Err()
	a.known.put(name, u.Name)
	return u.Name, nil
}
