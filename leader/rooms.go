package leader

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/handler"
	"chatcluster/history"
	"chatcluster/protocol"
	"chatcluster/room"
)

const (
	roomWorkers = 8    // leader goroutines running room requests, by room
	roomQueue   = 1024 // requests queued per worker before the leader answers 503
)

// roomJob is a room request the leader runs: from the node that asked.
type roomJob struct {
	from string
	f    protocol.PeerFrame
}

// roomService is the leader's part of rooms: it loads membership from
// MongoDB when the term starts and runs every request of one room on one
// worker, in arrival order, so a room's messages get their seq and are
// handed to the node links in the same order.
type roomService struct {
	l   *Term
	reg *room.Registry

	rosterMu sync.Mutex
	rostered map[string]bool // nodes whose roster this term has; guarded by rosterMu

	seed   maphash.Seed
	work   [roomWorkers]chan roomJob
	loaded chan struct{} // closed once membership is loaded

	// postNs is a moving average of the time a post takes a worker: a
	// post that would wait in its queue longer than maxRoomWait is refused.
	postNs atomic.Int64

	// owed are the joins and leaves whose event could not be stored
	// (room -> user -> joined), stored by the next request of the room;
	// owedN counts them, so that a room without any costs no lock.
	owedMu sync.Mutex
	owed   map[string]map[string]bool // guarded by owedMu
	owedN  atomic.Int64
}

// maxOwed bounds the joins and leaves owed an event; past it, the events
// of further ones are lost (logged).
const maxOwed = 10_000

// maxRoomWait bounds how long a post may expect to wait for its worker.
const maxRoomWait = time.Second

func newRoomService(l *Term) *roomService {
	reg := room.New()
	if l.d.MultiDevice {
		reg = room.NewMulti()
	}
	rs := &roomService{l: l, reg: reg, seed: maphash.MakeSeed(), loaded: make(chan struct{}), rostered: map[string]bool{}}
	for i := range rs.work {
		rs.work[i] = make(chan roomJob, roomQueue)
	}
	return rs
}

func (rs *roomService) start() {
	rs.l.goTerm(rs.load)
	for i := range rs.work {
		q := rs.work[i]
		rs.l.goTerm(func() { rs.worker(q) })
	}
}

// load reads every room from MongoDB, retrying until it succeeds or the
// term ends, and makes sure every member can read the room (its
// conversation is in the member's list in Redis).
func (rs *roomService) load() {
	l := rs.l
	backoff := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
		err := l.d.Store.ClaimRooms(ctx, l.epoch)
		var rooms []room.Room
		if err == nil {
			rooms, err = l.d.Store.Rooms(ctx)
		}
		if err == nil {
			err = l.d.Convs.AddMembers(ctx, rooms)
		}
		cancel()
		if err == nil {
			rs.reg.Load(rooms)
			close(rs.loaded)
			l.log.Info().Int("rooms", len(rooms)).Int64("epoch", l.epoch).Msg("rooms loaded")
			rs.flushLoop()
			return
		}
		if l.ctx.Err() != nil {
			return
		}
		l.log.Warn().Err(err).Dur("retry", backoff).Msg("cannot load rooms; room requests wait")
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// flushEvery is how often the leader writes to MongoDB the membership
// changed while MongoDB was away.
const flushEvery = time.Second

// flushLoop writes membership changed while MongoDB was away to MongoDB,
// until the term ends. A fenced flush ends the term's part in rooms: a
// newer leader owns them.
func (rs *roomService) flushLoop() {
	l := rs.l
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
		_, err := l.d.Store.Flush(ctx, l.epoch)
		cancel()
		if errors.Is(err, history.ErrFenced) {
			l.log.Warn().Int64("epoch", l.epoch).Msg("a newer leader owns the rooms; this term flushes no more")
			return
		}
	}
}

