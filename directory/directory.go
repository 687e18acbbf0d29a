// Package directory is the live-node list the leader publishes in Redis
// and the gateway reads: which nodes are live, where clients connect, how
// loaded each is, and who leads with which epoch.
//
// The leader rewrites it at once on every membership change and every
// PublishEvery; it expires after TTL, so a cluster with no leader stops
// being handed out. Writes are fenced by epoch: a deposed leader cannot
// overwrite its successor's list.
package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timing of the published list.
const (
	PublishEvery = 500 * time.Millisecond
	TTL          = 3 * time.Second
)

// ErrNoView means no leader has published a list recently.
var ErrNoView = errors.New("directory: no live node list")

// ErrFenced means a leader with a newer epoch has published.
var ErrFenced = errors.New("directory: a newer leader published")

// View is the published list.
type View struct {
	Leader      string `json:"leader"`
	Epoch       int64  `json:"epoch"`
	Term        int64  `json:"term,omitempty"` // the leader's count among the cluster's leaders (cluster.ClaimTerm); 0 until counted
	LeaderSince int64  `json:"leaderSince"`    // unix ms
	Updated     int64  `json:"updated"`        // unix ms
	Backlog     int64  `json:"backlog"`        // messages waiting to be written to MongoDB
	Nodes       []Node `json:"nodes"`
	// Support is customer service as the leader holds it; nil until the
	// leader has loaded it.
	Support *Support `json:"support,omitempty"`
}

// Support is the leader's customer-service figures, published with the
// node list for the status page.
type Support struct {
	Queue       int     `json:"queue"`       // conversations waiting
	OldestWait  int64   `json:"oldestWait"`  // ms the oldest has waited
	Assigned    int     `json:"assigned"`    // conversations held by agents
	AgentsReady int     `json:"agentsReady"` // enabled, available, online
	Agents      int     `json:"agents"`      // all agents
	Utilisation float64 `json:"utilisation"` // held over the capacity of the ready agents, 0 to 1
	Assignments int64   `json:"assignments"` // made by this leader's term
	WaitP50     int64   `json:"waitP50"`     // ms, over the term's last 1000 assignments
	WaitP99     int64   `json:"waitP99"`
}

// Node is one live node.
type Node struct {
	ID          string `json:"id"`
	WS          string `json:"ws"`
	Peer        string `json:"peer,omitempty"` // its peer listener, host:port, where the gateway sends server API calls
	Connections int    `json:"connections"`
	Started     int64  `json:"started,omitempty"` // unix ms
	Linked      bool   `json:"linked"`            // the leader holds a peer link to it (always true for the leader)
	Messages    int64  `json:"messages"`          // messages accepted from its clients since it started
}

// ByLoad returns the nodes least loaded first (ties by id), the order the
// gateway hands them out in.
func (v View) ByLoad() []Node {
	out := append([]Node(nil), v.Nodes...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Connections != out[j].Connections {
			return out[i].Connections < out[j].Connections
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Directory reads and writes the list under a key prefix.
type Directory struct {
	rdb    redis.UniversalClient
	prefix string
}

// New returns a Directory over rdb.
func New(rdb redis.UniversalClient, prefix string) *Directory {
	return &Directory{rdb: rdb, prefix: prefix}
}

// The list and the leader epoch that fences it share the hash tag
// {cluster}, so that the script that checks one and writes both touches
// one Redis Cluster slot (the hot words' reset is fenced by the same
// epoch, in the same slot).
func (d *Directory) viewKey() string  { return d.prefix + "{cluster}" }
func (d *Directory) epochKey() string { return d.prefix + "{cluster}:epoch" }

// publishScript stores the view unless a newer leader already did.
// KEYS: view, epoch. ARGV: epoch, view JSON, TTL ms.
var publishScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// Publish stores v, unless a leader with a newer epoch has (ErrFenced).
func (d *Directory) Publish(ctx context.Context, v View) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ok, err := publishScript.Run(ctx, d.rdb, []string{d.viewKey(), d.epochKey()}, v.Epoch, b, TTL.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("directory: publish: %w", err)
	}
	if ok == 0 {
		return ErrFenced
	}
	return nil
}

// Read returns the current list, or ErrNoView.
func (d *Directory) Read(ctx context.Context) (View, error) {
	var v View
	b, err := d.rdb.Get(ctx, d.viewKey()).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return v, ErrNoView
	case err != nil:
		return v, fmt.Errorf("directory: read: %w", err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("directory: corrupt list: %w", err)
	}
	if len(v.Nodes) == 0 {
		return v, ErrNoView
	}
	return v, nil
}
