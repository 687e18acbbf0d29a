package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

// register registers the user; a taken name is fine (the login that
// follows tells whether the password is right).
func (c *client) register(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	err := c.gw.Register(rctx, c.cfg.User, c.cfg.Password)
	var he *chatclient.HTTPError
	if errors.As(err, &he) && he.Status == http.StatusConflict {
		return nil
	}
	if err != nil {
		return fmt.Errorf("registering %s: %w", c.cfg.User, err)
	}
	return nil
}

// establish connects and logs in, trying up to startAttempts times at
// first and reconnectAttempts times later, with a backoff. avoid is a node
// to skip while the gateway lists another (the one just lost). The first
// connection takes the server's offsets as the baseline and prints
// "connected to"; a later one syncs from the client's offsets and prints
// "reconnected to" and what was missed.
func (c *client) establish(ctx context.Context, avoid string, first bool) (*chatclient.Conn, string, error) {
	attempts := reconnectAttempts
	if first {
		attempts = startAttempts
	}
	delay := backoffMin
	var err error
	for attempt := 1; attempt <= attempts; attempt++ {
		var conn *chatclient.Conn
		var node string
		var name string
		conn, node, name, err = c.connectOnce(ctx, avoid)
		if err == nil && first && name != "" && name != c.cfg.User {
			// The name as registered (--user Alice logs in as alice):
			// messages from it are this user's own. Set before any
			// goroutine reads it.
			c.cfg.User = name
		}
		if err == nil {
			if first {
				err = c.baseline(ctx, conn)
			} else {
				err = c.catchUp(ctx, conn, node)
			}
			if err == nil {
				if first {
					c.out.line("connected to %s as %s", clean(node), clean(c.cfg.User))
				}
				return conn, node, nil
			}
			closeConn(conn)
			err = fmt.Errorf("syncing at %s: %w", node, err)
		}
		if isPermanent(err) || ctx.Err() != nil {
			return nil, "", err
		}
		if attempt < attempts {
			c.diag.line("chat: attempt %d of %d to connect failed: %s; retrying in %s", attempt, attempts, userError(err), delay)
			if !sleep(ctx, delay) {
				return nil, "", ctx.Err()
			}
			delay = min(2*delay, backoffMax)
		}
	}
	return nil, "", fmt.Errorf("no chat node reachable after %d attempts: %w", attempts, err)
}

// connectOnce logs in at the gateway for a fresh token, then connects to
// the first listed node that accepts the token.
func (c *client) connectOnce(ctx context.Context, avoid string) (conn *chatclient.Conn, node, user string, err error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	token, nodes, err := c.gw.Login(rctx, c.cfg.User, c.cfg.Password)
	var he *chatclient.HTTPError
	if errors.As(err, &he) && (he.Status == http.StatusUnauthorized || he.Status == http.StatusBadRequest) {
		return nil, "", "", permanentError{fmt.Errorf("logging in as %s: %w", c.cfg.User, err)}
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("gateway login: %w", err)
	}
	order := nodeOrder(nodes, c.cfg.Node, avoid)
	if len(order) == 0 {
		return nil, "", "", errors.New("the gateway lists no live chat node")
	}
	if p := c.cfg.Node; p != "" && p != avoid && order[0].ID != p {
		c.diag.line("chat: the gateway does not list node %s; trying %s", p, order[0].ID)
	}
	for _, n := range order {
		conn, err = chatclient.DialTLS(rctx, n.WS, pushBuffer, c.cfg.TLS)
		if err != nil {
			err = fmt.Errorf("connecting to %s: %w", n.ID, err)
			continue
		}
		var lr protocol.LoginReply
		err = conn.Do(rctx, protocol.ActionLogin, protocol.LoginData{Token: token, Device: c.cfg.Device}, &lr)
		if err != nil {
			closeConn(conn)
			err = fmt.Errorf("logging in at %s: %w", n.ID, err)
			continue
		}
		return conn, lr.Node, lr.Username, nil
	}
	return nil, "", "", err
}

