package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

// cmdState is the command loop's own state; only the command loop uses it.
type cmdState struct {
	room   string   // the current room; "" for none
	joined []string // rooms this session joined and has not left, the latest last
}

// errNoRoom is the answer to text typed while there is no current room.
var errNoRoom = errors.New("no current room: /join <room> to pick one, or /msg <user> <text>")

// exec executes one command and prints its outcome. It returns when the
// reply has arrived (for a room message: when the message was printed).
func (c *client) exec(ctx context.Context, st *cmdState, cmd command) {
	var err error
	switch cmd.kind {
	case cmdNone, cmdQuit:
	case cmdHelp:
		c.out.block(strings.Split(helpText, "\n"))
	case cmdSay:
		if st.room == "" {
			err = errNoRoom
			break
		}
		err = c.sayRoom(ctx, st.room, cmd.text)
	case cmdJoin:
		err = c.join(ctx, st, cmd.arg)
	case cmdLeave:
		err = c.leave(ctx, st, cmd.arg)
	case cmdRooms:
		var rooms []protocol.RoomInfo
		_, err = c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
			rooms, err = conn.Rooms(ctx)
			return err
		})
		if err == nil {
			c.out.line("%s", formatRooms(rooms, st.room))
		}
	case cmdRoom:
		c.out.line("%s", formatCurrent(st.room))
	case cmdMsg:
		err = c.sendDM(ctx, cmd.arg, cmd.text)
	case cmdHistory:
		err = c.history(ctx, st, cmd.arg)
	case cmdEdit, cmdRecall, cmdRead:
		err = c.change(ctx, st, cmd)
	case cmdWho:
		var r protocol.UserInfoReply
		_, err = c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) error {
			return conn.Do(ctx, protocol.ActionUserInfo, protocol.UserInfoData{Username: cmd.arg}, &r)
		})
		if err == nil {
			c.out.line("%s", formatWho(r))
		}
	case cmdTop:
		var words []protocol.WordCount
		_, err = c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
			words, err = conn.Popular(ctx, cmd.n)
			return err
		})
		if err == nil {
			c.out.line("%s", formatTop(words))
		}
	default:
		err = errors.New("unknown command")
	}
	if err != nil && !errors.Is(err, errEnded) && ctx.Err() == nil {
		c.out.line("error: %s", userError(err))
	}
}

// join joins a room, makes it the current room, and prints its members,
// which of them are online, and the recent messages this session has not
// printed yet.
func (c *client) join(ctx context.Context, st *cmdState, room string) error {
	var r protocol.RoomReply
	_, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
		r, err = conn.JoinRoom(ctx, room)
		return err
	})
	if err != nil {
		return err
	}
	if r.Room == "" {
		r.Room = room
	}
	st.room = r.Room
	st.joined = append(slices.DeleteFunc(st.joined, func(x string) bool { return x == r.Room }), r.Room)
	conv := protocol.RoomPrefix + r.Room
	slices.SortFunc(r.Recent, bySeq)
	lines := []string{formatJoined(r)}
	online, asked, others, err := c.onlineMembers(ctx, r.Members)
	if err != nil {
		c.diag.line("chat: asking who is online in %s: %s", r.Room, userError(err))
	} else {
		lines = append(lines, formatOnline(r.Room, online, asked, others))
	}

	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	for _, m := range r.Recent {
		if m.Conv == "" {
			m.Conv = conv
		}
		if line := formatMessage(c.cfg.User, m); c.offs.acceptRecent(m) && line != "" {
			lines = append(lines, line)
		}
	}
	c.offs.know(conv)
	c.out.block(lines)
	return nil
}

