package main

import (
	"fmt"
	"io"
	"slices"
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
	w    io.Writer
	term *terminal // shared by the printers of one session; never nil
}

// terminal is what the printers of one session share: the lock that
// orders their writes, and the prompt. With a prompt (standard input and
// output are a terminal), the prompt is shown while the client waits for
// a line; output that comes meanwhile replaces the prompt's line, and the
// prompt is shown again under it.
type terminal struct {
	mu       sync.Mutex
	promptW  io.Writer // where the prompt goes (standard output)
	enabled  bool      // show a prompt at all; set before use
	prompt   string    // the prompt to show; guarded by mu
	atPrompt bool      // the prompt is the last thing written and no line was read since; guarded by mu
}

// clearLine moves to the start of the line and erases it.
const clearLine = "\r\x1b[K"

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
	t := p.term
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.atPrompt {
		_, _ = io.WriteString(t.promptW, clearLine)
	}
	_, _ = io.WriteString(p.w, b.String()) // nothing to do about a closed terminal
	if t.atPrompt {
		_, _ = io.WriteString(t.promptW, t.prompt)
	}
}

// awaitInput shows prompt, if prompts are enabled, as the client starts
// to wait for a line.
func (t *terminal) awaitInput(prompt string) {
	if !t.enabled {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.atPrompt && t.prompt == prompt {
		return
	}
	if t.atPrompt {
		_, _ = io.WriteString(t.promptW, clearLine)
	}
	t.prompt, t.atPrompt = prompt, true
	_, _ = io.WriteString(t.promptW, prompt)
}

// inputTaken records that a line was read: the user ended it with Enter,
// so the prompt is no longer on the current line.
func (t *terminal) inputTaken() {
	t.mu.Lock()
	t.atPrompt = false
	t.mu.Unlock()
}

// close erases a prompt left on the last line, before the client exits.
func (t *terminal) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.atPrompt {
		_, _ = io.WriteString(t.promptW, clearLine)
		t.atPrompt = false
	}
}

// promptFor is the prompt for the current room ("" none): "[lobby]> ".
func promptFor(room string) string {
	if room == "" {
		return "> "
	}
	return "[" + clean(room) + "]> "
}

