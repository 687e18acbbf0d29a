package session

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Devices keeps the global sessions of the multi login policy: every
// connection (device) a user is logged in on, cluster-wide, up to a bound.
// It is safe for concurrent use.
//
// Layout, under the Store's prefix:
//
//	devices:<user>    hash {d:<device> or c:<conn> -> JSON session}
//
// A connection whose login named a device (Record.Device) takes the field
// of that device, so a reconnect of the device replaces its earlier
// connection; one that named none takes a field of its own. A user's
// sessions are one key, so every script touches one Redis Cluster slot.
// The versions come from Store.NextVersion, like the single policy's.
//
// Put and Delete are Lua scripts, so a check and its write are one atomic
// step: a store replaces only an older login of the same device, a delete
// removes only the session of the same connection, and the bound keeps
// the newest logins. Reconnect races and late disconnects therefore never
// erase a newer session.
type Devices struct {
	rdb    redis.UniversalClient
	prefix string
	max    int
}

// Devices returns the multi policy's store, with the Store's Redis and
// prefix, keeping at most max devices per user (max >= 1).
func (s *Store) Devices(max int) *Devices {
	return &Devices{rdb: s.rdb, prefix: s.prefix, max: max}
}

// Max is the bound of devices per user.
func (d *Devices) Max() int { return d.max }

func (d *Devices) key(user string) string { return d.prefix + "devices:" + user }

// Live is a node that is live in ZooKeeper now, and which run of it
// (cluster.Member.Run; 0 if unknown): the sessions it holds count as
// online.
type Live struct {
	Node string
	Run  int64
}

// PutResult is what Devices.Put did.
type PutResult struct {
	// Stored says the record was stored. When it was not, Newer is the
	// newer login of the same device that is stored instead, or, with
	// Newer zero, the user is logged in on the bound of devices, all of
	// them newer: the caller kicks its own connection either way.
	Stored bool
	Newer  Record
	// Replaced is the earlier connection of the same device that the
	// record replaced (zero if none), and Evicted the user's oldest
	// sessions dropped to keep the bound, those not held by a live node
	// first. The caller kicks them.
	Replaced Record
	Evicted  []Record
}

// devicePutScript stores a session of the multi policy.
//
// KEYS[1] the user's hash. ARGV: field, the session's JSON, its version,
// its connection, the bound, then the live nodes as pairs node, run.
//
// Returns {status, record...}: status 1 stored, followed by the replaced
// record of the field ("" if none) and the evicted ones; 0 refused, with
// the newer record of the same field; 2 refused, over the bound with only
// newer sessions. Putting the very same session again (same version and
// connection) counts as stored and replaces nothing.
var devicePutScript = redis.NewScript(`
local field, rec, ver, conn, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local live = {}
for i = 6, #ARGV, 2 do live[ARGV[i]] = ARGV[i + 1] end
local all = redis.call('HGETALL', KEYS[1])
local others = {}
local replaced = ''
for i = 1, #all, 2 do
  local r = cjson.decode(all[i + 1])
  if all[i] == field then
    local cur = tonumber(r.ver)
    if cur and cur >= ver then
      if cur == ver and r.conn == conn then
        return {1, ''}
      end
      return {0, all[i + 1]}
    end
    replaced = all[i + 1]
  else
    local run = live[r.node]
    local held = run ~= nil and (r.run == '0' or run == '0' or r.run == run)
    table.insert(others, {field = all[i], json = all[i + 1], ver = tonumber(r.ver) or 0, held = held})
  end
end
local out = {1, replaced}
local over = #others + 1 - max
if over > 0 then
  table.sort(others, function(a, b)
    if a.held ~= b.held then return not a.held end
    return a.ver < b.ver
  end)
  local n = 0
  for _, o in ipairs(others) do
    if n == over then break end
    if o.held and o.ver > ver then
      return {2}
    end
    n = n + 1
  end
  for i = 1, over do
    redis.call('HDEL', KEYS[1], others[i].field)
    table.insert(out, others[i].json)
  end
end
redis.call('HSET', KEYS[1], field, rec)
return out
`)

// deviceRecord is a session as the hash holds it. Numbers are strings:
// Lua's numbers are doubles, and a run (unix ns) does not fit one.
type deviceRecord struct {
	Node   string `json:"node"`
	Conn   string `json:"conn"`
	Login  string `json:"login"`
	Ver    string `json:"ver"`
	Run    string `json:"run"`
	Device string `json:"device,omitempty"`
}

func (d *Devices) field(r Record) string {
	if r.Device != "" {
		return "d:" + r.Device
	}
	return "c:" + r.Conn
}

