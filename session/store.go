package session

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is returned by Store.Get when the user has no global session.
var ErrNotFound = errors.New("session: not found")

// Record is a user's global session: under the single login policy
// (Store) the one connection, cluster-wide, that currently holds the
// user's login; under the multi policy (Devices) one of them.
//
// Version orders logins. A node takes a version from Store.NextVersion when
// it accepts a login, before it writes the record, so a later login always
// carries a higher version than an earlier one, whatever order the writes
// reach Redis in.
type Record struct {
	User      string
	Node      string // id of the node that holds the connection
	Conn      string // connection id, unique cluster-wide
	LoginTime int64  // unix milliseconds
	Version   int64  // from Store.NextVersion; > 0
	Run       int64  // which run of the node: its start time (unix ns); 0 if unknown
	// Device is the device the login named; "" for none.
	Device string
}

// Store keeps global sessions in Redis. It is safe for concurrent use.
//
// Layout, under the prefix given to NewStore:
//
//	session:<user>    hash {user, node, conn, login, ver, run, device}
//	session-version   counter (INCR) behind NextVersion
//
// User names cannot contain ':' but can be "version", so the counter key is
// not "session:version", which would be that user's hash.
//
// Put and Delete are Lua scripts, so a check and its write are one atomic
// step: a store only replaces an older login, and a delete only removes the
// record of the same connection. Reconnect races and late disconnects
// therefore never erase a newer session.
type Store struct {
	rdb     redis.UniversalClient
	prefix  string
	counter string
}

// NewStore returns a Store that keeps its keys under prefix (for example
// "chat:"). It does not talk to Redis.
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, counter: prefix + "session-version"}
}

func (s *Store) key(user string) string { return s.prefix + "session:" + user }

// NextVersion returns a new login version, higher than every version
// returned before (it survives as long as the Redis data does).
//
// Versions never go back, even when Redis loses the counter (restarted
// empty): the counter is kept at least at the current time in
// microseconds, so logins after the loss still order after those before
// it, which nodes and the leader may still remember.
func (s *Store) NextVersion(ctx context.Context) (int64, error) {
	v, err := versionScript.Run(ctx, s.rdb, []string{s.counter}, time.Now().UnixMicro()).Int64()
	if err != nil {
		return 0, fmt.Errorf("session: next version: %w", err)
	}
	return v, nil
}

var versionScript = redis.NewScript(`
local v = redis.call('INCR', KEYS[1])
local now = tonumber(ARGV[1])
if v < now then
  redis.call('SET', KEYS[1], now)
  v = now
end
return v
`)

// putScript stores ARGV as the session in KEYS[1] unless a record with the
// same or a higher version is there. It returns {stored, user..ver of the
// record it replaced or kept}; the record part is absent when there was none.
// Writing the same record twice (same version and connection) counts as
// stored, so a retried Put does not make the caller kick its own connection.
var putScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'node', 'conn', 'login', 'ver')
local ver = tonumber(ARGV[5])
if cur[4] then
  local curver = tonumber(cur[4])
  if curver and curver >= ver then
    if curver == ver and cur[2] == ARGV[3] then
      return {1}
    end
    return {0, cur[1] or '', cur[2] or '', cur[3] or '0', cur[4]}
  end
end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'node', ARGV[2], 'conn', ARGV[3], 'login', ARGV[4], 'ver', ARGV[5], 'run', ARGV[6], 'device', ARGV[7])
if cur[4] then
  return {1, cur[1] or '', cur[2] or '', cur[3] or '0', cur[4]}
end
return {1}
`)

// Put stores r as the user's session if there is none or the stored one has
// a lower version. On success it returns the record it replaced (the zero
// Record if there was none), whose connection the caller must kick when it
// is not r's. If a login with the same or a higher version is already
// stored, Put stores nothing and returns stored=false with that newer
// record as prev: the caller must then kick r's connection instead.
// Putting the very same record again (same version and Conn) reports
// stored=true with a zero prev. prev holds neither Run nor Device.
func (s *Store) Put(ctx context.Context, r Record) (prev Record, stored bool, err error) {
	if r.User == "" || r.Conn == "" || r.Version <= 0 {
		return Record{}, false, fmt.Errorf("session: put: record needs a user, a connection and a version > 0")
	}
	res, err := putScript.Run(ctx, s.rdb, []string{s.key(r.User)},
		r.User, r.Node, r.Conn, r.LoginTime, r.Version, r.Run, r.Device).Slice()
	if err != nil {
		return Record{}, false, fmt.Errorf("session: put %s: %w", r.User, err)
	}
	if len(res) == 0 {
		return Record{}, false, fmt.Errorf("session: put %s: empty script reply", r.User)
	}
	ok, _ := res[0].(int64)
	if len(res) >= 5 {
		prev, err = scriptRecord(r.User, res[1:5])
		if err != nil {
			return Record{}, false, fmt.Errorf("session: put %s: %w", r.User, err)
		}
	}
	return prev, ok == 1, nil
}

// scriptRecord builds a Record from the script's {node, conn, login, ver}.
func scriptRecord(user string, v []any) (Record, error) {
	str := func(i int) string { s, _ := v[i].(string); return s }
	login, err := strconv.ParseInt(str(2), 10, 64)
	if err != nil {
		return Record{}, fmt.Errorf("bad login time %q", str(2))
	}
	ver, err := strconv.ParseInt(str(3), 10, 64)
	if err != nil {
		return Record{}, fmt.Errorf("bad version %q", str(3))
	}
	return Record{User: user, Node: str(0), Conn: str(1), LoginTime: login, Version: ver}, nil
}

// deleteScript removes KEYS[1] only if its conn is ARGV[1].
var deleteScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'conn') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`)

// Delete removes the user's session only if it belongs to connection conn,
// and reports whether it did. A disconnect that arrives after a newer login
// of the same user therefore leaves the newer session alone.
func (s *Store) Delete(ctx context.Context, user, conn string) (bool, error) {
	n, err := deleteScript.Run(ctx, s.rdb, []string{s.key(user)}, conn).Int64()
	if err != nil {
		return false, fmt.Errorf("session: delete %s: %w", user, err)
	}
	return n == 1, nil
}

// Get returns the user's session, or ErrNotFound. It does not check that
// the record's node is alive; a caller that needs presence must.
func (s *Store) Get(ctx context.Context, user string) (Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.key(user)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("session: get %s: %w", user, err)
	}
	if len(m) == 0 {
		return Record{}, ErrNotFound
	}
	r, err := scriptRecord(user, []any{m["node"], m["conn"], m["login"], m["ver"]})
	if err != nil {
		return Record{}, fmt.Errorf("session: get %s: %w", user, err)
	}
	r.Run, _ = strconv.ParseInt(m["run"], 10, 64)
	r.Device = m["device"]
	return r, nil
}
