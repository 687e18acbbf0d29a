package chaos

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

// Timings of the workload's clients.
const (
	// A node answers every request within 5 s, and the requests of one
	// connection in order: a request may wait for the one before it.
	requestTimeout  = 12 * time.Second
	pingInterval    = time.Second            // keepalive: a connection that does not answer...
	pingTimeout     = 10 * time.Second       // ...a ping in this time (a stopped node) is replaced
	gapWait         = 300 * time.Millisecond // a message above offset+1 waits this long for those before it, then the client syncs
	gapCheck        = 100 * time.Millisecond
	sendGiveUp      = 60 * time.Second       // a send is retried, with its clientMsgId, for at most this long...
	maxSendAttempts = 60                     // ...and this many times
	backoffMin      = 100 * time.Millisecond // waits between attempts (connect, sync, send) double...
	backoffMax      = 3 * time.Second        // ...up to this, as in cmd/chat
	pushBuffer      = 8192
	rebuildRounds   = 3 // rebuild uploads for one conversation in one sync
)

// The workload's actions beside messages, as shares of all actions.
const (
	editShare   = 0.10 // edit one of the client's own recent messages
	recallShare = 0.05 // recall one sent less than recallWithin ago
	readShare   = 0.10 // mark a conversation read at the client's offset
	typingShare = 0.03 // signal typing (not stored; errors only logged)

	recallWithin  = 60 * time.Second // well inside the servers' recall window (2 min)
	editRecent    = 16               // edits pick among the client's newest messages...
	ownKept       = 64               // ...of those it keeps, acknowledged
	changeRefusal = 5                // a 403 or 404 of an edit or recall is tried this often (a service under change)
)

// Budget bounds the messages a run sends, edits and recalls included.
// Safe for concurrent use.
type Budget struct{ left atomic.Int64 }

// NewBudget returns a budget of n messages.
func NewBudget(n int64) *Budget {
	b := &Budget{}
	b.left.Store(n)
	return b
}

// Take takes one message from the budget and reports whether there was one.
func (b *Budget) Take() bool { return b.left.Add(-1) >= 0 }

// Exhausted reports whether the budget is used up.
func (b *Budget) Exhausted() bool { return b.left.Load() <= 0 }

// ClientConfig describes one client of the workload.
type ClientConfig struct {
	Name string // the user
	// Device names the client's device in its login data ("": none).
	// Under the multi login policy a user may have several clients, each
	// a device of its own; a reconnect with the same name replaces the
	// device's earlier connection.
	Device string
	// ID names the client in the record and the log ("": Name); a user's
	// clients have different ones.
	ID string
	// Kick is the reason of the kick a connection may get when its client
	// has left it and logged in again: protocol.KickSameDevice under the
	// multi login policy, protocol.KickElsewhere under single. Any other
	// kick, and any kick of a live connection, is a violation.
	Kick      string
	Password  string
	Peers     []string // the other clients: direct messages go to them
	Rooms     []string // rooms every client is a member of
	Members   []string // every client: the recipients of a room message
	Gateway   *chatclient.Gateway
	Record    *Record
	Budget    *Budget
	Interval  time.Duration // pause between two actions
	RoomShare float64       // share of messages that go to a room
	Seed      uint64
	Logf      func(format string, args ...any)
}

// Client is one user of the workload: it holds a connection to a node
// chosen through the gateway, sends direct and room messages, edits and
// recalls its own, marks conversations read and signals typing, records
// what was acknowledged and what reached it, and reconnects and syncs when
// its connection is lost, its node goes away, or it is told to.
type Client struct {
	cfg ClientConfig

	procMu  sync.Mutex // serialises what the client does with messages; guards view and pending
	view    *View
	pending map[string][]waiting // per conversation: messages above offset+1, by seq
	// settling: conversations the last sync answered "settling" (nothing
	// above the floor yet); the gap check syncs them again.
	settling map[string]bool
	// gaveBack: per conversation, the floor (plus one) of the settling
	// gap this client gave back what it held above.
	gaveBack map[string]int64
	// reads: per conversation, the highest read position a read of this
	// device had acknowledged; a sync that reports less (Redis lost the
	// last rises) gets it back.
	reads map[string]int64

	mu        sync.Mutex
	conn      *chatclient.Conn // nil while reconnecting
	node      string
	changed   chan struct{} // closed and replaced when conn changes
	wanted    int           // reconnects asked for
	served    int           // the highest of them that a completed reconnect (with sync) answers
	avoid     []string      // nodes to avoid, as last told
	watchFrom int64         // failover watch: a room push with a ts above this...
	watchHit  time.Time     // ...first arrived then (zero: not yet)

	reconnectReq chan struct{} // a reconnect was asked for

	ctx        context.Context
	cancel     context.CancelFunc
	sendCtx    context.Context
	stopSend   context.CancelFunc
	wg         sync.WaitGroup
	senderDone chan struct{}
	// act is held by the send loop during each action, and by
	// PauseSending until ResumeSending.
	act chan struct{}

	// Counters, for the log.
	Reconnects atomic.Int64
	Kicked     atomic.Int64
	Rebuilds   atomic.Int64
	GapSyncs   atomic.Int64
	Refused    atomic.Int64
	// ReadsGivenBack counts the read positions sent again after a sync
	// reported less than acknowledged.
	ReadsGivenBack atomic.Int64
	// Catch-up syncs after a (re)connect that failed (and were retried).
	CatchUpFailures atomic.Int64
}

