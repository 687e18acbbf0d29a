package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-zookeeper/zk"
)

// termRecord is the JSON of <root>/term: the number of leaderships the
// cluster has had, and the epoch of the leader that counted the last one.
type termRecord struct {
	Term  int64 `json:"term"`
	Epoch int64 `json:"epoch"`
}

// termAttempts bounds the compare-and-set rounds of one ClaimTerm. Only
// leaders write <root>/term, and only once per epoch, so a round is lost
// only to a newer leader, which ends the claim anyway.
const termAttempts = 5

// ClaimTerm counts the leadership of epoch, which must be this node's own
// current election znode's, and returns its term: 1 for the first leader
// of the cluster (since <root>/term was created), then one more for every
// leader after it. Every node and the gateway can tell the term from the
// record without any clock, and it reads as a count, which the epoch (a
// ZooKeeper transaction id) does not.
//
// The count is kept in the persistent znode <root>/term as
// {"term","epoch"}. A claim increments it with a compare-and-set, in one
// transaction with a check that this node's election znode still exists,
// so a node that lost its leadership can never count one. A second claim
// of the same epoch (after a reconnect, or a retry whose answer was lost)
// returns the term already counted.
//
// It fails with ErrNotLeader when this node's election znode is not the
// one of epoch, or a leader with a newer epoch has counted already; with
// ErrNotConnected when the session is not live. Any goroutine may call it;
// it makes a few ZooKeeper round trips and checks ctx between them.
func (c *Cluster) ClaimTerm(ctx context.Context, epoch int64) (int64, error) {
	c.mu.Lock()
	conn, own, closing := c.conn, c.own, c.closing
	c.mu.Unlock()
	switch {
	case closing:
		return 0, ErrClosed
	case conn == nil || conn.State() != zk.StateHasSession:
		return 0, ErrNotConnected
	case own == "":
		return 0, ErrNotLeader
	}
	ownPath := c.electionPath + "/" + own
	termPath := c.termPath

	_, ownStat, err := conn.Get(ownPath)
	switch {
	case errors.Is(err, zk.ErrNoNode):
		return 0, ErrNotLeader
	case err != nil:
		return 0, fmt.Errorf("cluster: claim term: %w", err)
	case ownStat.Czxid != epoch:
		return 0, ErrNotLeader
	}
	// The election znode is never written: its version pins it.
	check := &zk.CheckVersionRequest{Path: ownPath, Version: ownStat.Version}

	for range termAttempts {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		data, stat, err := conn.Get(termPath)
		var op any
		var next termRecord
		switch {
		case errors.Is(err, zk.ErrNoNode):
			next = termRecord{Term: 1, Epoch: epoch}
			op = &zk.CreateRequest{Path: termPath, Data: mustJSON(next), Acl: c.acl}
		case err != nil:
			return 0, fmt.Errorf("cluster: claim term: %w", err)
		default:
			var cur termRecord
			if err := json.Unmarshal(data, &cur); err != nil {
				// Counting starts over rather than never again.
				c.log.Warn().Err(err).Str("znode", termPath).Msg("malformed term znode; counting from 1")
				cur = termRecord{}
			}
			switch {
			case cur.Epoch == epoch:
				return cur.Term, nil
			case cur.Epoch > epoch:
				return 0, ErrNotLeader
			}
			next = termRecord{Term: cur.Term + 1, Epoch: epoch}
			op = &zk.SetDataRequest{Path: termPath, Data: mustJSON(next), Version: stat.Version}
		}
		_, err = conn.Multi(check, op) // the error of the first operation that failed
		switch {
		case err == nil:
			c.log.Info().Int64("epoch", epoch).Int64("term", next.Term).Msg("leader term counted")
			return next.Term, nil
		case errors.Is(err, zk.ErrBadVersion) || errors.Is(err, zk.ErrNodeExists):
			// The check failed (our election znode changed: cannot
			// happen), or someone counted meanwhile: read again.
			continue
		case errors.Is(err, zk.ErrNoNode):
			// Our election znode is gone, or the term znode was
			// removed meanwhile: the next round tells which.
			if ok, _, err := conn.Exists(ownPath); err == nil && !ok {
				return 0, ErrNotLeader
			}
			continue
		default:
			return 0, fmt.Errorf("cluster: claim term: %w", err)
		}
	}
	return 0, fmt.Errorf("cluster: claim term: %d attempts lost to concurrent writers", termAttempts)
}

// ErrNotLeader is returned by ClaimTerm when the node does not lead with
// the epoch it claims.
var ErrNotLeader = errors.New("cluster: not the leader of that epoch")

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // a termRecord always encodes
	}
	return b
}
