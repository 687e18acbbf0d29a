package main

import (
	"context"
	"fmt"
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

// recoverBySync looks for the direct messages that were acknowledged and
// not pushed: each recipient with one missing sends sync from just below
// the lowest missing seq of its conversation, and every message of the
// run found there counts as delivered by sync (tracker.recover). So an
// acknowledged message is lost only when the cluster cannot produce it at
// all. recipient maps a sender's index to its recipient's; clientOf gives
// a recipient's connection now (nil: none). It returns how many
// recipients could not be asked.
func recoverBySync(ctx context.Context, trk *tracker, recipient func(from int) int, clientOf func(idx int) *client) (int, error) {
	missing := trk.missing()
	if len(missing) == 0 {
		return 0, nil
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
	var (
		mu       sync.Mutex
		unasked  int
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, syncConc)
	for r, offsets := range want {
		c := clientOf(r)
		if c == nil {
			unasked++
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := syncFrom(ctx, trk, c, offsets); err != nil {
				mu.Lock()
				unasked++
				if firstErr == nil {
					firstErr = fmt.Errorf("sync of %s: %w", c.user, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return unasked, firstErr
}

// syncFrom syncs c's conversations from offsets, page by page, and
// records every message of the run sent to c.
func syncFrom(ctx context.Context, trk *tracker, c *client, offsets map[string]int64) error {
	for range maxSyncRounds {
		if len(offsets) == 0 {
			return nil
		}
		var rep protocol.SyncReply
		err := retry503(ctx, func() error {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			var err error
			rep, err = c.sync(rctx, offsets)
			return err
		})
		if err != nil {
			return err
		}
		next := map[string]int64{}
		for conv, sc := range rep.Convs {
			for _, m := range sc.Messages {
				if m.From == c.user {
					continue
				}
				if k, ok := trk.parseText(m.Text); ok {
					trk.recover(k)
				}
			}
			if sc.More && len(sc.Messages) > 0 {
				next[conv] = sc.Messages[len(sc.Messages)-1].Seq
			}
		}
		offsets = next
	}
	return fmt.Errorf("still more to sync after %d requests", maxSyncRounds)
}