type waiting struct {
	m     protocol.Message
	src   Source
	since time.Time
}

// NewClient returns a client that knows its direct conversations (offset
// 0); it knows its rooms once it joined them (JoinRooms). Call Start to run
// it.
func NewClient(cfg ClientConfig) *Client {
	c := &Client{
		cfg:          cfg,
		view:         NewView(),
		pending:      map[string][]waiting{},
		settling:     map[string]bool{},
		reads:        map[string]int64{},
		gaveBack:     map[string]int64{},
		changed:      make(chan struct{}),
		reconnectReq: make(chan struct{}, 1),
		senderDone:   make(chan struct{}),
		act:          make(chan struct{}, 1),
	}
	if c.cfg.ID == "" {
		c.cfg.ID = cfg.Name
	}
	for _, p := range cfg.Peers {
		c.view.Know(protocol.DMConv(cfg.Name, p))
	}
	cfg.Record.AddDevice(c.cfg.ID, cfg.Name)
	return c
}

// Name is the client's name in the record: its user's, or its device's
// (ClientConfig.ID).
func (c *Client) Name() string { return c.cfg.ID }

// User is the client's user name.
func (c *Client) User() string { return c.cfg.Name }

func (c *Client) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(c.cfg.ID+": "+format, args...)
	}
}

// Start connects in the background until ctx ends or Close. Sending starts
// with StartSending.
func (c *Client) Start(ctx context.Context) {
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.sendCtx, c.stopSend = context.WithCancel(c.ctx)
	c.wg.Add(1)
	go c.run()
}

// StartSending starts the send loop.
func (c *Client) StartSending() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(c.senderDone)
		c.sendLoop(c.sendCtx)
	}()
}

// PauseSending waits until the send loop is between two actions and keeps
// it there until ResumeSending; it reports false if ctx ended first (the
// loop goes on).
func (c *Client) PauseSending(ctx context.Context) bool {
	select {
	case c.act <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// ResumeSending lets the send loop go on after PauseSending.
func (c *Client) ResumeSending() { <-c.act }

// StopSending stops the send loop and waits until it ended: a request in
// flight is answered or times out, and a send not acknowledged by then is
// given up.
func (c *Client) StopSending() {
	c.stopSend()
	<-c.senderDone
}

// Close stops the client and waits for all its goroutines. Messages that
// still wait behind a gap go to the record as never processed.
func (c *Client) Close() {
	c.cancel()
	c.wg.Wait()
	c.procMu.Lock()
	defer c.procMu.Unlock()
	convs := make([]string, 0, len(c.pending))
	for conv := range c.pending {
		convs = append(convs, conv)
	}
	sort.Strings(convs)
	for _, conv := range convs {
		for _, w := range c.pending[conv] {
			c.cfg.Record.AddWaiting(c.cfg.ID, w.m, w.src)
		}
	}
	c.pending = map[string][]waiting{}
}

// Node returns the node the client is connected to ("" while reconnecting).
func (c *Client) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.node
}

// Reconnect asks the client to leave its connection, reconnect through
// the gateway avoiding the given nodes while others are listed, and sync.
// It returns a ticket for Reconnected.
func (c *Client) Reconnect(avoid []string) int {
	c.mu.Lock()
	c.wanted++
	c.avoid = slices.Clone(avoid)
	ticket := c.wanted
	c.mu.Unlock()
	select {
	case c.reconnectReq <- struct{}{}:
	default:
	}
	return ticket
}

// Reconnected reports whether a reconnect asked for with ticket (or later)
// has completed, sync included.
func (c *Client) Reconnected(ticket int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.served >= ticket && c.conn != nil
}

// Watch starts a failover watch: WatchHit reports when the first room
// message stored after t arrived as a push.
func (c *Client) Watch(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchFrom, c.watchHit = t.UnixMilli(), time.Time{}
}

// WatchHit returns when the first room push of a message stored after the
// watch's start arrived, and whether one did.
func (c *Client) WatchHit() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.watchHit, !c.watchHit.IsZero()
}