// submit queues a room request. It never blocks: when the room's worker is
// full the asker gets 503 at once.
func (rs *roomService) submit(from string, f protocol.PeerFrame) {
	q := rs.work[maphash.String(rs.seed, f.Room)%roomWorkers]
	if f.Op == protocol.RoomPost && (rs.l.busy.Load() || time.Duration(len(q))*time.Duration(rs.postNs.Load()) > maxRoomWait) {
		// Posts wait longer than a client should for their reply, or
		// their pushes cannot go out as fast as they come: the poster
		// is asked to come back, rather than the post acknowledged late
		// or its pushes dropped.
		rs.l.m.Refused.Inc()
		rs.l.reply(from, protocol.PeerFrame{Req: f.Req, Code: protocol.CodeUnavailable, Error: "the cluster is overloaded; retry in 1 s", RetryAfter: 1})
		return
	}
	select {
	case q <- roomJob{from: from, f: f}:
	default:
		rs.l.reply(from, protocol.PeerFrame{Req: f.Req, Code: protocol.CodeUnavailable, Error: "the leader is overloaded; retry shortly"})
	}
}

func (rs *roomService) worker(q chan roomJob) {
	l := rs.l
	for {
		select {
		case <-l.ctx.Done():
			return
		case j := <-q:
			if !rs.waitLoaded(j.f.Deadline) {
				if l.ctx.Err() != nil {
					return
				}
				l.reply(j.from, protocol.PeerFrame{Req: j.f.Req, Code: protocol.CodeUnavailable, Error: "rooms are not loaded yet; retry shortly"})
				continue
			}
			if j.f.Deadline > 0 && time.Now().UnixMilli() > j.f.Deadline {
				// The asker has given up and told its client so; doing
				// it now would act on a request reported as failed.
				continue
			}
			began := time.Now()
			out := rs.run(j.f)
			if j.f.Op == protocol.RoomPost {
				// A moving average of what a post takes, an eighth of
				// each new one.
				d := time.Since(began).Nanoseconds()
				old := rs.postNs.Load()
				rs.postNs.Store(old + (d-old)/8)
			}
			out.Req = j.f.Req
			l.reply(j.from, out)
		}
	}
}

// waitLoaded waits for membership to be loaded, until deadline (unix ms;
// 0: a few seconds).
func (rs *roomService) waitLoaded(deadline int64) bool {
	return waitClosed(rs.l.ctx, rs.loaded, deadline)
}