// onlineMembers asks which of members, but the user, are online: the
// first onlineAsk of them (the members come sorted), with userInfo
// requests sent together on one connection, which the node answers in a
// row. It returns those online, in order, how many it asked about and how
// many other members there are. A member the server no longer knows
// counts as offline.
func (c *client) onlineMembers(ctx context.Context, members []string) (online []string, asked, others int, err error) {
	rest := slices.DeleteFunc(slices.Clone(members), func(u string) bool { return u == c.cfg.User })
	others = len(rest)
	if len(rest) > onlineAsk {
		rest = rest[:onlineAsk]
	}
	if len(rest) == 0 {
		return nil, 0, others, nil
	}
	_, err = c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) error {
		up := make([]bool, len(rest))
		errs := make([]error, len(rest))
		var wg sync.WaitGroup
		for i, u := range rest {
			wg.Add(1)
			go func() { // ends with its request, within ctx
				defer wg.Done()
				var r protocol.UserInfoReply
				errs[i] = conn.Do(ctx, protocol.ActionUserInfo, protocol.UserInfoData{Username: u}, &r)
				up[i] = r.Online
			}()
		}
		wg.Wait()
		online = online[:0]
		for i, u := range rest {
			switch {
			case chatclient.Code(errs[i]) == 404:
			case errs[i] != nil:
				return errs[i]
			case up[i]:
				online = append(online, u)
			}
		}
		return nil
	})
	return online, len(rest), others, err
}

// leave leaves a room (the current one if room is empty). Leaving the
// current room makes another room the user is a member of the current
// one, and says which.
func (c *client) leave(ctx context.Context, st *cmdState, room string) error {
	if room == "" {
		room = st.room
	}
	if room == "" {
		return errors.New("no current room: /leave <room>")
	}
	_, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) error {
		_, err := conn.LeaveRoom(ctx, room)
		return err
	})
	if err != nil {
		return err
	}
	c.deliverMu.Lock()
	c.offs.forget(protocol.RoomPrefix + room)
	c.deliverMu.Unlock()
	st.joined = slices.DeleteFunc(st.joined, func(x string) bool { return x == room })
	c.out.line("left %s", clean(room))
	if st.room == room {
		st.room = c.anotherRoom(ctx, st)
		c.out.line("%s", formatCurrent(st.room))
	}
	return nil
}

// anotherRoom picks a room the user is a member of, for the current room
// after a leave: the one this session joined last among them, else the
// first by name; "" when the user is in no room. Which rooms those are it
// asks the server; if that fails, it goes by the rooms this session
// knows of.
func (c *client) anotherRoom(ctx context.Context, st *cmdState) string {
	var rooms []protocol.RoomInfo
	_, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
		rooms, err = conn.Rooms(ctx)
		return err
	})
	var member []string
	if err == nil {
		for _, r := range rooms {
			if r.Joined {
				member = append(member, r.Name)
			}
		}
	} else {
		c.diag.line("chat: listing rooms: %s", userError(err))
		for conv := range c.offs.snapshot() {
			if name, ok := strings.CutPrefix(conv, protocol.RoomPrefix); ok {
				member = append(member, name)
			}
		}
	}
	return pickRoom(member, st.joined)
}

// pickRoom is the room of member joined last according to joined (oldest
// first), else the first of member by name, else "".
func pickRoom(member, joined []string) string {
	for _, r := range slices.Backward(joined) {
		if slices.Contains(member, r) {
			return r
		}
	}
	if len(member) == 0 {
		return ""
	}
	return slices.Min(member)
}

// sayRoom sends text to a room and waits until the room sends it back,
// so that it is printed, like everyone's, in seq order, before the next
// command runs. If the copy does not come in time, it is fetched with sync.
func (c *client) sayRoom(ctx context.Context, room, text string) error {
	id := newClientMsgID()
	var ack protocol.ChatReply
	conn, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
		ack, err = conn.ChatRoom(ctx, room, text, id)
		return err
	})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, echoWait)
	arrived := c.offs.wait(wctx, ack.Conv, ack.Seq)
	cancel()
	if arrived || ctx.Err() != nil {
		return nil
	}
	c.fetchUpTo(ctx, conn, ack.Conv, ack.Seq)
	return nil
}