func (c *Client) setConn(conn *chatclient.Conn, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn, c.node = conn, node
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitConn returns the current connection, waiting for one until ctx ends
// or until deadline; nil if none came.
func (c *Client) waitConn(ctx context.Context, deadline time.Time) *chatclient.Conn {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		c.mu.Lock()
		conn, ch := c.conn, c.changed
		c.mu.Unlock()
		if conn != nil {
			return conn
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		case <-timer.C:
			return nil
		}
	}
}

// ---- connection ---------------------------------------------------------------

// run owns the connection: it connects, serves the connection until it
// ends or a reconnect is asked for, and connects again, until the client
// is closed.
func (c *Client) run() {
	defer c.wg.Done()
	var lost string
	for c.ctx.Err() == nil {
		c.mu.Lock()
		ticket := c.wanted
		avoid := slices.Clone(c.avoid)
		c.mu.Unlock()
		if lost != "" && !slices.Contains(avoid, lost) {
			avoid = append(avoid, lost)
		}
		conn, node, err := c.establish(avoid)
		if err != nil {
			return // closed
		}
		lost = ""
		if c.serve(conn, node, ticket) {
			lost = node
		}
	}
}

// establish connects and logs in, retrying with a backoff until it
// succeeds or the client is closed. The catch-up sync follows on the
// connection (serve).
func (c *Client) establish(avoid []string) (*chatclient.Conn, string, error) {
	delay := backoffMin
	start := time.Now()
	for attempt := 1; ; attempt++ {
		if err := c.ctx.Err(); err != nil {
			return nil, "", err
		}
		conn, node, err := c.connectOnce(avoid)
		if err == nil {
			c.Reconnects.Add(1)
			if d := time.Since(start); d > 10*time.Second {
				c.logf("connected to %s after %d attempts in %s", node, attempt, d.Round(time.Millisecond))
			}
			return conn, node, nil
		}
		if attempt%25 == 0 {
			c.logf("still reconnecting after %d attempts (%s): %v", attempt, time.Since(start).Round(time.Millisecond), err)
		}
		if !sleep(c.ctx, delay) {
			return nil, "", c.ctx.Err()
		}
		delay = min(2*delay, backoffMax)
	}
}

// connectOnce logs in at the gateway for a fresh token (after a Redis
// restart the old one is gone) and connects to a listed node, a random one
// of those not to avoid.
func (c *Client) connectOnce(avoid []string) (*chatclient.Conn, string, error) {
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	token, nodes, err := c.cfg.Gateway.Login(ctx, c.cfg.Name, c.cfg.Password)
	if err != nil {
		return nil, "", fmt.Errorf("gateway login: %w", err)
	}
	var prefer, avoided []chatclient.NodeInfo
	for _, n := range nodes {
		if slices.Contains(avoid, n.ID) {
			avoided = append(avoided, n)
		} else {
			prefer = append(prefer, n)
		}
	}
	rand.Shuffle(len(prefer), func(i, j int) { prefer[i], prefer[j] = prefer[j], prefer[i] })
	err = errors.New("the gateway lists no node")
	for _, n := range append(prefer, avoided...) {
		if !loopback(n.WS) {
			err = fmt.Errorf("node %s at %s is not on loopback; not connecting", n.ID, n.WS)
			continue
		}
		var conn *chatclient.Conn
		conn, err = chatclient.Dial(ctx, n.WS, pushBuffer)
		if err != nil {
			err = fmt.Errorf("connect to %s: %w", n.ID, err)
			continue
		}
		var lr protocol.LoginReply
		if err = conn.Do(ctx, protocol.ActionLogin, protocol.LoginData{Token: token, Device: c.cfg.Device}, &lr); err != nil {
			closeConn(conn)
			err = fmt.Errorf("login at %s: %w", n.ID, err)
			continue
		}
		return conn, lr.Node, nil
	}
	return nil, "", err
}