// nodeOrder is the order in which to try the listed nodes: the preferred
// one first, then the others as the gateway listed them (least loaded
// first). The one to avoid is tried only when no other is listed.
func nodeOrder(nodes []chatclient.NodeInfo, prefer, avoid string) []chatclient.NodeInfo {
	var out, avoided []chatclient.NodeInfo
	for _, n := range nodes {
		switch {
		case n.ID == avoid:
			avoided = append(avoided, n)
		case n.ID == prefer:
			out = append([]chatclient.NodeInfo{n}, out...)
		default:
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return avoided
	}
	return out
}

// closeConn closes a connection whose pushes nobody reads (they must be
// drained for its reader to end).
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

// baseline takes the server's latest seq of each conversation of the user
// as the offsets: what existed before this session is not printed (/join
// and /history show it). Rooms the user is a member of are known too, so
// that a reconnect syncs them.
func (c *client) baseline(ctx context.Context, conn *chatclient.Conn) error {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	r, err := conn.Sync(rctx, nil)
	if err != nil {
		return err
	}
	for conv, sc := range r.Convs {
		c.offs.set(conv, sc.Latest)
	}
	rooms, err := conn.Rooms(rctx)
	if err != nil {
		// A server without rooms answers 400; nothing to know then.
		c.diag.line("chat: listing rooms: %v", err)
		return nil
	}
	for _, room := range rooms {
		conv := protocol.RoomPrefix + room.Name
		if _, known := c.offs.get(conv); !room.Joined || known {
			continue
		}
		last, err := conn.History(rctx, protocol.HistoryData{Room: room.Name, Limit: 1})
		if err != nil {
			return fmt.Errorf("history of room %s: %w", room.Name, err)
		}
		var seq int64
		if len(last) > 0 {
			seq = last[len(last)-1].Seq
		}
		c.offs.set(conv, seq)
	}
	return nil
}

// catchUp syncs what the client missed while it was away and prints it
// after the "reconnected to" line: every known conversation from its
// offset, and direct conversations that began meanwhile from the start.
func (c *client) catchUp(ctx context.Context, conn *chatclient.Conn, node string) error {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()

	known := c.offs.snapshot()
	got, err := c.syncKnown(rctx, conn, known)
	if err != nil {
		return err
	}
	// New conversations: an empty sync lists all of the user's. A direct
	// one that began meanwhile is all new; a room this session did not
	// join (another session of the user did) starts from its latest.
	all, err := conn.Sync(rctx, nil)
	if err != nil {
		return err
	}
	for conv, sc := range all.Convs {
		if _, ok := known[conv]; ok {
			continue
		}
		if !strings.HasPrefix(conv, protocol.DMPrefix) {
			c.offs.set(conv, sc.Latest)
			continue
		}
		if sc.More {
			from := int64(0) // not read this time: again from the start
			if len(sc.Messages) > 0 {
				from = sc.Messages[len(sc.Messages)-1].Seq
			}
			rest, err := conn.SyncAll(rctx, map[string]int64{conv: from})
			if err != nil {
				return err
			}
			sc.Messages = append(sc.Messages, rest[conv].Messages...)
		}
		got[conv] = sc
	}

	var missed []protocol.Message
	for conv, sc := range got {
		if sc.Rebuild {
			// The server lost messages the client holds: go on from the
			// server's latest (docs/protocol.md, sync).
			c.offs.set(conv, sc.Latest)
			continue
		}
		c.offs.know(conv)
		for _, m := range sc.Messages {
			if c.offs.accept(m) && m.Kind == "" {
				missed = append(missed, m)
			}
		}
	}
	lines := []string{fmt.Sprintf("reconnected to %s; %s", clean(node), plural(len(missed), "missed message"))}
	for _, m := range mergeByTime(missed) {
		lines = append(lines, formatMessage(c.cfg.User, m))
	}
	c.out.block(lines)
	return nil
}

// syncKnown syncs the known conversations from their offsets. A
// conversation the user no longer takes part in (a room left or removed)
// is dropped from the offsets instead of failing the whole sync.
func (c *client) syncKnown(ctx context.Context, conn *chatclient.Conn, known map[string]int64) (map[string]protocol.SyncConv, error) {
	if len(known) == 0 {
		return map[string]protocol.SyncConv{}, nil // an empty sync would mean "everything"
	}
	got, err := conn.SyncAll(ctx, known)
	if code := chatclient.Code(err); code != 403 && code != 404 {
		return got, err
	}
	got = map[string]protocol.SyncConv{}
	for conv, seq := range known {
		r, err := conn.SyncAll(ctx, map[string]int64{conv: seq})
		switch code := chatclient.Code(err); {
		case code == 403 || code == 404:
			c.diag.line("chat: no longer syncing %s: %s", conv, userError(err))
			c.offs.forget(conv)
		case err != nil:
			return nil, err
		default:
			got[conv] = r[conv]
		}
	}
	return got, nil
}

// mergeByTime orders messages of several conversations by time while
// keeping each conversation in seq order.
func mergeByTime(msgs []protocol.Message) []protocol.Message {
	byConv := map[string][]protocol.Message{}
	var convs []string
	for _, m := range msgs {
		if _, ok := byConv[m.Conv]; !ok {
			convs = append(convs, m.Conv)
		}
		byConv[m.Conv] = append(byConv[m.Conv], m)
	}
	sort.Strings(convs)
	for _, conv := range convs {
		slices.SortFunc(byConv[conv], bySeq)
	}
	out := make([]protocol.Message, 0, len(msgs))
	for len(out) < len(msgs) {
		best := ""
		for _, conv := range convs {
			q := byConv[conv]
			if len(q) > 0 && (best == "" || q[0].TS < byConv[best][0].TS) {
				best = conv
			}
		}
		out = append(out, byConv[best][0])
		byConv[best] = byConv[best][1:]
	}
	return out
}

// deliver prints m unless the client has it. When m skips seq numbers of
// a known conversation (or a direct one that began during the session),
// the missing messages are fetched with sync on conn and printed first; if
// that fails, m is left for the next sync.
func (c *client) deliver(ctx context.Context, conn *chatclient.Conn, m protocol.Message) {
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	held, known := c.offs.get(m.Conv)
	if !known && strings.HasPrefix(m.Conv, protocol.DMPrefix) {
		// The start-up sync and the catch-up after each reconnect know
		// every direct conversation that had messages then: this one
		// began since, so everything in it is new. (Two users writing
		// at once: the other's message may take seq 1 and arrive after
		// one's own seq 2.) A room is known from its join.
		held, known = 0, true
	}
	if known && m.Seq <= held {
		return
	}
	if !known || m.Seq == held+1 || conn == nil {
		if line := formatMessage(c.cfg.User, m); c.offs.accept(m) && line != "" {
			c.out.line("%s", line)
		}
		return
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	got, err := conn.SyncAll(rctx, map[string]int64{m.Conv: held})
	if err != nil {
		c.diag.line("chat: fetching %s after seq %d: %v", m.Conv, held, err)
		return
	}
	msgs := got[m.Conv].Messages
	if !slices.ContainsFunc(msgs, func(x protocol.Message) bool { return x.Seq == m.Seq }) {
		msgs = append(msgs, m)
	}
	slices.SortFunc(msgs, bySeq)
	var lines []string
	for _, x := range msgs {
		if line := formatMessage(c.cfg.User, x); c.offs.accept(x) && line != "" {
			lines = append(lines, line)
		}
	}
	c.out.block(lines)
}

// connEnd says how a connection's pushes ended.
type connEnd struct {
	kicked bool
	reason string
}

// supervise owns the connection from the first one on: it starts the push
// reader and keepalive of each, reconnects when it is lost or its node
// drains, and ends the session when kicked or out of attempts. It returns
// when ctx ends or the session is finished.
func (c *client) supervise(ctx context.Context, conn *chatclient.Conn, node string) {
	for {
		goingAway := make(chan struct{}, 1)
		ended := make(chan connEnd, 1)
		stopKeepalive := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			ended <- c.readPushes(ctx, conn, goingAway)
		}()
		go func() {
			defer wg.Done()
			conn.Keepalive(stopKeepalive, keepaliveInterval, c.cfg.Timeout)
		}()
		c.setConn(conn, node)

		var end connEnd
		lost := ""
		select {
		case <-goingAway:
			lost = fmt.Sprintf("node %s is going away", clean(node))
			c.setConn(nil, "")
			_ = conn.Close()
			end = <-ended
		case end = <-ended:
			lost = fmt.Sprintf("connection to %s lost", clean(node))
			if err := conn.Err(); err != nil {
				c.diag.line("chat: connection to %s: %v", node, err)
			}
		case <-ctx.Done():
			c.setConn(nil, "")
			_ = conn.Close()
			<-ended
		}
		c.setConn(nil, "")
		close(stopKeepalive)
		wg.Wait()
		switch {
		case ctx.Err() != nil:
			return
		case end.kicked:
			c.finish(exitKicked, "kicked: "+clean(end.reason))
			return
		}
		c.out.line("%s; reconnecting...", lost)
		var err error
		conn, node, err = c.establish(ctx, node, false)
		if err != nil {
			if ctx.Err() == nil {
				c.finish(exitFailed, "giving up: "+userError(err))
			}
			return
		}
	}
}

// readPushes handles the pushes of conn until it ends. A node push is
// passed on to goingAway (once); a kicked push is remembered for the end.
func (c *client) readPushes(ctx context.Context, conn *chatclient.Conn, goingAway chan<- struct{}) connEnd {
	var end connEnd
	for p := range conn.Pushes() {
		switch p.Action {
		case protocol.PushMessage:
			var m protocol.Message
			if err := json.Unmarshal(p.Data, &m); err != nil || m.Conv == "" {
				c.diag.line("chat: malformed message push %s", p.Data)
				continue
			}
			c.deliver(ctx, conn, m)
		case protocol.PushMember:
			// A member joined or left a room: an event of the room's
			// conversation, held (its seq) but not shown.
			var mp protocol.MemberPush
			if err := json.Unmarshal(p.Data, &mp); err != nil || mp.Conv == "" {
				c.diag.line("chat: malformed member push %s", p.Data)
				continue
			}
			c.deliver(ctx, conn, mp.Event())
		case protocol.PushTyping:
			var tp protocol.TypingPush
			if json.Unmarshal(p.Data, &tp) == nil && tp.Conv != "" && c.signals.typing(tp.Conv, tp.From, time.Now()) {
				c.out.line("%s", formatTyping(c.cfg.User, tp))
			}
		case protocol.PushRead:
			var rp protocol.ReadPush
			if json.Unmarshal(p.Data, &rp) == nil && rp.User != c.cfg.User && strings.HasPrefix(rp.Conv, protocol.DMPrefix) {
				// The other side of a direct conversation read it: said once
				// per own message it covers.
				if own := c.offs.lastOwn(rp.Conv); own > 0 && rp.Seq >= own && c.signals.seen(rp.Conv, own) {
					c.out.line("[dm -> %s] seen by %s", clean(rp.User), clean(rp.User))
				}
			}
		case protocol.PushRoomDeleted:
			var rd protocol.RoomDeletedPush
			if json.Unmarshal(p.Data, &rd) == nil && rd.Room != "" {
				c.offs.forget(protocol.RoomConv(rd.Room))
				c.out.line("%s", formatRoomDeleted(rd))
			}
		case protocol.PushPresence:
			var pp protocol.PresencePush
			if err := json.Unmarshal(p.Data, &pp); err != nil || pp.Username == "" {
				c.diag.line("chat: malformed presence push %s", p.Data)
				continue
			}
			c.out.line("%s", formatPresence(pp))
		case protocol.PushKicked:
			var k protocol.KickedPush
			_ = json.Unmarshal(p.Data, &k)
			end.kicked, end.reason = true, k.Reason
			if end.reason == "" {
				end.reason = "logged in elsewhere"
			}
		case protocol.PushNode:
			var np protocol.NodePush
			if json.Unmarshal(p.Data, &np) == nil && np.Reconnect {
				select {
				case goingAway <- struct{}{}:
				default:
				}
			}
		default:
			c.diag.line("chat: ignoring push %q", p.Action)
		}
	}
	return end
}

func bySeq(a, b protocol.Message) int { return cmp.Compare(a.Seq, b.Seq) }
