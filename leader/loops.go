package leader

import (
	"context"
	"errors"
	"sort"
	"time"

	"chatcluster/cluster"
	"chatcluster/directory"
)

// termLoop counts this leadership's term in ZooKeeper, retrying while
// ZooKeeper fails, and has the node list published with it. It ends when
// counted, when the term is over, or when the node is no longer the
// leader of this epoch.
func (l *Term) termLoop() {
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
		term, err := l.d.Cluster.ClaimTerm(ctx, l.epoch)
		cancel()
		switch {
		case err == nil:
			l.term.Store(term)
			select {
			case l.wake <- struct{}{}:
			default:
			}
			return
		case l.ctx.Err() != nil:
			return
		case errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, cluster.ErrClosed):
			l.log.Info().Int64("epoch", l.epoch).Err(err).Msg("leader term not counted")
			return
		}
		l.log.Debug().Err(err).Int64("epoch", l.epoch).Dur("retry_in", backoff).Msg("cannot count the leader term yet")
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// overloadEvery is how often a leader checks whether it is overloaded;
// overloadFrames is how many frames queued on a link to a node make it so
// (unless three quarters of the queue is less), a fraction of a second of
// traffic: the node's pushes are then late already.
const (
	overloadEvery  = 50 * time.Millisecond
	overloadFrames = 4096
)

// overloadLoop keeps busy up to date while the term lasts: the leader is
// overloaded while a link's queue holds overloadFrames (its node does not
// take frames as fast as they come: beyond that they would be dropped, and
// their recipients would depend on sync), or half the parking is taken.
// Nodes then answer new messages 503 with a retryAfter instead of
// acknowledging what the cluster cannot deliver.
func (l *Term) overloadLoop() {
	t := time.NewTicker(overloadEvery)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			l.busy.Store(false)
			return
		case <-t.C:
		}
		busy := l.parked.n.Load() > parkMax/2
		l.mu.Lock()
		for _, link := range l.links {
			if link.Queued() > min(link.Cap()*3/4, overloadFrames) {
				busy = true
			}
		}
		l.mu.Unlock()
		if busy != l.busy.Load() {
			l.busy.Store(busy)
			l.m.Overloaded.Set(b2f(busy))
			if busy {
				l.log.Warn().Msg("leader overloaded: the nodes refuse new messages for a moment")
			} else {
				l.log.Info().Msg("leader keeps up again")
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// publishLoop writes the live-node list to Redis for the gateway, at once
// on every membership change and every directory.PublishEvery.
func (l *Term) publishLoop() {
	t := time.NewTicker(directory.PublishEvery)
	defer t.Stop()
	for {
		l.publish()
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		case <-l.wake:
		}
	}
}

func (l *Term) publish() {
	l.mu.Lock()
	v := directory.View{Leader: l.id, Epoch: l.epoch, Term: l.term.Load(), LeaderSince: l.since.UnixMilli(), Updated: time.Now().UnixMilli()}
	for id, m := range l.members {
		n := directory.Node{ID: id, WS: m.WS, Peer: m.Peer}
		if link := l.links[id]; link != nil && !link.Closed() || id == l.id {
			n.Linked = true
		}
		if id == l.id {
			n.Connections, n.Started, n.Messages = l.node.LocalCount(), l.d.Started.UnixMilli(), l.node.MessagesIn()
		} else if ld, ok := l.loads[id]; ok {
			n.Connections, n.Started, n.Messages = ld.Connections, ld.Started, ld.Messages
		}
		v.Nodes = append(v.Nodes, n)
	}
	l.mu.Unlock()
	sort.Slice(v.Nodes, func(i, j int) bool { return v.Nodes[i].ID < v.Nodes[j].ID })
	ctx, cancel := context.WithTimeout(l.ctx, time.Second)
	defer cancel()
	if n, err := l.d.Writer.Backlog(ctx); err == nil {
		v.Backlog = n
	}
	v.Support = l.support.summary()
	switch err := l.d.Directory.Publish(ctx, v); {
	case errors.Is(err, directory.ErrFenced):
		l.log.Warn().Int64("epoch", l.epoch).Msg("a newer leader published the node list; this term is over")
	case err != nil && l.ctx.Err() == nil:
		l.log.Warn().Err(err).Msg("cannot publish the node list")
	}
}