// loopback reports whether a WebSocket URL names a loopback address.
func loopback(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// closeConn closes a connection whose pushes nobody reads.
func closeConn(conn *chatclient.Conn) {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range conn.Pushes() {
		}
	}()
	_ = conn.Close()
	<-drained
}

// pushQueue takes the pushes of a connection as they come, so that the
// connection's reader never waits for the client (which may be waiting for
// a reply on that connection).
type pushQueue struct {
	mu     sync.Mutex
	items  []chatclient.Push
	closed bool
	ready  chan struct{}
}

func (q *pushQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *pushQueue) take() ([]chatclient.Push, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items, q.closed
}

// serve uses conn until it ends, its node says it goes away, a reconnect
// is asked for, or the client closes: it syncs every conversation from the
// client's offsets (retrying with a backoff while the server cannot
// answer; chat and pushes go on meanwhile), which completes the reconnect
// of ticket, and handles pushes. It reports whether the connection was
// lost (so its node is better avoided).
func (c *Client) serve(conn *chatclient.Conn, node string, ticket int) (lost bool) {
	q := &pushQueue{ready: make(chan struct{}, 1)}
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		for p := range conn.Pushes() {
			q.mu.Lock()
			q.items = append(q.items, p)
			q.mu.Unlock()
			q.signal()
		}
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		q.signal()
	}()
	stopPing := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		conn.Keepalive(stopPing, pingInterval, pingTimeout)
	}()
	c.setConn(conn, node)
	caughtUp := false
	catchUp := func() {
		err := c.catchUp(conn)
		if err == nil {
			caughtUp = true
			c.mu.Lock()
			c.served = max(c.served, ticket)
			c.mu.Unlock()
			return
		}
		c.CatchUpFailures.Add(1)
	}
	catchUp()
	catchUpRetry := newBackoff()
	gapRetry := newBackoff()
	gaps := time.NewTicker(gapCheck)
	defer func() {
		gaps.Stop()
		c.setConn(nil, "")
		close(stopPing)
		_ = conn.Close()
		<-pinged
		<-pumped
		// What arrived before the close still counts.
		items, _ := q.take()
		c.handle(conn, items)
	}()
	for {
		select {
		case <-c.ctx.Done():
			return false
		case <-c.reconnectReq:
			return false
		case <-gaps.C:
			switch {
			case !caughtUp:
				if catchUpRetry.due() {
					catchUp()
					catchUpRetry.failed()
				}
			case gapRetry.due():
				if c.fillGaps(conn) {
					gapRetry.reset()
				} else {
					gapRetry.failed()
				}
			}
		case <-q.ready:
			items, closed := q.take()
			if c.handle(conn, items) {
				return true // the node goes away
			}
			if closed {
				return true
			}
		}
	}
}

// handle processes pushes; it reports whether one said the node goes away.
func (c *Client) handle(conn *chatclient.Conn, items []chatclient.Push) (goingAway bool) {
	for _, p := range items {
		switch p.Action {
		case protocol.PushMessage:
			var m protocol.Message
			if err := json.Unmarshal(p.Data, &m); err != nil || m.Conv == "" {
				c.logf("malformed message push %s", p.Data)
				continue
			}
			if m.Room != "" {
				c.mu.Lock()
				if c.watchHit.IsZero() && c.watchFrom > 0 && m.TS > c.watchFrom {
					c.watchHit = time.Now()
				}
				c.mu.Unlock()
			}
			c.procMu.Lock()
			c.offerLocked(m, FromPush)
			c.procMu.Unlock()
		case protocol.PushMember:
			// A member joined or left a room: an event of the room's
			// conversation, which takes a seq there like a message.
			var mp protocol.MemberPush
			if err := json.Unmarshal(p.Data, &mp); err != nil || mp.Conv == "" {
				c.logf("malformed member push %s", p.Data)
				continue
			}
			c.procMu.Lock()
			c.offerLocked(mp.Event(), FromPush)
			c.procMu.Unlock()
		case protocol.PushNode:
			var np protocol.NodePush
			if json.Unmarshal(p.Data, &np) == nil && np.Reconnect {
				goingAway = true
			}
		case protocol.PushKicked:
			// Only this workload logs in as this user, each device
			// under its own name: the only kick that may come is of a
			// connection the client left already, by its own next
			// login (a reconnect race). Any other is a violation.
			var kp protocol.KickedPush
			if err := json.Unmarshal(p.Data, &kp); err != nil {
				kp.Reason = string(p.Data)
			}
			c.mu.Lock()
			away := c.conn != conn || c.wanted > c.served
			c.mu.Unlock()
			c.Kicked.Add(1)
			c.cfg.Record.AddKick(c.cfg.ID, kp.Reason, away, c.cfg.Kick)
			c.logf("kicked (reconnecting: %t): %s", away, p.Data)
		}
	}
	return goingAway
}

