package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"chatcluster/protocol"
)

// maxSyncRounds bounds the sync requests one recipient makes for one
// check (each returns up to 1000 messages per conversation).
const maxSyncRounds = 200

// syncConc is how many recipients sync at once: a sync reaching below a
// conversation's recent messages reads the MongoDB store, which is slow.
const syncConc = 4

// syncPatience is how long one recipient keeps asking, as a client would
// after a failover: a sync refused with 503 or 429, or lost with its
// connection, is sent again (on a new connection through the gateway if
// need be) with backoff until it gets an answer or this passes. So a
// message counts as lost only when the cluster, asked properly, does not
// have it.
const syncPatience = 60 * time.Second

// syncPhaseBound bounds the whole sync at the end of a run, so that a
// cluster refusing every recipient cannot hold the benchmark for
// syncPatience per recipient.
const syncPhaseBound = 3 * time.Minute

// syncRequestTimeout bounds one sync request; a node answers within its
// request timeout (5 s), so this only ends a wait on a connection that
// stopped answering.
const syncRequestTimeout = 15 * time.Second

// syncResult is what the sync at the end of a run did.
type syncResult struct {
	recipients int      // recipients asked
	retries    int      // requests sent again (refused, or the connection broke)
	unasked    int      // recipients that got no answer within syncPatience
	rebuild    int      // conversations the server marked "rebuild": it lacks what was acknowledged
	errs       []string // why, for the unasked (a few)
}

// notes describes what went wrong, for the report.
func (r syncResult) notes() []string {
	var out []string
	if r.unasked > 0 {
		out = append(out, fmt.Sprintf("%d of %d recipients got no answer to sync within %s: %s",
			r.unasked, r.recipients, syncPatience, strings.Join(r.errs, "; ")))
	}
	if r.rebuild > 0 {
		out = append(out, fmt.Sprintf("sync marked %d conversations \"rebuild\": the server holds less than it acknowledged", r.rebuild))
	}
	if r.retries > 0 {
		out = append(out, fmt.Sprintf("sync: %d requests sent again after a refusal (503/429) or a broken connection", r.retries))
	}
	return out
}

// connFunc returns an open connection of user idx, reconnecting if it must.
type connFunc func(ctx context.Context, idx int) (*client, error)

// recoverBySync looks for the direct messages that were acknowledged and
// not pushed: each recipient with one missing sends sync from just below
// the lowest missing seq of its conversation, and every message of the
// run found there counts as delivered by sync (tracker.recover). recipient
// maps a sender's index to its recipient's; conn gives a recipient's
// connection.
func recoverBySync(ctx context.Context, trk *tracker, recipient func(from int) int, conn connFunc) syncResult {
	var res syncResult
	missing := trk.missing()
	if len(missing) == 0 {
		return res
	}
	// recipient -> conv -> offset (the seq below the lowest missing one)
	want := map[int]map[string]int64{}
	for _, m := range missing {
		if m.conv == "" {
			continue // no seq known: the reply said nothing; nothing to aim at
		}
		r := recipient(m.from)
		if want[r] == nil {
			want[r] = map[string]int64{}
		}
		off := max(m.seq-1, 0)
		if cur, ok := want[r][m.conv]; !ok || off < cur {
			want[r][m.conv] = off
		}
	}
	rs := make([]int, 0, len(want))
	for r := range want {
		rs = append(rs, r)
	}
	sort.Ints(rs)
	res.recipients = len(rs)
	ctx, cancel := context.WithTimeout(ctx, syncPhaseBound)
	defer cancel()
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, syncConc)
	)
	for _, r := range rs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			st, err := syncFrom(ctx, trk, r, conn, want[r])
			mu.Lock()
			defer mu.Unlock()
			res.retries += st.retries
			res.rebuild += st.rebuild
			if err != nil {
				res.unasked++
				if len(res.errs) < 3 {
					res.errs = append(res.errs, fmt.Sprintf("user %d: %v", r, err))
				}
			}
		}()
	}
	wg.Wait()
	return res
}

// syncStats counts what one recipient's sync did.
type syncStats struct{ retries, rebuild int }

// syncFrom syncs recipient idx's conversations from offsets, page by page,
// and records every message of the run sent to it. A refused or lost
// request is sent again with backoff, on a new connection if the old one
// broke, for up to syncPatience without an answer.
func syncFrom(ctx context.Context, trk *tracker, idx int, conn connFunc, offsets map[string]int64) (syncStats, error) {
	var st syncStats
	deadline := time.Now().Add(syncPatience)
	wait := retryMin
	for rounds := 0; len(offsets) > 0; {
		if rounds >= maxSyncRounds {
			return st, fmt.Errorf("still more to sync after %d requests", maxSyncRounds)
		}
		rep, err := syncOnce(ctx, idx, conn, offsets, deadline)
		if err != nil {
			if !retryable(err) || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
				return st, err
			}
			st.retries++
			select {
			case <-ctx.Done():
				return st, ctx.Err()
			case <-time.After(wait):
			}
			wait = min(2*wait, retryMax)
			continue
		}
		// An answer: the patience starts again for the next page.
		rounds++
		deadline, wait = time.Now().Add(syncPatience), retryMin
		next := map[string]int64{}
		for conv, sc := range rep.Convs {
			if sc.Rebuild {
				st.rebuild++
				continue
			}
			for _, m := range sc.Messages {
				if k, ok := trk.parseText(m.Text); ok {
					trk.recover(k, idx) // not if idx sent it: the other way
				}
			}
			switch {
			case sc.More && len(sc.Messages) > 0:
				next[conv] = sc.Messages[len(sc.Messages)-1].Seq
			case sc.More:
				// Not read this time (the server ran out of its time for
				// the request): again from the same offset.
				next[conv] = offsets[conv]
			}
		}
		offsets = next
	}
	return st, nil
}

// syncOnce sends one sync for idx on its current connection.
func syncOnce(ctx context.Context, idx int, conn connFunc, offsets map[string]int64, deadline time.Time) (protocol.SyncReply, error) {
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := conn(cctx, idx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return protocol.SyncReply{}, err
		}
		// Could not connect yet: as retryable as a broken connection.
		return protocol.SyncReply{}, fmt.Errorf("%w: %v", errConnClosed, err)
	}
	rctx, cancel := context.WithTimeout(ctx, syncRequestTimeout)
	defer cancel()
	rep, err := c.sync(rctx, offsets)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// No answer in time on this connection: drop it, so the next try
		// reconnects.
		c.abort()
	}
	return rep, err
}
