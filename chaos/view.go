package chaos

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	"chatcluster/protocol"
)

// Verdict is what a client that keeps offsets does with a message that
// reached it.
type Verdict int

const (
	// Shown: the message is above the conversation's offset; the client
	// shows it and its seq becomes the offset.
	Shown Verdict = iota
	// Redelivered: at or below the offset, and the client holds this very
	// message at its seq. Not shown.
	Redelivered
	// Hidden: at or below the offset, and the client holds another message
	// (or none) at its seq. Not shown.
	Hidden
)

func (v Verdict) String() string {
	switch v {
	case Shown:
		return "shown"
	case Redelivered:
		return "redelivered"
	case Hidden:
		return "hidden"
	}
	return "?"
}

// View is what a correct client holds of its conversations: per
// conversation the offset (the highest seq shown) and the messages shown,
// by seq. The workload's clients decide with it what to show, and the
// checker replays the record through a View of its own. Not safe for
// concurrent use.
type View struct {
	convs map[string]*convView
}

type convView struct {
	offset int64
	held   map[int64]protocol.Message
}

// NewView returns an empty view.
func NewView() *View { return &View{convs: map[string]*convView{}} }

func (v *View) conv(conv string) *convView {
	c := v.convs[conv]
	if c == nil {
		c = &convView{held: map[int64]protocol.Message{}}
		v.convs[conv] = c
	}
	return c
}

// Know makes conv known, at offset 0 if it was not known yet.
func (v *View) Know(conv string) { v.conv(conv) }

// Offset returns the offset of conv (0 if unknown).
func (v *View) Offset(conv string) int64 {
	if c := v.convs[conv]; c != nil {
		return c.offset
	}
	return 0
}

// Offsets returns the offset of every known conversation.
func (v *View) Offsets() map[string]int64 {
	out := make(map[string]int64, len(v.convs))
	for conv, c := range v.convs {
		out[conv] = c.offset
	}
	return out
}

// Convs returns the known conversations, sorted.
func (v *View) Convs() []string {
	out := slices.Collect(maps.Keys(v.convs))
	sort.Strings(out)
	return out
}

// Accept decides about m, which reached the client, and records it if it
// is shown.
func (v *View) Accept(m protocol.Message) Verdict {
	c := v.conv(m.Conv)
	if m.Seq <= c.offset {
		if h, ok := c.held[m.Seq]; ok && h.ID == m.ID {
			return Redelivered
		}
		return Hidden
	}
	c.offset = m.Seq
	c.held[m.Seq] = m
	return Shown
}

// Held returns the messages of conv the client shows, by seq; at most the
// newest limit of them when limit > 0.
func (v *View) Held(conv string, limit int) []protocol.Message {
	c := v.convs[conv]
	if c == nil {
		return nil
	}
	out := slices.Collect(maps.Values(c.held))
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// State is what a client shows of one message once every event it holds
// is applied: the text (edited or not), or that the message was recalled.
type State struct {
	Text     string
	Edited   bool
	Recalled bool
}

func (s State) String() string {
	switch {
	case s.Recalled:
		return "recalled"
	case s.Edited:
		return fmt.Sprintf("%q (edited)", s.Text)
	}
	return fmt.Sprintf("%q", s.Text)
}

// Final returns the final state of every message of conv the client
// shows, by seq: the messages as shown, with the edits and recalls it
// shows applied in seq order. Room membership events change no message.
func (v *View) Final(conv string) map[int64]State {
	return applyEvents(v.Held(conv, 0))
}

// applyEvents folds msgs (sorted by seq: messages and events of one
// conversation) into the final state of each message. A message read back
// already edited or recalled (a sync after the event) starts in that
// state; applying the events again leads to the same end, as they come in
// seq order and a recall is final.
func applyEvents(msgs []protocol.Message) map[int64]State {
	out := make(map[int64]State, len(msgs))
	for _, m := range msgs {
		switch m.Kind {
		case "":
			out[m.Seq] = stateOf(m)
		case protocol.KindEdit:
			if s, ok := out[m.Ref]; ok && !s.Recalled {
				out[m.Ref] = State{Text: m.Text, Edited: true}
			}
		case protocol.KindRecall:
			if _, ok := out[m.Ref]; ok {
				out[m.Ref] = State{Recalled: true}
			}
		}
	}
	return out
}

// stateOf is the state of message m as it came: as sent, or as read back
// (edited, or recalled).
func stateOf(m protocol.Message) State {
	if m.Recalled {
		return State{Recalled: true}
	}
	return State{Text: m.Text, Edited: m.Edited > 0}
}

// ServerState returns the state of every message among msgs (one
// conversation read back from the server, by history or sync from seq 0)
// as the server gives it: a server applies every event of the
// conversation before it answers, so its events are not applied again.
func ServerState(msgs []protocol.Message) map[int64]State {
	out := make(map[int64]State, len(msgs))
	for _, m := range msgs {
		if m.Kind == "" {
			out[m.Seq] = stateOf(m)
		}
	}
	return out
}
