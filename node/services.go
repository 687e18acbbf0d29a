package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"chatcluster/accounts"
	"chatcluster/chatlog"
	"chatcluster/handler"
	"chatcluster/history"
	"chatcluster/protocol"
	"chatcluster/session"
)

// users adapts accounts to handler.Users.
type users struct{ a *accounts.Accounts }

func userErr(err error) error {
	switch {
	case errors.Is(err, accounts.ErrBadCredentials):
		return handler.ErrBadCredentials
	case errors.Is(err, accounts.ErrUnknownUser):
		return handler.ErrUnknownUser
	case errors.Is(err, accounts.ErrUnavailable):
		return fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	return err
}

// CheckPassword checks a password login under the login throttle; a
// throttled login is answered 429 with the wait in its data.
func (u users) CheckPassword(ctx context.Context, name, password, remote string) (string, error) {
	user, err := u.a.Login(ctx, name, password, remote)
	var te *accounts.ThrottledError
	if errors.As(err, &te) {
		return "", &protocol.Error{Code: protocol.CodeRateLimited, Msg: te.Reason(), Data: protocol.RetryData{RetryAfter: te.RetryAfter()}}
	}
	return user, userErr(err)
}

func (u users) TokenUser(ctx context.Context, token string) (string, error) {
	name, err := u.a.TokenUser(ctx, token)
	return name, userErr(err)
}

func (u users) Resolve(ctx context.Context, name string) (string, error) {
	user, err := u.a.Resolve(ctx, name)
	return user, userErr(err)
}

// RemoteAddr is the client's address, by which failed password logins
// are counted.
func (c *client) RemoteAddr() string { return c.ws.RemoteAddr().String() }

// journal implements handler.Journal: Redis for what is new, MongoDB for
// what the history writer has made durable.
type journal struct {
	log   *chatlog.Log
	store *history.Store
}

func (j *journal) Append(ctx context.Context, m protocol.Message, clientMsgID string, members []string) (handler.Stored, error) {
	out, err := j.log.Append(ctx, m, clientMsgID, members)
	if errors.Is(err, chatlog.ErrNeedSeqInit) {
		// Redis lost its counters: continue from what MongoDB holds.
		if err = j.seed(ctx, m.Conv); err == nil {
			out, err = j.log.Append(ctx, m, clientMsgID, members)
		}
	}
	if err != nil {
		return handler.Stored{}, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	return handler.Stored(out), nil
}

func (j *journal) Restore(ctx context.Context, conv string, msgs []protocol.Message, members []string) (int, int64, error) {
	// Leave out what Redis and MongoDB hold, by seq (and MongoDB by id):
	// the server's own messages win, and a message is never stored twice.
	// Redis first: what the history writer moves meanwhile is in MongoDB
	// when MongoDB is read; the restore script checks Redis again.
	unflushed, err := j.log.Unflushed(ctx, conv)
	if err != nil {
		return 0, 0, unavailable(err)
	}
	waiting, waitingIDs := map[int64]bool{}, map[string]bool{}
	for _, m := range unflushed {
		waiting[m.Seq], waitingIDs[m.ID] = true, true
	}
	seqs, ids, err := j.store.Held(ctx, conv, msgs)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: history store: %v", handler.ErrUnavailable, err)
	}
	msgs = slices.DeleteFunc(slices.Clone(msgs), func(m protocol.Message) bool {
		return waiting[m.Seq] || waitingIDs[m.ID] || seqs[m.Seq] || ids[m.ID]
	})
	n, latest, err := j.log.Restore(ctx, conv, msgs, members)
	if errors.Is(err, chatlog.ErrNeedSeqInit) {
		if err = j.seed(ctx, conv); err == nil {
			n, latest, err = j.log.Restore(ctx, conv, msgs, members)
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	return n, latest, nil
}

// seed sets conv's counter, lost with Redis, above every seq stored
// anywhere, leaving room for what clients may give back (chatlog.SeqGap).
func (j *journal) seed(ctx context.Context, conv string) error {
	held, err := j.stored(ctx, conv)
	if err != nil {
		return err
	}
	return j.reseed(ctx, conv, held)
}

// reseed seeds conv's counter from held, the highest seq stored, and from
// the value it was last seeded with (seq_seeds), whichever is higher,
// after recording in MongoDB the value it is seeded with: should Redis
// lose the messages numbered from it before MongoDB holds any, the next
// seeding starts above them. The floor recorded for rebuild is held: the
// server may lack what lies above it, messages given back into the last
// gap included.
func (j *journal) reseed(ctx context.Context, conv string, held int64) error {
	// Another request (of this node or another) may have seeded it
	// meanwhile: recording a value again would move the next seeding up by
	// another gap for nothing.
	if cur, err := j.log.Latest(ctx, []string{conv}); err != nil {
		return unavailable(err)
	} else if cur[conv] > 0 {
		return nil
	}
	seeded, err := j.store.SeededSeq(ctx, conv)
	if err != nil {
		return fmt.Errorf("%w: cannot seed counter of %s: %v", handler.ErrUnavailable, conv, err)
	}
	base := max(held+chatlog.SeqGap, seeded+chatlog.SeqGap)
	if err := j.store.RaiseSeededSeq(ctx, conv, base); err != nil {
		return fmt.Errorf("%w: cannot seed counter of %s: %v", handler.ErrUnavailable, conv, err)
	}
	// A conversation of which nothing was ever stored nor seeded is,
	// but for the history writer's last moment before a loss, new: no
	// client holds anything of it to give back, and its first messages
	// are not held back (SettleWindow).
	return unavailable(j.log.Reseed(ctx, conv, held, base, held > 0 || seeded > 0))
}

// stored returns the highest seq of conv held in Redis (waiting for
// MongoDB) or in MongoDB. Redis is read first: a message the history writer
// moves meanwhile is in MongoDB by the time MongoDB is read.
func (j *journal) stored(ctx context.Context, conv string) (int64, error) {
	waiting, err := j.log.Waiting(ctx, conv)
	if err != nil {
		return 0, unavailable(err)
	}
	durable, err := j.store.LatestSeq(ctx, conv)
	if err != nil {
		return 0, fmt.Errorf("%w: cannot seed counter of %s: %v", handler.ErrUnavailable, conv, err)
	}
	for s := range waiting {
		durable = max(durable, s)
	}
	return durable, nil
}

// Unsure implements handler.Journal: of the conversations whose counters
// were seeded after a loss, those where the client's offset lies above
// the first floor and the server holds no message at that seq (the client
// holds what the server lost: rebuild), and those seeded less than
// SettleWindow ago (settling: the clients that hold what was lost are
// giving it back, typically within a second, as the first message after
// the loss reaches them all).
func (j *journal) Unsure(ctx context.Context, offsets map[string]int64) (map[string]handler.Gap, error) {
	convs := make([]string, 0, len(offsets))
	for cv := range offsets {
		convs = append(convs, cv)
	}
	floors, err := j.log.Reseeded(ctx, convs)
	if err != nil || len(floors) == 0 {
		return nil, unavailable(err)
	}
	seeded := make([]string, 0, len(floors))
	for cv := range floors {
		seeded = append(seeded, cv)
	}
	at, err := j.log.SeededAt(ctx, seeded)
	if err != nil {
		return nil, unavailable(err)
	}
	now := time.Now().UnixMilli()
	out := map[string]handler.Gap{}
	for cv, floor := range floors {
		off := offsets[cv]
		settling := now-at[cv] < SettleWindow.Milliseconds()
		if off <= floor {
			if settling {
				out[cv] = handler.Gap{Floor: floor, Settling: true}
			}
			continue
		}
		held, err := j.Range(ctx, cv, off-1, off+1, 1, false)
		if err != nil {
			return nil, err
		}
		switch {
		case len(held) == 0:
			out[cv] = handler.Gap{Floor: floor, Rebuild: true}
		case settling:
			out[cv] = handler.Gap{Floor: floor, Settling: true}
		}
	}
	return out, nil
}

// SettleWindow is how long after a counter was seeded following a loss of
// Redis data a sync returns nothing above the floor (handler.Gap).
const SettleWindow = 5 * time.Second

func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
}

// Latest reads the counters from Redis. When some are missing and Redis
// did not hold them from the start (it was restarted empty), they are
// seeded from MongoDB first, so a client is never told a conversation is
// emptier than the durable history says.
func (j *journal) Latest(ctx context.Context, convs []string) (map[string]int64, error) {
	out, err := j.log.Latest(ctx, convs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	var missing []string
	for _, cv := range convs {
		if out[cv] == 0 {
			missing = append(missing, cv)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	fresh, err := j.log.Fresh(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	if fresh {
		return out, nil
	}
	for _, cv := range missing {
		// A conversation with nothing stored anywhere keeps no counter:
		// reading one must not create keys for any name a client sends.
		floor, err := j.stored(ctx, cv)
		if err != nil {
			return nil, err
		}
		if floor == 0 {
			// Nothing stored; but if its counter was seeded before,
			// what was numbered from it is lost, and clients may hold it.
			seeded, err := j.store.SeededSeq(ctx, cv)
			if err != nil {
				return nil, fmt.Errorf("%w: cannot seed counter of %s: %v", handler.ErrUnavailable, cv, err)
			}
			if seeded == 0 {
				continue
			}
		}
		if err := j.reseed(ctx, cv, floor); err != nil {
			return nil, err
		}
	}
	again, err := j.log.Latest(ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	for cv, n := range again {
		out[cv] = n
	}
	return out, nil
}

// Convs reads the user's conversation list from Redis. After Redis lost
// its data, the direct conversations are found once per user in MongoDB
// and put back (rooms are put back by the leader).
func (j *journal) Convs(ctx context.Context, user string) ([]string, error) {
	out, err := j.log.Convs(ctx, user)
	if err != nil {
		return nil, unavailable(err)
	}
	fresh, err := j.log.Fresh(ctx)
	if err != nil || fresh {
		return out, unavailable(err)
	}
	done, err := j.log.ConvsRestored(ctx, user)
	if err != nil || done {
		return out, unavailable(err)
	}
	durable, err := j.store.DirectConvs(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("%w: history store: %v", handler.ErrUnavailable, err)
	}
	if err := j.log.RestoreConvs(ctx, user, durable); err != nil {
		return nil, unavailable(err)
	}
	return j.log.Convs(ctx, user)
}

// Range answers from Redis alone when Redis provably holds the whole
// answer (the recent list always holds a conversation's newest messages,
// the pending hash everything MongoDB lacks), and merges in MongoDB
// otherwise. Redis is read first: the history writer deletes a pending
// entry only after MongoDB has it, so a message missing from the Redis read
// is in the later MongoDB read.
//
// The messages come in their final state (protocol.ApplyEvents) under the
// edits and recalls of them, wherever those are: in Redis, or in MongoDB,
// which keeps a copy of each in the block of the message it changes. The
// same order holds for them: an event missing from the Redis read is in
// MongoDB when MongoDB is read. What MongoDB is not read for otherwise
// (an answer from Redis alone, an edit in the answer whose message is not)
// it is asked for only where an event may have left Redis already: for
// messages below the seq from which Redis holds every entry
// (chatlog.UnflushedAfter), since every event comes after its message. On
// an answer from Redis alone that question is best effort: MongoDB away,
// the answer is what Redis holds, as before events.
func (j *journal) Range(ctx context.Context, conv string, after, before int64, limit int, newest bool) ([]protocol.Message, error) {
	unflushed, whole, err := j.log.UnflushedAfter(ctx, conv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
	}
	inRange := func(m protocol.Message) bool { return m.Seq > after && (before <= 0 || m.Seq < before) }
	fromRedis := make([]protocol.Message, 0, len(unflushed))
	var events []protocol.Message
	for _, m := range unflushed {
		if inRange(m) {
			fromRedis = append(fromRedis, m)
		}
		if m.Changes() {
			events = append(events, m)
		}
	}
	var out []protocol.Message
	durableRead := false
	if covers(fromRedis, after, before, limit, newest) {
		out = trim(fromRedis, limit, newest)
	} else {
		durable, stored, err := j.store.Page(ctx, conv, after, before, limit, newest)
		if err != nil {
			return nil, fmt.Errorf("%w: history store: %v", handler.ErrUnavailable, err)
		}
		durableRead = true
		events = append(events, stored...)
		seen := make(map[int64]bool, len(durable)+len(fromRedis))
		all := make([]protocol.Message, 0, len(durable)+len(fromRedis))
		for _, list := range [][]protocol.Message{durable, fromRedis} {
			for _, m := range list {
				if inRange(m) && !seen[m.Seq] {
					seen[m.Seq] = true
					all = append(all, m)
				}
			}
		}
		sort.Slice(all, func(a, b int) bool { return all[a].Seq < all[b].Seq })
		out = trim(all, limit, newest)
	}
	if ask := eventsToAsk(out, whole, durableRead); len(ask) > 0 {
		stored, err := j.store.Events(ctx, conv, ask)
		switch {
		case err == nil:
			events = append(events, stored...)
		case durableRead:
			return nil, fmt.Errorf("%w: history store: %v", handler.ErrUnavailable, err)
		}
	}
	protocol.ApplyEvents(out, events)
	return out, nil
}

// eventsToAsk returns the seqs of messages whose edits and recalls MongoDB
// may hold and the reads so far did not bring: messages of msgs at or
// below whole (from which on Redis holds every entry), unless MongoDB was
// read for the page (durable: its blocks bring theirs), and the messages
// that edits in msgs change, when the edit is at or below whole (its
// message's recall, later, may have moved) and the message is not in msgs.
func eventsToAsk(msgs []protocol.Message, whole int64, durable bool) []int64 {
	var ask []int64
	var inPage map[int64]bool
	for _, m := range msgs {
		if m.Seq > whole {
			break
		}
		switch {
		case m.Kind == "" && !durable:
			ask = append(ask, m.Seq)
		case m.Kind == protocol.KindEdit && m.Ref > 0:
			if inPage == nil {
				inPage = make(map[int64]bool, len(msgs))
				for _, p := range msgs {
					inPage[p.Seq] = true
				}
			}
			if !inPage[m.Ref] {
				ask = append(ask, m.Ref)
			}
		}
	}
	return ask
}

// covers reports whether msgs (sorted, all in (after, before)) are the
// complete answer to a range query: no gap, the right end present, and
// either limit of them or everything down to after.
func covers(msgs []protocol.Message, after, before int64, limit int, newest bool) bool {
	if len(msgs) == 0 {
		return false
	}
	for i := 1; i < len(msgs); i++ {
		if msgs[i].Seq != msgs[i-1].Seq+1 {
			return false
		}
	}
	first, last := msgs[0].Seq, msgs[len(msgs)-1].Seq
	if newest {
		// With no upper bound the newest message is always in the recent
		// list; with one, the message just below it must be here.
		top := before <= 0 || last == before-1
		return top && (len(msgs) >= limit || first == after+1)
	}
	return first == after+1 && (len(msgs) >= limit || before > 0 && last == before-1)
}

func trim(msgs []protocol.Message, limit int, newest bool) []protocol.Message {
	if len(msgs) <= limit {
		return msgs
	}
	if newest {
		return msgs[len(msgs)-limit:]
	}
	return msgs[:limit]
}

// sessionsSvc implements handler.Sessions.
type sessionsSvc struct{ s *Server }

func (ss sessionsSvc) Login(ctx context.Context, hc handler.Conn, user, device string) (string, error) {
	return ss.s.login(ctx, hc.(*client), user, device)
}

// Lookup reads the user's global sessions, keeping those a live node
// holds, newest first.
func (ss sessionsSvc) Lookup(ctx context.Context, user string) (handler.Presence, error) {
	var recs []session.Record
	if ss.s.devices != nil {
		all, err := ss.s.devices.List(ctx, user)
		if err != nil {
			return handler.Presence{}, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
		}
		recs = all
	} else {
		rec, err := ss.s.sessions.Get(ctx, user)
		switch {
		case errors.Is(err, session.ErrNotFound):
		case err != nil:
			return handler.Presence{}, fmt.Errorf("%w: %v", handler.ErrUnavailable, err)
		default:
			recs = []session.Record{rec}
		}
	}
	var p handler.Presence
	for _, rec := range recs {
		if !ss.s.holds(rec) {
			continue
		}
		if !p.Online {
			p = handler.Presence{Online: true, Node: rec.Node, LoginTime: rec.LoginTime}
		}
		p.Devices = append(p.Devices, protocol.DeviceInfo{Node: rec.Node, LoginTime: rec.LoginTime, Device: rec.Device})
	}
	return p, nil
}
