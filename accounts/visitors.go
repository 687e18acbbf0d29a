package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"chatcluster/history"
	"chatcluster/protocol"
)

// Visitors of customer service: anonymous, each with an id (protocol
// ValidVisitor) and a token its browser or app keeps, so a reload or
// reconnect logs in as the same visitor and resumes its conversation.
// They are durable in MongoDB (the visitors collection, with a SHA-256
// hash of the token, never the token) and cached in Redis:
//
//	<p>visitor:<id>         hash: name, channel, created (unix ms)
//	<p>vtoken:<sha256 hex>  the visitor id
//
// The cache expires VisitorTTL after the visitor's last login; a token
// Redis no longer knows (it expired, or Redis lost its data) is looked up
// in MongoDB and cached again.

// VisitorTTL is how long a visitor that does not come back is kept.
const VisitorTTL = 30 * 24 * time.Hour

// DefaultVisitorsPerMinute is how many visitors one address may create a
// minute.
const DefaultVisitorsPerMinute = 20

// Visitor is a visitor's record.
type Visitor struct {
	ID      string
	Name    string
	Channel string
}

func (a *Accounts) visitorKey(id string) string { return a.prefix + "visitor:" + id }
func (a *Accounts) vtokenKey(t string) string   { return a.prefix + "vtoken:" + t }
func (a *Accounts) vrateKey(addr string, minute int64) string {
	return fmt.Sprintf("%svrate:%s:%d", a.prefix, addr, minute)
}

// ValidateVisitor checks and normalises a visitor's display name (trimmed,
// at most MaxVisitorNameLen runes, no control characters) and channel
// (lowercase letters, digits, '-' or '_'; "web" when empty).
func ValidateVisitor(name, channel string) (string, string, error) {
	name = strings.TrimSpace(name)
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > protocol.MaxVisitorNameLen {
		return "", "", fmt.Errorf("%w: name must be at most %d characters", ErrInvalid, protocol.MaxVisitorNameLen)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", "", fmt.Errorf("%w: name must not hold control characters", ErrInvalid)
		}
	}
	if channel == "" {
		channel = "web"
	}
	if len(channel) > protocol.MaxChannelLen {
		return "", "", fmt.Errorf("%w: channel must be at most %d bytes", ErrInvalid, protocol.MaxChannelLen)
	}
	for _, r := range channel {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return "", "", fmt.Errorf("%w: channel must be lowercase letters, digits, '-' or '_'", ErrInvalid)
		}
	}
	return name, channel, nil
}

// VisitorLimitError says an address created too many visitors this minute.
type VisitorLimitError struct{ Wait time.Duration }

func (e *VisitorLimitError) Error() string {
	return fmt.Sprintf("too many visitors from this address; retry in %d s", e.RetryAfter())
}

// RetryAfter is the wait in whole seconds, rounded up.
func (e *VisitorLimitError) RetryAfter() int { return int((e.Wait + time.Second - 1) / time.Second) }

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// CreateVisitor makes a new visitor from address remote (host:port or
// host), allowing perMinute a minute from one host (0: no bound). name and
// channel are checked with ValidateVisitor; an empty name becomes
// "Visitor" and the id's last four characters.
func (a *Accounts) CreateVisitor(ctx context.Context, name, channel, remote string, perMinute int) (Visitor, string, error) {
	name, channel, err := ValidateVisitor(name, channel)
	if err != nil {
		return Visitor{}, "", err
	}
	if perMinute > 0 {
		host := remote
		if h, _, err := net.SplitHostPort(remote); err == nil {
			host = h
		}
		t := time.Now()
		minute := t.Unix() / 60
		key := a.vrateKey(host, minute)
		pipe := a.rdb.Pipeline()
		n := pipe.Incr(ctx, key)
		pipe.Expire(ctx, key, 2*time.Minute)
		if _, err := pipe.Exec(ctx); err != nil {
			return Visitor{}, "", unavailable(err)
		}
		if n.Val() > int64(perMinute) {
			return Visitor{}, "", &VisitorLimitError{Wait: time.Unix((minute+1)*60, 0).Sub(t)}
		}
	}
	var idb [10]byte
	var tb [24]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return Visitor{}, "", err
	}
	if _, err := rand.Read(tb[:]); err != nil {
		return Visitor{}, "", err
	}
	v := Visitor{ID: protocol.VisitorPrefix + lowerBase32.EncodeToString(idb[:]), Name: name, Channel: channel}
	if v.Name == "" {
		v.Name = "Visitor " + strings.ToUpper(v.ID[len(v.ID)-4:])
	}
	tok := protocol.VisitorTokenPrefix + hex.EncodeToString(tb[:])
	if err := a.store.CreateVisitor(ctx, v.ID, tokenHash(tok), v.Name, v.Channel); err != nil {
		return Visitor{}, "", unavailable(err)
	}
	if err := a.cacheVisitor(ctx, v, tok); err != nil {
		return Visitor{}, "", err
	}
	return v, tok, nil
}