// ---- what the client holds ----------------------------------------------------

// offerLocked takes m, which reached the client: shown at once if it is
// next in its conversation (or old), otherwise it waits for those before
// it. c.procMu must be held.
func (c *Client) offerLocked(m protocol.Message, src Source) {
	if m.Seq > c.view.Offset(m.Conv)+1 {
		c.pending[m.Conv] = append(c.pending[m.Conv], waiting{m: m, src: src, since: time.Now()})
		return
	}
	c.acceptLocked(m, src)
	c.releaseLocked(m.Conv, false)
}

// acceptLocked records m as processed now and applies it to the view.
// A member joining or leaving a room moves the view on without being
// recorded: the checks are about the workload's messages, edits and
// recalls.
func (c *Client) acceptLocked(m protocol.Message, src Source) {
	if m.Kind == "" || m.Changes() {
		c.cfg.Record.AddArrival(c.cfg.ID, m, src)
	}
	c.view.Accept(m)
}

// releaseLocked processes the waiting messages of conv that are next (or
// old), in seq order; with all, every waiting message (after a sync said
// what exists before them).
func (c *Client) releaseLocked(conv string, all bool) {
	w := c.pending[conv]
	if len(w) == 0 {
		return
	}
	sort.SliceStable(w, func(i, j int) bool { return w[i].m.Seq < w[j].m.Seq })
	i := 0
	for ; i < len(w); i++ {
		if !all && w[i].m.Seq > c.view.Offset(conv)+1 {
			break
		}
		c.acceptLocked(w[i].m, w[i].src)
	}
	if i == len(w) {
		delete(c.pending, conv)
	} else {
		c.pending[conv] = w[i:]
	}
}

// backoff spaces out the attempts of something that fails.
type backoff struct {
	delay time.Duration
	next  time.Time
}

func newBackoff() *backoff { return &backoff{delay: backoffMin} }

// due reports whether the next attempt may go.
func (b *backoff) due() bool { return !time.Now().Before(b.next) }

// failed pushes the next attempt out, by a delay that doubles each time.
func (b *backoff) failed() {
	b.next = time.Now().Add(b.delay)
	b.delay = min(2*b.delay, backoffMax)
}

// reset forgets the failures.
func (b *backoff) reset() { b.delay, b.next = backoffMin, time.Time{} }

// fillGaps syncs the conversations whose waiting messages have waited
// long enough for those before them. It reports false if the sync failed.
func (c *Client) fillGaps(conn *chatclient.Conn) bool {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	offsets := map[string]int64{}
	for conv := range c.settling {
		offsets[conv] = c.view.Offset(conv)
	}
	for conv, w := range c.pending {
		for _, x := range w {
			if time.Since(x.since) >= gapWait {
				offsets[conv] = c.view.Offset(conv)
				break
			}
		}
	}
	if len(offsets) == 0 {
		return true
	}
	c.GapSyncs.Add(1)
	if _, err := c.syncLocked(conn, offsets); err != nil {
		// The messages keep waiting for the next try.
		return false
	}
	return true
}

