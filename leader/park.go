package leader

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Parking: the leader routes a direct message to where its recipient is
// online, as the nodes report logins and rosters. A login races the first
// messages to the user, and a new term learns where users are only as each
// node's roster arrives, so a push for a user the leader cannot place yet
// waits here a moment; if the user appears, it is delivered then, and if
// not (the user is offline), the message waits for the user's sync, as
// every message does.
//
// While anything is parked, routing a push and delivering what was parked
// for its recipient happen under one lock, so a recipient gets the parked
// pushes before the ones that follow them. With nothing parked, routing
// takes no lock.
const (
	parkFor = 2 * time.Second
	// parkMax bounds the pushes parked at once; past it new ones are not
	// parked (their recipients get them by sync).
	parkMax = 20_000
)

type parkedPush struct {
	conv  string
	seq   int64
	push  []byte
	again bool // of a frame handed over again (PeerFrame.Again)
	// except is a connection the push is not for (PeerFrame.Except), and
	// skip a node it is not for (the sender's, PeerFrame.Away).
	except, skip string
	until        time.Time
}

// placeFunc says on which nodes a user is online; none: not placed.
type placeFunc func(user string) (nodes []string)

// pushFunc hands a push to user on node.
type pushFunc func(node, user string, p parkedPush)

// Parking holds the pushes parked for users the leader cannot place yet.
// It belongs to the node, not to a term: a term that pauses and resumes
// (ZooKeeper lost for a moment) still delivers what it parked. Safe for
// concurrent use.
type Parking struct {
	expired prometheus.Counter
	n       atomic.Int64 // pushes parked; changed under mu

	mu    sync.Mutex
	users map[string][]parkedPush // guarded by mu
}

// NewParking returns an empty parking that counts in expired the pushes
// it gives up on (expired, or past parkMax).
func NewParking(expired prometheus.Counter) *Parking {
	return &Parking{expired: expired, users: map[string][]parkedPush{}}
}

// route hands p to user where place finds them, after anything parked for
// them, or parks it until parkFor has passed.
func (k *Parking) route(user string, p parkedPush, place placeFunc, push pushFunc) {
	if k.n.Load() == 0 {
		if nodes := place(user); len(nodes) > 0 {
			pushAll(nodes, user, p, push)
			return
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	nodes := place(user)
	if len(nodes) == 0 {
		if k.n.Load() >= parkMax {
			k.expired.Inc()
			return
		}
		p.until = time.Now().Add(parkFor)
		k.users[user] = append(k.users[user], p)
		k.n.Add(1)
		return
	}
	k.flushLocked(user, nodes, push)
	pushAll(nodes, user, p, push)
}

// pushAll hands p to user on each of nodes.
func pushAll(nodes []string, user string, p parkedPush, push pushFunc) {
	for _, node := range nodes {
		push(node, user, p)
	}
}

// appeared hands user what is parked for them, now that place finds them.
func (k *Parking) appeared(user string, place placeFunc, push pushFunc) {
	if k.n.Load() == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if nodes := place(user); len(nodes) > 0 {
		k.flushLocked(user, nodes, push)
	}
}

func (k *Parking) flushLocked(user string, nodes []string, push pushFunc) {
	ps, ok := k.users[user]
	if !ok {
		return
	}
	delete(k.users, user)
	for _, p := range ps {
		pushAll(nodes, user, p, push)
	}
	// Only now: while n is above zero, route takes the lock, so nothing
	// newer overtakes these.
	k.n.Add(-int64(len(ps)))
}

// expire forgets the pushes whose time is up at now.
func (k *Parking) expire(now time.Time) {
	if k.n.Load() == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for u, ps := range k.users {
		i := 0
		for i < len(ps) && !ps[i].until.After(now) {
			i++
		}
		if i == 0 {
			continue
		}
		k.expired.Add(float64(i))
		k.n.Add(-int64(i))
		if i == len(ps) {
			delete(k.users, u)
		} else {
			k.users[u] = ps[i:]
		}
	}
}

// ExpireLoop expires parked pushes until ctx ends. The node runs it, for
// as long as it runs.
func (k *Parking) ExpireLoop(ctx context.Context) {
	t := time.NewTicker(parkFor / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			k.expire(now)
		}
	}
}