// cleanInput removes from a typed line what keys pressed by mistake put
// there, so that it is never sent: escape sequences (arrow and function
// keys: ESC [ ... final, ESC O x; Alt+key: ESC x; the one-byte CSI) and
// every other C0 and C1 control character (Ctrl+L, Ctrl+G, DEL, ...). A
// tab becomes a space.
func cleanInput(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	rs := []rune(s)
	var b strings.Builder
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; {
		case r == '\t':
			b.WriteByte(' ')
		case r == 0x1b && i+1 < len(rs) && rs[i+1] == '[':
			i = skipCSI(rs, i+2)
		case r == 0x1b && i+2 < len(rs) && rs[i+1] == 'O':
			i += 2
		case r == 0x1b && i+1 < len(rs) && rs[i+1] >= 0x20 && rs[i+1] < 0x7f:
			i++
		case r == 0x9b:
			i = skipCSI(rs, i+1)
		case unicode.IsControl(r):
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// skipCSI returns the index of the last rune of the control sequence
// whose parameters start at rs[j]: parameter and intermediate bytes
// (0x20 to 0x3f), then a final byte (0x40 to 0x7e). An unfinished one
// ends at the last parameter byte.
func skipCSI(rs []rune, j int) int {
	for j < len(rs) && rs[j] >= 0x20 && rs[j] <= 0x3f {
		j++
	}
	if j < len(rs) && rs[j] >= 0x40 && rs[j] <= 0x7e {
		return j
	}
	return j - 1
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
// "[room] from: text", "[dm] from: text" or "[dm -> to] text", with
// " (edited)" after an edited one and "(message recalled)" for the text
// of a recalled one. An event has a line of its own: "[room] from edited
// #3: text", "[dm] from recalled #3", "[room] dave joined"; the user's own
// joins and leaves have none (the command said so), nor does a kind this
// client does not know.
func formatMessage(me string, m protocol.Message) string {
	var where, who string
	if room, ok := strings.CutPrefix(m.Conv, protocol.RoomPrefix); ok {
		if m.Room != "" {
			room = m.Room
		}
		where, who = "["+clean(room)+"]", clean(m.From)
	} else if m.From == me {
		where, who = "[dm -> "+clean(dmPeer(me, m))+"]", "you"
	} else {
		where, who = "[dm]", clean(m.From)
	}
	switch m.Kind {
	case "":
	case protocol.KindEdit:
		return fmt.Sprintf("%s %s edited #%d: %s", where, who, m.Ref, clean(m.Text))
	case protocol.KindRecall:
		return fmt.Sprintf("%s %s recalled #%d", where, who, m.Ref)
	case protocol.KindJoin, protocol.KindLeave:
		if m.From == me {
			return ""
		}
		verb := "joined"
		if m.Kind == protocol.KindLeave {
			verb = "left"
		}
		return fmt.Sprintf("%s %s %s", where, who, verb)
	default:
		return ""
	}
	text := clean(m.Text)
	switch {
	case m.Recalled:
		text = "(message recalled)"
	case m.Edited != 0:
		text += " (edited)"
	}
	if m.From == me && !strings.HasPrefix(m.Conv, protocol.RoomPrefix) {
		return fmt.Sprintf("%s %s", where, text)
	}
	return fmt.Sprintf("%s %s: %s", where, who, text)
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

// formatOnline is the line after "joined": which of the room's other
// members are online, of the asked first ones of others.
func formatOnline(room string, online []string, asked, others int) string {
	s := "online in " + clean(room) + ": "
	if len(online) == 0 {
		s += "nobody else"
	} else {
		names := make([]string, len(online))
		for i, u := range online {
			names[i] = clean(u)
		}
		s += strings.Join(names, ", ")
	}
	if asked < others {
		s += fmt.Sprintf(" (of the first %d of %d other members)", asked, others)
	}
	return s
}

// formatRooms is the /rooms line; the current room ("" none) is marked.
func formatRooms(rooms []protocol.RoomInfo, current string) string {
	if len(rooms) == 0 {
		return "rooms: none"
	}
	parts := make([]string, len(rooms))
	for i, r := range rooms {
		marks := []string{strconv.Itoa(r.Members)}
		if r.Joined {
			marks = append(marks, "joined")
		}
		if r.Name == current {
			marks = append(marks, "current")
		}
		parts[i] = fmt.Sprintf("%s (%s)", clean(r.Name), strings.Join(marks, ", "))
	}
	return "rooms: " + strings.Join(parts, ", ")
}

// formatCurrent is the line that says which room is the current one.
func formatCurrent(room string) string {
	if room == "" {
		return "no current room: /join <room> to pick one"
	}
	return "current room: " + clean(room)
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
	msgs = slices.DeleteFunc(slices.Clone(msgs), func(m protocol.Message) bool { return m.Kind != "" })
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
  /room                  which room is the current one
  /history [room|@user]  the last 20 messages of a room or a direct conversation
  /edit [#room|@user] <text>  replace the text of your last message there (default: the current room)
  /recall [room|@user]   take back your last message there (within 2 minutes)
  /read [room|@user]     tell the others you have read everything shown there
  /who <user>            whether a user is online, and on which node
  /top [n]               the most used words
  /help                  this list
  /quit                  exit (so does the end of the input)`

// formatTyping is the line of a typing push: "[room] bob is typing…" or
// "[dm] bob is typing…".
func formatTyping(me string, tp protocol.TypingPush) string {
	if room, ok := strings.CutPrefix(tp.Conv, protocol.RoomPrefix); ok {
		return fmt.Sprintf("[%s] %s is typing…", clean(room), clean(tp.From))
	}
	return fmt.Sprintf("[dm] %s is typing…", clean(tp.From))
}

// formatRoomDeleted is the line of a roomDeleted push.
func formatRoomDeleted(rd protocol.RoomDeletedPush) string {
	if rd.Reason != "" {
		return fmt.Sprintf("room %s was deleted: %s", clean(rd.Room), clean(rd.Reason))
	}
	return fmt.Sprintf("room %s was deleted", clean(rd.Room))
}