// fetchUpTo syncs conv from its offset and prints what is new, so that
// the message with seq is printed (when sync has it).
func (c *client) fetchUpTo(ctx context.Context, conn *chatclient.Conn, conv string, seq int64) {
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	held, known := c.offs.get(conv)
	if known && held >= seq {
		return
	}
	if !known {
		held = seq - 1
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	got, err := conn.SyncAll(rctx, map[string]int64{conv: held})
	if err != nil {
		c.diag.line("chat: fetching %s after seq %d: %v", conv, held, err)
		return
	}
	var lines []string
	for _, m := range got[conv].Messages {
		if line := formatMessage(c.cfg.User, m); c.offs.accept(m) && line != "" {
			lines = append(lines, line)
		}
	}
	c.out.block(lines)
}

// sendDM sends a direct message and prints it once it is stored.
func (c *client) sendDM(ctx context.Context, to, text string) error {
	id := newClientMsgID()
	var ack protocol.ChatReply
	conn, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
		ack, err = conn.Chat(ctx, to, text, id)
		return err
	})
	if err != nil {
		return err
	}
	c.deliver(ctx, conn, protocol.Message{ID: ack.ID, Conv: ack.Conv, Seq: ack.Seq, From: c.cfg.User, To: to, Text: text, TS: ack.TS})
	return nil
}

// change runs /edit, /recall and /read in the conversation cmd.arg names
// ("@user", a room, or "" for the current room): an edit or recall of the
// user's last message there that this session printed, or a read mark up
// to everything it holds. What changed is printed like a push of it.
func (c *client) change(ctx context.Context, st *cmdState, cmd command) error {
	me := c.cfg.User
	var conv, peer, room, where string
	switch {
	case strings.HasPrefix(cmd.arg, "@"):
		peer = cmd.arg[1:]
		conv, where = dmConv(me, peer), "your conversation with "+peer
	case cmd.arg != "":
		room = cmd.arg
	case st.room == "":
		return errNoRoom
	default:
		room = st.room
	}
	if room != "" {
		conv, where = protocol.RoomConv(room), room
	}
	if cmd.kind == cmdRead {
		seq, _ := c.offs.get(conv)
		var r protocol.ReadReply
		_, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
			r, err = conn.Read(ctx, conv, seq)
			return err
		})
		if err == nil {
			c.out.line("marked %s read up to #%d", where, r.Seq)
		}
		return err
	}
	seq := c.offs.lastOwn(conv)
	if seq == 0 {
		return fmt.Errorf("this session has shown no message of yours in %s", where)
	}
	kind := protocol.KindEdit
	if cmd.kind == cmdRecall {
		kind = protocol.KindRecall
	}
	var ack protocol.ChatReply
	conn, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
		if kind == protocol.KindEdit {
			ack, err = conn.Edit(ctx, conv, seq, cmd.text)
		} else {
			ack, err = conn.Recall(ctx, conv, seq)
		}
		return err
	})
	if err != nil {
		return err
	}
	text := cmd.text
	if kind == protocol.KindRecall {
		text = ""
	}
	c.deliver(ctx, conn, protocol.Message{ID: ack.ID, Conv: ack.Conv, Seq: ack.Seq, From: me, To: peer, Room: room, Kind: kind, Ref: seq, Text: text, TS: ack.TS})
	return nil
}

// history prints the last messages of a room, or of the direct
// conversation with a user when target is "@user".
func (c *client) history(ctx context.Context, st *cmdState, target string) error {
	if target == "" {
		target = st.room
	}
	if target == "" || target == "@" {
		return errors.New("no current room: /history <room> or /history @<user>")
	}
	q := protocol.HistoryData{Limit: historyLimit}
	if user, ok := strings.CutPrefix(target, "@"); ok {
		q.With = user
	} else {
		q.Room = target
	}
	var msgs []protocol.Message
	_, err := c.request(ctx, func(ctx context.Context, conn *chatclient.Conn) (err error) {
		msgs, err = conn.History(ctx, q)
		return err
	})
	if err != nil {
		return err
	}
	c.out.block(formatHistory(c.cfg.User, target, msgs))
	return nil
}

// newClientMsgID returns a fresh id for one message, reused only when that
// message is resent.
func newClientMsgID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return "t-" + hex.EncodeToString(b[:])
}