// tokenHash is what is stored of a visitor token.
func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// cacheVisitor puts v and its token in Redis.
func (a *Accounts) cacheVisitor(ctx context.Context, v Visitor, tok string) error {
	pipe := a.rdb.TxPipeline()
	if _, ok := a.rdb.(*redis.ClusterClient); ok {
		pipe = a.rdb.Pipeline() // two slots: no MULTI on a cluster
	}
	pipe.HSet(ctx, a.visitorKey(v.ID), "name", v.Name, "channel", v.Channel, "created", time.Now().UnixMilli())
	pipe.Expire(ctx, a.visitorKey(v.ID), VisitorTTL)
	pipe.Set(ctx, a.vtokenKey(tokenHash(tok)), v.ID, VisitorTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// TokenVisitor returns the visitor a visitor token belongs to and keeps
// both for another VisitorTTL; ErrBadCredentials for an unknown or expired
// token.
func (a *Accounts) TokenVisitor(ctx context.Context, tok string) (string, error) {
	if !strings.HasPrefix(tok, protocol.VisitorTokenPrefix) {
		return "", ErrBadCredentials
	}
	h := tokenHash(tok)
	id, err := a.rdb.Get(ctx, a.vtokenKey(h)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		id, name, channel, err := a.store.VisitorByToken(ctx, h)
		switch {
		case errors.Is(err, history.ErrNotFound):
			return "", ErrBadCredentials
		case err != nil:
			return "", unavailable(err)
		}
		if err := a.cacheVisitor(ctx, Visitor{ID: id, Name: name, Channel: channel}, tok); err != nil {
			return "", err
		}
		return id, nil
	case err != nil:
		return "", unavailable(err)
	}
	pipe := a.rdb.Pipeline()
	pipe.Expire(ctx, a.vtokenKey(h), VisitorTTL)
	pipe.Expire(ctx, a.visitorKey(id), VisitorTTL)
	_, _ = pipe.Exec(ctx)
	return id, nil
}

// Visitor returns visitor id's record; ErrUnknownUser if it expired.
func (a *Accounts) Visitor(ctx context.Context, id string) (Visitor, error) {
	vals, err := a.rdb.HMGet(ctx, a.visitorKey(id), "name", "channel").Result()
	if err != nil {
		return Visitor{}, unavailable(err)
	}
	v := Visitor{ID: id}
	if vals[0] == nil {
		name, channel, err := a.store.VisitorByID(ctx, id)
		switch {
		case errors.Is(err, history.ErrNotFound):
			return v, ErrUnknownUser
		case err != nil:
			return v, unavailable(err)
		}
		v.Name, v.Channel = name, channel
		return v, nil
	}
	v.Name, _ = vals[0].(string)
	v.Channel, _ = vals[1].(string)
	return v, nil
}
