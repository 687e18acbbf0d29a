// Package accounts registers users and checks who they are: bcrypt password
// hashes in MongoDB, session tokens in Redis, and a Redis set of known
// names so that chat does not ask MongoDB on every message. The gateway and
// every node use it alike.
package accounts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
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

// Accounts is safe for concurrent use.
type Accounts struct {
	rdb      redis.UniversalClient
	prefix   string
	store    *history.Store
	cost     int
	tokenTTL time.Duration
	dummy    []byte // a hash to compare against for unknown names
}

// New returns Accounts over the given stores. cost is the bcrypt cost
// (0: bcrypt.DefaultCost); tokenTTL 0 means DefaultTokenTTL.
func New(rdb redis.UniversalClient, prefix string, store *history.Store, cost int, tokenTTL time.Duration) *Accounts {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if tokenTTL == 0 {
		tokenTTL = DefaultTokenTTL
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("no such user"), cost)
	return &Accounts{rdb: rdb, prefix: prefix, store: store, cost: cost, tokenTTL: tokenTTL, dummy: dummy}
}

func (a *Accounts) usersKey() string           { return a.prefix + "users" }
func (a *Accounts) tokenKey(tok string) string { return a.prefix + "token:" + tok }

func unavailable(err error) error { return fmt.Errorf("%w: %v", ErrUnavailable, err) }

// Validate checks a username and password for registration.
func Validate(name, password string) error {
	if !protocol.ValidName(name) {
		return fmt.Errorf("%w: username must be 1 to %d letters, digits, '_', '-' or '.'", ErrInvalid, protocol.MaxUsernameLen)
	}
	if len(password) < protocol.MinPasswordLen || len(password) > protocol.MaxPasswordLen {
		return fmt.Errorf("%w: password must be %d to %d bytes", ErrInvalid, protocol.MinPasswordLen, protocol.MaxPasswordLen)
	}
	return nil
}

// Register creates a user with a bcrypt hash of password.
func (a *Accounts) Register(ctx context.Context, name, password string) error {
	if err := Validate(name, password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), a.cost)
	if err != nil {
		return err
	}
	switch err := a.store.CreateUser(ctx, name, hash); {
	case errors.Is(err, history.ErrUserExists):
		return ErrTaken
	case err != nil:
		return unavailable(err)
	}
	// The cache is an optimisation: a miss falls back to MongoDB.
	_ = a.rdb.SAdd(ctx, a.usersKey(), name).Err()
	return nil
}

// Check verifies a password. Unknown names take as long as wrong
// passwords, so timing does not reveal which names exist.
func (a *Accounts) Check(ctx context.Context, name, password string) error {
	u, err := a.store.User(ctx, name)
	switch {
	case errors.Is(err, history.ErrNotFound):
		_ = bcrypt.CompareHashAndPassword(a.dummy, []byte(password))
		return ErrBadCredentials
	case err != nil:
		return unavailable(err)
	}
	if bcrypt.CompareHashAndPassword(u.Hash, []byte(password)) != nil {
		return ErrBadCredentials
	}
	return nil
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

// Exists returns nil if name is a registered user.
func (a *Accounts) Exists(ctx context.Context, name string) error {
	ok, err := a.rdb.SIsMember(ctx, a.usersKey(), name).Result()
	if err != nil {
		return unavailable(err)
	}
	if ok {
		return nil
	}
	_, err = a.store.User(ctx, name)
	switch {
	case errors.Is(err, history.ErrNotFound):
		return ErrUnknownUser
	case err != nil:
		return unavailable(err)
	}
	_ = a.rdb.SAdd(ctx, a.usersKey(), name).Err()
	return nil
}