// syncLocked syncs the conversations from the given offsets, uploads what
// the client holds where the server asks for a rebuild, and processes what
// comes back; then the waiting messages of those conversations. It returns
// the conversations the server left out or could not settle (a room it
// does not let the client read right now). c.procMu must be held.
func (c *Client) syncLocked(conn *chatclient.Conn, offsets map[string]int64) (unsettled []string, err error) {
	ctx, cancel := context.WithTimeout(c.ctx, 3*requestTimeout)
	defer cancel()
	got, err := conn.SyncAll(ctx, offsets)
	if err != nil {
		return nil, err
	}
	convs := make([]string, 0, len(offsets))
	for conv := range offsets {
		convs = append(convs, conv)
	}
	sort.Strings(convs)
	back := map[string]int64{}
	for _, conv := range convs {
		sc, ok := got[conv]
		for round := 0; ok && sc.Rebuild && round < rebuildRounds; round++ {
			// What the client holds above the floor, below which the
			// server lost nothing: the newest of it, as one request's worth.
			held := c.view.Held(conv, 0)
			i, _ := slices.BinarySearchFunc(held, sc.Floor+1, func(m protocol.Message, seq int64) int { return cmp.Compare(m.Seq, seq) })
			held = held[i:]
			held = held[max(0, len(held)-protocol.MaxSyncMessages):]
			if len(held) == 0 {
				break
			}
			rr, err := conn.Rebuild(ctx, conv, held)
			if err != nil {
				return nil, fmt.Errorf("rebuild %s: %w", conv, err)
			}
			c.Rebuilds.Add(1)
			c.logf("rebuilt %s: uploaded %d held messages (seq %d..%d), the server restored %d, latest %d",
				conv, len(held), held[0].Seq, held[len(held)-1].Seq, rr.Restored, rr.Latest)
			again, err := conn.SyncAll(ctx, map[string]int64{conv: c.view.Offset(conv)})
			if err != nil {
				return nil, err
			}
			sc, ok = again[conv]
		}
		if !ok || sc.Rebuild {
			unsettled = append(unsettled, conv)
			continue
		}
		if sc.Settling && c.gaveBack[conv] != sc.Floor+1 {
			// The server may lack what lies above the floor: what the
			// client holds there, shown or still waiting, goes back once.
			held := aboveFloor(c.view.Held(conv, 0), c.pending[conv], sc.Floor)
			if len(held) > 0 {
				if _, err := conn.Rebuild(ctx, conv, held); err != nil {
					return nil, fmt.Errorf("rebuild %s: %w", conv, err)
				}
				c.Rebuilds.Add(1)
			}
			c.gaveBack[conv] = sc.Floor + 1
		}
		for _, m := range sc.Messages {
			c.acceptLocked(m, FromSync)
		}
		// Settling: the server returned nothing above the floor yet;
		// what waits above the offset keeps waiting, and the next gap
		// check syncs again.
		if sc.Settling {
			c.settling[conv] = true
		} else {
			delete(c.settling, conv)
		}
		c.releaseLocked(conv, !sc.Settling)
		if mine := c.reads[conv]; sc.Read < mine {
			back[conv] = mine
		}
	}
	for conv, seq := range back {
		// Given back as it was marked; refused (above the latest, before
		// the messages come back) it waits for the next sync.
		switch _, err := conn.Read(ctx, conv, seq); {
		case err == nil:
			c.ReadsGivenBack.Add(1)
		case chatclient.Code(err) <= 0:
			return unsettled, err
		}
	}
	return unsettled, nil
}

// aboveFloor returns, in seq order and at most a request's worth (the
// newest), the messages of held and of wait above floor.
func aboveFloor(held []protocol.Message, wait []waiting, floor int64) []protocol.Message {
	out := slices.DeleteFunc(slices.Clone(held), func(m protocol.Message) bool { return m.Seq <= floor })
	have := make(map[int64]bool, len(out))
	for _, m := range out {
		have[m.Seq] = true
	}
	for _, w := range wait {
		if w.m.Seq > floor && !have[w.m.Seq] {
			have[w.m.Seq] = true
			out = append(out, w.m)
		}
	}
	slices.SortFunc(out, func(a, b protocol.Message) int { return cmp.Compare(a.Seq, b.Seq) })
	return out[max(0, len(out)-protocol.MaxSyncMessages):]
}

// catchUp syncs every conversation of the client after a (re)connect. A
// room the server leaves out (it does not let the client read it right
// now) counts as a failure: the client is not caught up.
func (c *Client) catchUp(conn *chatclient.Conn) error {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	unsettled, err := c.syncLocked(conn, c.view.Offsets())
	if err == nil && len(unsettled) > 0 {
		err = fmt.Errorf("the server left out %v", unsettled)
	}
	return err
}

// Settle brings the client to the latest of every conversation it is in:
// it syncs until the server reports nothing above the client's offsets and
// no message waits. For the end of a run, after sending stopped.
func (c *Client) Settle(ctx context.Context) error {
	var last error
	delay := backoffMin
	for attempt := 1; ctx.Err() == nil; attempt++ {
		conn := c.waitConn(ctx, time.Now().Add(requestTimeout))
		if conn == nil {
			last = errors.New("no connection")
		} else if last = c.settleOnce(conn); last == nil {
			return nil
		}
		if attempt%10 == 0 {
			c.logf("settling, attempt %d: %v", attempt, last)
		}
		if !sleep(ctx, delay) {
			break
		}
		delay = min(2*delay, backoffMax)
	}
	return fmt.Errorf("%s did not settle: %v", c.cfg.ID, last)
}