// waitClosed waits until ch is closed, until deadline (unix ms; 0: a few
// seconds) or until ctx ends, and reports whether ch was closed.
func waitClosed(ctx context.Context, ch <-chan struct{}, deadline int64) bool {
	select {
	case <-ch:
		return true
	default:
	}
	wait := 5 * time.Second
	if deadline > 0 {
		wait = time.Until(time.UnixMilli(deadline))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func fail(code int, format string, args ...any) protocol.PeerFrame {
	return protocol.PeerFrame{Code: code, Error: fmt.Sprintf(format, args...)}
}

// run executes one request. Worker of the request's room only.
func (rs *roomService) run(f protocol.PeerFrame) protocol.PeerFrame {
	l := rs.l
	ctx, cancel := context.WithTimeout(l.ctx, l.d.RequestTimeout)
	defer cancel()
	if f.Op == protocol.RoomList {
		list := rs.reg.List(f.User)
		if len(list) > protocol.MaxRoomsListed {
			list = list[:protocol.MaxRoomsListed]
		}
		return protocol.PeerFrame{Rooms: list}
	}
	// Member events owed first, so that they keep their place before
	// what this request stores.
	rs.settle(ctx, f.Room)
	switch f.Op {
	case protocol.RoomJoin:
		return rs.join(ctx, f.User, f.Room)
	case protocol.RoomLeave:
		return rs.leave(ctx, f.User, f.Room)
	case protocol.RoomPost:
		return rs.post(ctx, f)
	case protocol.RoomCreate, protocol.RoomDelete, protocol.RoomMembers, protocol.RoomEnter, protocol.RoomOnline:
		return rs.runServer(ctx, f) // the server API's (roomadmin.go)
	case protocol.RoomChange:
		return rs.change(ctx, f)
	}
	return fail(protocol.CodeBadRequest, "unknown room operation %q", f.Op)
}

func (rs *roomService) storeErr(room string, err error) protocol.PeerFrame {
	if errors.Is(err, history.ErrFenced) {
		rs.l.log.Warn().Str("room", room).Int64("epoch", rs.l.epoch).Msg("a newer leader owns the rooms; this term is over")
		return fail(protocol.CodeUnavailable, "the cluster is changing leader; retry shortly")
	}
	rs.l.log.Warn().Err(err).Str("room", room).Msg("cannot store room membership")
	return fail(protocol.CodeUnavailable, "room membership cannot be stored now; retry shortly")
}

// join makes user a member of room name, creating it with user as its
// owner if it does not exist, and stores the join in the room's
// conversation (announce).
func (rs *roomService) join(ctx context.Context, user, name string) protocol.PeerFrame {
	l := rs.l
	if rs.reg.Deleted(name) {
		return rs.unknown(name)
	}
	if exists, member := rs.reg.IsMember(name, user); !member {
		members := rs.reg.WithMember(name, user)
		if len(members) > protocol.MaxRoomMembers {
			return fail(protocol.CodeForbidden, "room %q is full (%d members)", name, protocol.MaxRoomMembers)
		}
		owner := rs.reg.Owner(name)
		if !exists {
			owner = user
		}
		if err := l.d.Store.SaveRoom(ctx, room.Room{Name: name, Owner: owner, Members: members}, l.epoch); err != nil {
			return rs.storeErr(name, err)
		}
		rs.reg.Set(name, owner, members)
		l.log.Info().Str("room", name).Str("user", user).Int("members", len(members)).Bool("created", !exists).Msg("joined room")
		rs.announce(ctx, name, user, true, nil)
	}
	// Also on a repeated join, so a retry after a failure here completes it.
	if err := l.d.Convs.AddConv(ctx, user, protocol.RoomConv(name)); err != nil {
		return fail(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	members, _ := rs.reg.Members(name)
	return protocol.PeerFrame{Members: members}
}

func (rs *roomService) leave(ctx context.Context, user, name string) protocol.PeerFrame {
	l := rs.l
	exists, member := rs.reg.IsMember(name, user)
	if !exists {
		return rs.unknown(name)
	}
	if member {
		members := rs.reg.WithoutMember(name, user)
		if err := l.d.Store.SaveRoom(ctx, room.Room{Name: name, Owner: rs.reg.Owner(name), Members: members}, l.epoch); err != nil {
			return rs.storeErr(name, err)
		}
		// Those who hear of the leave are the members before it: the
		// one who leaves among them.
		plan := rs.reg.Plan(name)
		rs.reg.Set(name, "", members)
		l.log.Info().Str("room", name).Str("user", user).Int("members", len(members)).Msg("left room")
		rs.announce(ctx, name, user, false, plan)
	}
	if err := l.d.Convs.RemoveConv(ctx, user, protocol.RoomConv(name)); err != nil {
		return fail(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	members, _ := rs.reg.Members(name)
	return protocol.PeerFrame{Members: members}
}

// memberMessage is f's message as the room stores it (from the poster,
// in the room's conversation), or the refusal when the poster is no
// member of an existing room.
func (rs *roomService) memberMessage(f protocol.PeerFrame) (protocol.Message, *protocol.PeerFrame) {
	exists, member := rs.reg.IsMember(f.Room, f.User)
	switch {
	case !exists:
		r := rs.unknown(f.Room)
		return protocol.Message{}, &r
	case !member:
		r := fail(protocol.CodeForbidden, "not a member of room %q", f.Room)
		return protocol.Message{}, &r
	}
	m := *f.Message
	m.From, m.Room, m.Conv, m.To = f.User, f.Room, protocol.RoomConv(f.Room), ""
	return m, nil
}

// post stores a room message and hands it to every online member: one
// frame per node, carrying that node's recipients.
func (rs *roomService) post(ctx context.Context, f protocol.PeerFrame) protocol.PeerFrame {
	if f.Message == nil {
		return fail(protocol.CodeBadRequest, "post without a message")
	}
	m, refused := rs.memberMessage(f)
	if refused != nil {
		return *refused
	}
	st, err := rs.l.d.Journal.Append(ctx, m, f.ClientMsgID, nil)
	if err != nil {
		rs.l.log.Warn().Err(err).Str("room", f.Room).Msg("cannot store room message")
		return fail(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	stored := st.Message
	if !st.Dup {
		rs.fanout(&stored, st.Push)
	}
	return protocol.PeerFrame{Message: &stored, Dup: st.Dup}
}

// change stores an edit or recall of a room message, once the room's
// EventPolicy allows it, and hands it to every online member like a post.
// Worker of the room only: a room's changes are judged in the order they
// are stored, so a message is recalled once.
func (rs *roomService) change(ctx context.Context, f protocol.PeerFrame) protocol.PeerFrame {
	if f.Message == nil {
		return fail(protocol.CodeBadRequest, "change without a message")
	}
	m, refused := rs.memberMessage(f)
	if refused != nil {
		return *refused
	}
	if !m.Changes() || m.Ref <= 0 {
		return fail(protocol.CodeBadRequest, "a change is an edit or a recall of a message's seq")
	}
	target, err := handler.Target(ctx, rs.l.d.Messages, m.Conv, m.Ref)
	if err == nil {
		err = rs.l.d.Events.Allow(m.Kind, m.From, target, rs.reg.Owner(f.Room), m.TS)
	}
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return fail(pe.Code, "%s", pe.Msg)
	case err != nil:
		rs.l.log.Warn().Err(err).Str("room", f.Room).Msg("cannot read the message an edit or recall changes")
		return fail(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	// The event's id, given by the asking node, makes it idempotent: a
	// node hands a frame its lost link did not acknowledge to the next
	// leader, which must not store a change the one before it stored.
	st, err := rs.l.d.Journal.Append(ctx, m, handler.EventIdem(m.ID), nil)
	if err != nil {
		rs.l.log.Warn().Err(err).Str("room", f.Room).Msg("cannot store an edit or recall")
		return fail(protocol.CodeUnavailable, "service temporarily unavailable; retry shortly")
	}
	stored := st.Message
	if !st.Dup {
		rs.fanout(&stored, st.Push)
	}
	return protocol.PeerFrame{Message: &stored, Dup: st.Dup}
}

// announce stores user's join (joined) or leave of room name as an event
// of the room's conversation and pushes it to the online users of plan
// (by node; nil: the room's online members now) as a member push, which
// carries the event's seq. An event that cannot be stored is owed: the
// room's next request stores it (settle). Worker of the room only.
func (rs *roomService) announce(ctx context.Context, name, user string, joined bool, plan map[string][]string) {
	l := rs.l
	kind := protocol.KindLeave
	if joined {
		kind = protocol.KindJoin
	}
	m := protocol.Message{ID: l.d.NewID(), Conv: protocol.RoomConv(name), From: user, Room: name, Kind: kind, TS: time.Now().UnixMilli()}
	st, err := l.d.Journal.Append(ctx, m, "", nil)
	if err != nil {
		l.log.Warn().Err(err).Str("room", name).Str("user", user).Str("kind", kind).Msg("cannot store a room's member event; the room's next request stores it")
		rs.owe(name, user, joined)
		return
	}
	if plan == nil {
		plan = rs.reg.Plan(name)
	}
	e := st.Message
	push, err := protocol.EncodePush(protocol.PushMember, protocol.MemberPush{Room: name, Username: user, Joined: joined, ID: e.ID, Conv: e.Conv, Seq: e.Seq, TS: e.TS})
	if err != nil {
		return
	}
	for node, users := range plan {
		l.pushMessage(node, users, e.Conv, e.Seq, push, false)
	}
}

// owe records that the join or leave of user in room name has no event
// yet. A later change of the same user replaces it.
func (rs *roomService) owe(name, user string, joined bool) {
	rs.owedMu.Lock()
	defer rs.owedMu.Unlock()
	if rs.owed == nil {
		rs.owed = map[string]map[string]bool{}
	}
	if rs.owedN.Load() >= maxOwed {
		rs.l.log.Error().Str("room", name).Str("user", user).Msg("too many member events owed; this one is lost")
		return
	}
	users := rs.owed[name]
	if users == nil {
		users = map[string]bool{}
		rs.owed[name] = users
	}
	if _, ok := users[user]; !ok {
		rs.owedN.Add(1)
	}
	users[user] = joined
}

// settle stores the member events owed in room name. Worker of the room
// only.
func (rs *roomService) settle(ctx context.Context, name string) {
	if rs.owedN.Load() == 0 {
		return
	}
	rs.owedMu.Lock()
	users := rs.owed[name]
	delete(rs.owed, name)
	rs.owedN.Add(-int64(len(users)))
	rs.owedMu.Unlock()
	for user, joined := range users {
		rs.announce(ctx, name, user, joined, nil)
	}
}

// fanout hands m, whose push was encoded once where it was stored, to
// every online member of its room, as bytes, one frame per node.
func (rs *roomService) fanout(m *protocol.Message, push []byte) {
	plan := rs.reg.Plan(m.Room)
	if len(plan) == 0 {
		return
	}
	for node, users := range plan {
		rs.l.pushMessage(node, users, m.Conv, m.Seq, push, false)
	}
}

// presence tells user's room mates that user came online or went offline.
func (rs *roomService) presence(user string, online bool) {
	mates := rs.reg.Mates(user)
	if len(mates) == 0 {
		return
	}
	push, err := protocol.EncodePush(protocol.PushPresence, protocol.PresencePush{Username: user, Online: online})
	if err != nil {
		return
	}
	l := rs.l
	for node, users := range mates {
		if node == l.id {
			l.node.DeliverRaw(slices.Values(users), push)
			continue
		}
		l.send(node, &protocol.PeerFrame{Type: protocol.PeerPush, Recipients: protocol.JoinNames(users), Push: push})
	}
}

// online applies a login or logout a node reported.
func (rs *roomService) online(node string, f protocol.PeerFrame) {
	if f.Online {
		if rs.reg.Online(f.User, node, f.Conn, f.Ver) {
			rs.presence(f.User, true)
		}
		rs.appeared(f.User)
		if f.Req != 0 {
			rs.l.reply(node, protocol.PeerFrame{Req: f.Req})
		}
		return
	}
	if rs.reg.Offline(f.User, f.Conn) {
		rs.presence(f.User, false)
	}
}

// roster applies a node's list of sessions. The first frame of a roster
// (Op "") replaces what is known of the node; further ones (Op "more")
// add to it. Presence changes it reveals are pushed.
func (rs *roomService) roster(node string, f protocol.PeerFrame) {
	sessions := make([]room.Session, len(f.Sessions))
	for i, ps := range f.Sessions {
		sessions[i] = room.Session{User: ps.User, Conn: ps.Conn, Ver: ps.Ver}
	}
	if f.Op == "more" {
		for _, ss := range sessions {
			if rs.reg.Online(ss.User, node, ss.Conn, ss.Ver) {
				rs.presence(ss.User, true)
			}
			rs.appeared(ss.User)
		}
		return
	}
	offline, online := rs.reg.Roster(node, sessions)
	for _, ss := range sessions {
		rs.appeared(ss.User)
	}
	rs.rosterMu.Lock()
	first := !rs.rostered[node]
	rs.rostered[node] = true
	rs.rosterMu.Unlock()
	if first {
		// A term's first roster from a node tells what was already
		// true before the term: nothing changed for the room mates.
		return
	}
	for _, u := range offline {
		rs.presence(u, false)
	}
	for _, u := range online {
		rs.presence(u, true)
	}
}

// appeared hands user what the leader parked for them, now that it knows
// where they are.
func (rs *roomService) appeared(user string) { rs.l.appeared(user) }

// nodeGone takes every connection of a node that left the cluster
// offline: the room mates of the users left with none are told, and the
// connections' global sessions, which the dead node can no longer remove,
// are deleted (only if they still name that connection, so a newer login
// elsewhere is kept).
func (rs *roomService) nodeGone(node string) {
	gone, offline := rs.reg.NodeGone(node)
	for _, u := range offline {
		rs.presence(u, false)
	}
	if len(gone) == 0 {
		return
	}
	l := rs.l
	l.goTerm(func() {
		ctx, cancel := context.WithTimeout(l.ctx, 10*time.Second)
		defer cancel()
		n := 0
		for _, ss := range gone {
			if ok, err := l.d.Sessions.Delete(ctx, ss.User, ss.Conn); err != nil {
				l.log.Warn().Err(err).Str("left_node", node).Msg("cannot remove the sessions of a node that left; they count as offline anyway")
				return
			} else if ok {
				n++
			}
		}
		l.log.Info().Str("gone", node).Int("sessions", n).Msg("removed the sessions of a node that left")
	})
}

// restoreConvs puts every room back in its members' conversation lists,
// after Redis lost them.
func (rs *roomService) restoreConvs(ctx context.Context) error {
	select {
	case <-rs.loaded:
	default:
		return nil // the load does it
	}
	return rs.l.d.Convs.AddMembers(ctx, rs.reg.Rooms())
}
