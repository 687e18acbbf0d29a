package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"chatcluster/protocol"
)

// printer writes whole lines to the user. It is safe for concurrent use:
// each call writes its lines with one Write, so lines of different
// goroutines never mix.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

// line writes one formatted line.
func (p *printer) line(format string, args ...any) {
	p.block([]string{fmt.Sprintf(format, args...)})
}

// block writes lines together.
func (p *printer) block(lines []string) {
	if len(lines) == 0 {
		return
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(p.w, b.String()) // nothing to do about a closed terminal
}

// clean makes s safe to print on one line: control characters (newlines,
// tabs, escape sequences) and the characters that reorder text are shown
// escaped.
func clean(s string) string {
	if strings.IndexFunc(s, needsEscape) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x100 && needsEscape(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case needsEscape(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func needsEscape(r rune) bool {
	return unicode.IsControl(r) || r == unicode.ReplacementChar ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) // bidirectional overrides and isolates
}

// formatMessage is the line of a message as user me sees it:
// "[room] from: text", "[dm] from: text" or "[dm -> to] text".
func formatMessage(me string, m protocol.Message) string {
	if room, ok := strings.CutPrefix(m.Conv, protocol.RoomPrefix); ok {
		if m.Room != "" {
			room = m.Room
		}
		return fmt.Sprintf("[%s] %s: %s", clean(room), clean(m.From), clean(m.Text))
	}
	if m.From == me {
		return fmt.Sprintf("[dm -> %s] %s", clean(dmPeer(me, m)), clean(m.Text))
	}
	return fmt.Sprintf("[dm] %s: %s", clean(m.From), clean(m.Text))
}

// dmPeer is the other participant of a direct message of me.
func dmPeer(me string, m protocol.Message) string {
	if m.To != "" {
		return m.To
	}
	a, b, ok := strings.Cut(strings.TrimPrefix(m.Conv, protocol.DMPrefix), ":")
	if !ok {
		return m.Conv
	}
	if a == me {
		return b
	}
	return a
}

// dmConv is the conversation id of the direct conversation of a and b.
func dmConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return protocol.DMPrefix + a + ":" + b
}

// plural is "1 message", "2 messages".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func formatJoined(r protocol.RoomReply) string {
	names := make([]string, len(r.Members))
	for i, m := range r.Members {
		names[i] = clean(m)
	}
	return fmt.Sprintf("joined %s: %s", clean(r.Room), strings.Join(names, ", "))
}

func formatRooms(rooms []protocol.RoomInfo) string {
	if len(rooms) == 0 {
		return "rooms: none"
	}
	parts := make([]string, len(rooms))
	for i, r := range rooms {
		if r.Joined {
			parts[i] = fmt.Sprintf("%s (%d, joined)", clean(r.Name), r.Members)
		} else {
			parts[i] = fmt.Sprintf("%s (%d)", clean(r.Name), r.Members)
		}
	}
	return "rooms: " + strings.Join(parts, ", ")
}

func formatTop(words []protocol.WordCount) string {
	if len(words) == 0 {
		return "top: none"
	}
	parts := make([]string, len(words))
	for i, w := range words {
		parts[i] = fmt.Sprintf("%s %d", clean(w.Word), w.Count)
	}
	return "top: " + strings.Join(parts, ", ")
}

func formatWho(r protocol.UserInfoReply) string {
	switch {
	case !r.Online:
		return clean(r.Username) + " is offline"
	case r.Node == "":
		return clean(r.Username) + " is online"
	}
	return fmt.Sprintf("%s is online on %s", clean(r.Username), clean(r.Node))
}

func formatPresence(p protocol.PresencePush) string {
	if p.Online {
		return "* " + clean(p.Username) + " is online"
	}
	return "* " + clean(p.Username) + " is offline"
}

// formatHistory is the header and the indented messages of /history of
// target ("lobby" or "@bob").
func formatHistory(me, target string, msgs []protocol.Message) []string {
	if len(msgs) == 0 {
		return []string{fmt.Sprintf("history %s: no messages", clean(target))}
	}
	lines := []string{fmt.Sprintf("history %s: %s", clean(target), plural(len(msgs), "message"))}
	for _, m := range msgs {
		lines = append(lines, "  "+formatMessage(me, m))
	}
	return lines
}

const helpText = `commands:
  /join <room>           join (or create) a room; it becomes the current room
  /leave [room]          leave a room (default: the current room)
  /rooms                 list the rooms
  /msg <user> <text>     send a direct message
  <text>                 send to the current room ("//x" sends "/x")
  /history [room|@user]  the last 20 messages of a room or a direct conversation
  /who <user>            whether a user is online, and on which node
  /top [n]               the most used words
  /help                  this list
  /quit                  exit (so does the end of the input)`