func (c *Client) settleOnce(conn *chatclient.Conn) error {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	offsets := c.view.Offsets()
	unsettled, err := c.syncLocked(conn, offsets)
	if err != nil {
		return err
	}
	if len(unsettled) > 0 {
		return fmt.Errorf("the server leaves out %v", unsettled)
	}
	// Nothing above the offsets now? (The server's latest may lie above
	// every message: after Redis lost its data, counters restart with a
	// gap.)
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	r, err := conn.Sync(ctx, c.view.Offsets())
	if err != nil {
		return err
	}
	for conv := range offsets {
		sc, ok := r.Convs[conv]
		switch {
		case !ok:
			return fmt.Errorf("the server leaves out %s", conv)
		case sc.Rebuild || sc.Settling || len(sc.Messages) > 0:
			return fmt.Errorf("%s is not at its latest (offset %d, latest %d, %d messages above the offset)",
				conv, c.view.Offset(conv), sc.Latest, len(sc.Messages))
		}
	}
	if len(c.pending) > 0 {
		return fmt.Errorf("messages still wait in %d conversations", len(c.pending))
	}
	return nil
}

// ---- sending --------------------------------------------------------------------

// JoinRooms joins the client's rooms on its current connection, retrying
// refusals a service under change gives. Call it before any client sends.
func (c *Client) JoinRooms(ctx context.Context) error {
	for _, room := range c.cfg.Rooms {
		var err error
		for attempt := 1; attempt <= 20; attempt++ {
			conn := c.waitConn(ctx, time.Now().Add(requestTimeout))
			if conn == nil {
				err = errors.New("no connection")
				break
			}
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			var r protocol.RoomReply
			r, err = conn.JoinRoom(rctx, room)
			cancel()
			if err == nil {
				if slices.ContainsFunc(r.Recent, func(m protocol.Message) bool { return m.Kind == "" }) {
					return fmt.Errorf("room %s already holds messages", room)
				}
				// Nothing before the join but members joining: the room
				// starts after their events.
				c.procMu.Lock()
				c.view.Know(protocol.RoomConv(room))
				for _, m := range r.Recent {
					c.offerLocked(m, FromSync)
				}
				c.procMu.Unlock()
				break
			}
			if !sleep(ctx, 200*time.Millisecond) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("%s joins %s: %w", c.cfg.ID, room, err)
		}
	}
	return nil
}

// ownMsg is one of the client's own messages, acknowledged.
type ownMsg struct {
	conv, to, room string
	seq            int64
	at             time.Time // acknowledged then
	recalled       bool      // recalled, or maybe (a recall given up)
}