func decodeDevice(user, s string) (Record, error) {
	var dr deviceRecord
	if err := json.Unmarshal([]byte(s), &dr); err != nil {
		return Record{}, fmt.Errorf("bad session %q: %w", s, err)
	}
	login, err1 := strconv.ParseInt(dr.Login, 10, 64)
	ver, err2 := strconv.ParseInt(dr.Ver, 10, 64)
	run, err3 := strconv.ParseInt(dr.Run, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return Record{}, fmt.Errorf("bad session %q", s)
	}
	return Record{User: user, Node: dr.Node, Conn: dr.Conn, LoginTime: login, Version: ver, Run: run, Device: dr.Device}, nil
}

// Put stores r as one of its user's sessions: in its device's place if it
// names one (replacing an older login of the device), else in a place of
// its own; see PutResult. A login of the same device with the same or a
// higher version wins over r. Over the bound, the oldest sessions are
// dropped, those whose node is not among live (or is another run of it)
// first; r's own node counts as live.
func (d *Devices) Put(ctx context.Context, r Record, live []Live) (PutResult, error) {
	if r.User == "" || r.Conn == "" || r.Version <= 0 {
		return PutResult{}, fmt.Errorf("session: put: record needs a user, a connection and a version > 0")
	}
	rec, err := json.Marshal(deviceRecord{Node: r.Node, Conn: r.Conn, Login: strconv.FormatInt(r.LoginTime, 10),
		Ver: strconv.FormatInt(r.Version, 10), Run: strconv.FormatInt(r.Run, 10), Device: r.Device})
	if err != nil {
		return PutResult{}, fmt.Errorf("session: put %s: %w", r.User, err)
	}
	args := make([]any, 0, 5+2*len(live)+2)
	args = append(args, d.field(r), string(rec), r.Version, r.Conn, d.max)
	for _, l := range live {
		args = append(args, l.Node, strconv.FormatInt(l.Run, 10))
	}
	args = append(args, r.Node, strconv.FormatInt(r.Run, 10))
	res, err := devicePutScript.Run(ctx, d.rdb, []string{d.key(r.User)}, args...).Slice()
	if err != nil {
		return PutResult{}, fmt.Errorf("session: put %s: %w", r.User, err)
	}
	if len(res) == 0 {
		return PutResult{}, fmt.Errorf("session: put %s: empty script reply", r.User)
	}
	status, _ := res[0].(int64)
	var out PutResult
	records := make([]Record, 0, len(res)-1)
	for _, v := range res[1:] {
		s, _ := v.(string)
		if s == "" {
			records = append(records, Record{})
			continue
		}
		rec, err := decodeDevice(r.User, s)
		if err != nil {
			return PutResult{}, fmt.Errorf("session: put %s: %w", r.User, err)
		}
		records = append(records, rec)
	}
	switch status {
	case 1:
		out.Stored = true
		if len(records) > 0 {
			out.Replaced, out.Evicted = records[0], records[1:]
		}
		if len(out.Evicted) == 0 {
			out.Evicted = nil
		}
	case 0:
		if len(records) > 0 {
			out.Newer = records[0]
		}
	}
	return out, nil
}

// deviceDeleteScript removes from KEYS[1] the session of connection
// ARGV[1], if there is one.
var deviceDeleteScript = redis.NewScript(`
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if cjson.decode(all[i + 1]).conn == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    return 1
  end
end
return 0
`)

// Delete removes the user's session of connection conn, if there is one,
// and reports whether it did. A disconnect that arrives after a newer
// login of the same device therefore leaves the newer session alone.
func (d *Devices) Delete(ctx context.Context, user, conn string) (bool, error) {
	n, err := deviceDeleteScript.Run(ctx, d.rdb, []string{d.key(user)}, conn).Int64()
	if err != nil {
		return false, fmt.Errorf("session: delete %s: %w", user, err)
	}
	return n == 1, nil
}

// List returns the user's sessions, newest login first. It does not check
// that their nodes are alive; a caller that needs presence must.
func (d *Devices) List(ctx context.Context, user string) ([]Record, error) {
	m, err := d.rdb.HGetAll(ctx, d.key(user)).Result()
	if err != nil {
		return nil, fmt.Errorf("session: list %s: %w", user, err)
	}
	out := make([]Record, 0, len(m))
	for _, v := range m {
		r, err := decodeDevice(user, v)
		if err != nil {
			return nil, fmt.Errorf("session: list %s: %w", user, err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(b.Version, a.Version) })
	return out, nil
}