// sendLoop runs the client's actions until ctx ends or the budget is used
// up: mostly messages, and by their shares edits and recalls of its own
// messages, reads and typing.
func (c *Client) sendLoop(ctx context.Context) {
	rng := rand.New(rand.NewPCG(c.cfg.Seed, 1))
	var own []*ownMsg
	for n := 1; ctx.Err() == nil; n++ {
		select {
		case c.act <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if ctx.Err() != nil {
			<-c.act
			return
		}
		more := c.action(ctx, rng, n, &own)
		<-c.act
		if !more {
			return
		}
		if !sleep(ctx, c.cfg.Interval/2+time.Duration(rng.Int64N(int64(c.cfg.Interval)+1))) {
			return
		}
	}
}

// action does the client's n-th action; it reports false when the budget
// is used up.
func (c *Client) action(ctx context.Context, rng *rand.Rand, n int, own *[]*ownMsg) bool {
	key := fmt.Sprintf("%s-%d", c.cfg.ID, n) // a clientMsgId: each device's own
	switch x := rng.Float64(); {
	case x < editShare:
		if o := pickOwn(rng, *own, func(i int, o *ownMsg) bool { return i >= len(*own)-editRecent && !o.recalled }); o != nil {
			if !c.cfg.Budget.Take() {
				return false
			}
			c.change(ctx, o, protocol.KindEdit, key)
			return true
		}
	case x < editShare+recallShare:
		if o := pickOwn(rng, *own, func(_ int, o *ownMsg) bool { return !o.recalled && time.Since(o.at) < recallWithin }); o != nil {
			if !c.cfg.Budget.Take() {
				return false
			}
			c.change(ctx, o, protocol.KindRecall, key)
			return true
		}
	case x < editShare+recallShare+readShare:
		c.markRead(rng)
		return true
	case x < editShare+recallShare+readShare+typingShare:
		c.typing(rng)
		return true
	}
	if !c.cfg.Budget.Take() {
		return false
	}
	to, room := "", ""
	if len(c.cfg.Rooms) > 0 && (len(c.cfg.Peers) == 0 || rng.Float64() < c.cfg.RoomShare) {
		room = c.cfg.Rooms[rng.IntN(len(c.cfg.Rooms))]
	} else {
		to = c.cfg.Peers[rng.IntN(len(c.cfg.Peers))]
	}
	if r, ok := c.send(ctx, to, room, key); ok {
		*own = append(*own, &ownMsg{conv: r.Conv, to: to, room: room, seq: r.Seq, at: time.Now()})
		if len(*own) > ownKept {
			*own = slices.Delete(*own, 0, len(*own)-ownKept)
		}
	}
	return true
}

// pickOwn returns one of own at random among those ok takes, nil if none.
func pickOwn(rng *rand.Rand, own []*ownMsg, ok func(i int, o *ownMsg) bool) *ownMsg {
	var cand []*ownMsg
	for i, o := range own {
		if ok(i, o) {
			cand = append(cand, o)
		}
	}
	if len(cand) == 0 {
		return nil
	}
	return cand[rng.IntN(len(cand))]
}

// send sends one message, to a user or a room, resending it with the same
// clientMsgId after errors that may have left it unstored, and records it
// if it is acknowledged; it returns the reply, and whether there was one.
func (c *Client) send(ctx context.Context, to, room, cmid string) (protocol.ChatReply, bool) {
	text := Text(cmid)
	deadline := time.Now().Add(sendGiveUp)
	delay := backoffMin
	var err error
	for attempt := 1; attempt <= maxSendAttempts && time.Now().Before(deadline); attempt++ {
		conn := c.waitConn(ctx, deadline)
		if conn == nil {
			if err == nil {
				err = errors.New("no connection")
			}
			break
		}
		// The request is not cut short when sending stops: a send in
		// flight is answered or times out.
		rctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		var r protocol.ChatReply
		if room != "" {
			r, err = conn.ChatRoom(rctx, room, text, cmid)
		} else {
			r, err = conn.Chat(rctx, to, text, cmid)
		}
		cancel()
		if err == nil {
			c.acked(r, to, room, text, cmid)
			return r, true
		}
		switch code := chatclient.Code(err); {
		case code <= 0:
			// Lost connection, or no answer in time (the keepalive
			// replaces a connection to a stopped node).
		case code == 401:
			_ = conn.Close() // the session is gone: log in again
		case code == 429 || code >= 500:
		default: // 400, 403, 404, 413: the message was not stored
			c.Refused.Add(1)
			c.logf("send %s refused: %v", cmid, err)
			if code != 403 && code != 404 {
				c.cfg.Record.AddGaveUp(cmid)
				return protocol.ChatReply{}, false
			}
			// A room or user a service under change does not know
			// for a moment: try again.
		}
		if !sleep(ctx, delay) {
			break
		}
		delay = min(2*delay, backoffMax)
	}
	c.cfg.Record.AddGaveUp(cmid)
	if ctx.Err() == nil {
		c.logf("gave up send %s: %v", cmid, err)
	}
	return protocol.ChatReply{}, false
}

// acked records an acknowledged send; a direct message also joins what the
// sending client holds of the conversation (a room message comes back as a
// push, and a direct one reaches the sender's other devices as one).
func (c *Client) acked(r protocol.ChatReply, to, room, text, cmid string) {
	m := protocol.Message{ID: r.ID, Conv: r.Conv, Seq: r.Seq, From: c.cfg.Name, To: to, Room: room, Text: text, TS: r.TS}
	recipients := []string{to}
	if room != "" {
		recipients = c.cfg.Members
	}
	c.cfg.Record.AddAck(Ack{Msg: m, ClientMsgID: cmid, Recipients: recipients, Device: c.cfg.ID})
	if room == "" {
		c.procMu.Lock()
		c.offerLocked(m, FromAck)
		c.procMu.Unlock()
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
