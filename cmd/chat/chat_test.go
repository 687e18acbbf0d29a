package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/protocol"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line    string
		want    command
		wantErr string
	}{
		{line: "", want: command{kind: cmdNone}},
		{line: "   ", want: command{kind: cmdNone}},
		{line: "hello there ", want: command{kind: cmdSay, text: "hello there "}},
		{line: " /not a command", want: command{kind: cmdSay, text: " /not a command"}},
		{line: "//join is a word", want: command{kind: cmdSay, text: "/join is a word"}},
		{line: "/join lobby", want: command{kind: cmdJoin, arg: "lobby"}},
		{line: "/join\tlobby ", want: command{kind: cmdJoin, arg: "lobby"}},
		{line: "/join", wantErr: "usage: /join <room>"},
		{line: "/join a b", wantErr: "usage: /join <room>"},
		{line: "/leave", want: command{kind: cmdLeave}},
		{line: "/leave golang", want: command{kind: cmdLeave, arg: "golang"}},
		{line: "/rooms", want: command{kind: cmdRooms}},
		{line: "/rooms x", wantErr: "usage: /rooms"},
		{line: "/room", want: command{kind: cmdRoom}},
		{line: "/room lobby", wantErr: "usage: /room (/join <room> changes it)"},
		{line: "/msg bob hi  there", want: command{kind: cmdMsg, arg: "bob", text: "hi  there"}},
		{line: "/msg bob   spaced", want: command{kind: cmdMsg, arg: "bob", text: "spaced"}},
		{line: "/msg bob", wantErr: "usage: /msg <user> <text>"},
		{line: "/msg bob   ", wantErr: "usage: /msg <user> <text>"},
		{line: "/msg", wantErr: "usage: /msg <user> <text>"},
		{line: "/history", want: command{kind: cmdHistory}},
		{line: "/history @bob", want: command{kind: cmdHistory, arg: "@bob"}},
		{line: "/history lobby", want: command{kind: cmdHistory, arg: "lobby"}},
		{line: "/who bob", want: command{kind: cmdWho, arg: "bob"}},
		{line: "/edit hello  there", want: command{kind: cmdEdit, text: "hello  there"}},
		{line: "/edit @bob hi", want: command{kind: cmdEdit, arg: "@bob", text: "hi"}},
		{line: "/edit #lobby hi all", want: command{kind: cmdEdit, arg: "lobby", text: "hi all"}},
		{line: "/edit @bob", wantErr: "usage: /edit [#room|@user] <new text>"},
		{line: "/edit", wantErr: "usage: /edit [#room|@user] <new text>"},
		{line: "/recall", want: command{kind: cmdRecall}},
		{line: "/recall @bob", want: command{kind: cmdRecall, arg: "@bob"}},
		{line: "/recall a b", wantErr: "usage: /recall [room|@user]"},
		{line: "/read #lobby", want: command{kind: cmdRead, arg: "lobby"}},
		{line: "/who", wantErr: "usage: /who <user>"},
		{line: "/top", want: command{kind: cmdTop}},
		{line: "/top 5", want: command{kind: cmdTop, n: 5}},
		{line: "/top 0", wantErr: "/top: n must be 1 to 100"},
		{line: "/top many", wantErr: "/top: n must be 1 to 100"},
		{line: "/help", want: command{kind: cmdHelp}},
		{line: "/quit", want: command{kind: cmdQuit}},
		{line: "/frobnicate now", wantErr: `unknown command "/frobnicate" (/help lists the commands)`},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := parseCommand(tt.line)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parseCommand(%q) = %+v, %v; want error %q", tt.line, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseCommand(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	room := protocol.Message{Conv: "room:lobby", Seq: 3, From: "bob", Room: "lobby", Text: "hello"}
	in := protocol.Message{Conv: "dm:alice:bob", Seq: 1, From: "bob", To: "alice", Text: "hi"}
	out := protocol.Message{Conv: "dm:alice:bob", Seq: 2, From: "alice", To: "bob", Text: "hi"}
	self := protocol.Message{Conv: "dm:alice:alice", Seq: 1, From: "alice", Text: "note"}
	noTo := protocol.Message{Conv: "dm:alice:bob", Seq: 2, From: "alice", Text: "x"}
	tests := []struct{ got, want string }{
		{formatMessage("alice", room), "[lobby] bob: hello"},
		{formatMessage("bob", room), "[lobby] bob: hello"},
		{formatMessage("alice", in), "[dm] bob: hi"},
		{formatMessage("alice", out), "[dm -> bob] hi"},
		{formatMessage("alice", self), "[dm -> alice] note"},
		{formatMessage("alice", noTo), "[dm -> bob] x"},
		{formatMessage("alice", protocol.Message{Conv: "room:x", From: "eve", Text: "two\nlines\x1b[2J\u202e"}), `[x] eve: two\nlines\x1b[2J\u202e`},
		{formatJoined(protocol.RoomReply{Room: "lobby", Members: []string{"alice", "bob"}}), "joined lobby: alice, bob"},
		{formatRooms(nil, ""), "rooms: none"},
		{formatRooms([]protocol.RoomInfo{{Name: "golang", Members: 2}, {Name: "lobby", Members: 4, Joined: true}}, ""), "rooms: golang (2), lobby (4, joined)"},
		{formatRooms([]protocol.RoomInfo{{Name: "golang", Members: 2, Joined: true}, {Name: "lobby", Members: 4, Joined: true}}, "lobby"), "rooms: golang (2, joined), lobby (4, joined, current)"},
		{formatCurrent("lobby"), "current room: lobby"},
		{formatCurrent(""), "no current room: /join <room> to pick one"},
		{formatOnline("lobby", []string{"bob", "carol"}, 3, 3), "online in lobby: bob, carol"},
		{formatOnline("lobby", nil, 2, 2), "online in lobby: nobody else"},
		{formatOnline("solo", nil, 0, 0), "online in solo: nobody else"},
		{formatOnline("big", []string{"a1"}, 50, 120), "online in big: a1 (of the first 50 of 120 other members)"},
		{promptFor("lobby"), "[lobby]> "},
		{promptFor(""), "> "},
		{formatTop(nil), "top: none"},
		{formatTop([]protocol.WordCount{{Word: "hello", Count: 3}, {Word: "world", Count: 2}}), "top: hello 3, world 2"},
		{formatWho(protocol.UserInfoReply{Username: "bob", Online: true, Node: "n2"}), "bob is online on n2"},
		{formatWho(protocol.UserInfoReply{Username: "bob"}), "bob is offline"},
		{formatPresence(protocol.PresencePush{Username: "bob", Online: true}), "* bob is online"},
		{formatPresence(protocol.PresencePush{Username: "bob"}), "* bob is offline"},
		{strings.Join(formatHistory("alice", "@bob", []protocol.Message{in, out}), "|"), "history @bob: 2 messages|  [dm] bob: hi|  [dm -> bob] hi"},
		{strings.Join(formatHistory("alice", "lobby", []protocol.Message{room}), "|"), "history lobby: 1 message|  [lobby] bob: hello"},
		{strings.Join(formatHistory("alice", "lobby", nil), "|"), "history lobby: no messages"},
		{clean("tab\there é 中文 👍🏽"), `tab\there é 中文 👍🏽`},
		{dmConv("bob", "alice"), "dm:alice:bob"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// A control character typed by mistake is never sent: escape sequences
// and control characters are dropped, a tab becomes a space.
func TestCleanInput(t *testing.T) {
	tests := []struct{ in, want string }{
		{"hello", "hello"},
		{"", ""},
		{"hello\x0c", "hello"}, // Ctrl+L
		{"\x0c", ""},           // only Ctrl+L: nothing to send
		{"a\tb", "a b"},        // tab
		{"bell\a and\x00 nul\x7f del", "bell and nul del"}, // BEL, NUL, DEL
		{"up\x1b[A down\x1b[B", "up down"},                 // arrow keys
		{"f5\x1b[15~ home\x1bOH end\x1b[1;5F", "f5 home end"},
		{"alt\x1bx key", "alt key"},          // Alt+x
		{"c1\u0085 \u009b2Jcsi", "c1 csi"},   // C1 controls, the one-byte CSI
		{"trailing esc\x1b", "trailing esc"}, // an unfinished sequence
		{"cut\x1b[12", "cut"},                // an unfinished CSI
		{"é 中文 👍🏽 \u200d", "é 中文 👍🏽 \u200d"}, // text is left alone
		{"/join lob\x0cby", "/join lobby"},
	}
	for _, tt := range tests {
		if got := cleanInput(tt.in); got != tt.want {
			t.Errorf("cleanInput(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if cmd, err := parseCommand(cleanInput("\x0c")); err != nil || cmd.kind != cmdNone {
		t.Errorf("a line of control characters parses as %+v, %v; want nothing to do", cmd, err)
	}
}

// After a leave of the current room, the next one is the room joined
// last that the user is still in, else the first by name.
func TestPickRoom(t *testing.T) {
	tests := []struct {
		member, joined []string
		want           string
	}{
		{nil, nil, ""},
		{nil, []string{"a"}, ""},
		{[]string{"zoo", "golang", "lobby"}, nil, "golang"},
		{[]string{"golang", "lobby"}, []string{"lobby", "golang"}, "golang"},
		{[]string{"golang", "lobby"}, []string{"golang", "lobby"}, "lobby"},
		{[]string{"golang", "lobby"}, []string{"lobby", "gone"}, "lobby"},
	}
	for _, tt := range tests {
		if got := pickRoom(tt.member, tt.joined); got != tt.want {
			t.Errorf("pickRoom(%q, %q) = %q, want %q", tt.member, tt.joined, got, tt.want)
		}
	}
}

// The prompt is shown while the client waits for a line; output that
// comes meanwhile (on either printer) replaces the prompt's line and the
// prompt follows it. Without a terminal there is no prompt at all.
func TestPrompt(t *testing.T) {
	var out, diag strings.Builder
	term := &terminal{promptW: &out, enabled: true}
	o, d := &printer{w: &out, term: term}, &printer{w: &diag, term: term}

	o.line("connected to n1 as alice") // a command's output: no prompt yet
	term.awaitInput(promptFor("lobby"))
	term.awaitInput(promptFor("lobby")) // shown already
	o.line("[lobby] bob: hi")           // a push while waiting
	d.line("chat: a diagnostic")
	term.inputTaken() // Enter
	o.line("[lobby] alice: hello")
	term.awaitInput(promptFor("golang"))
	term.close()
	want := "connected to n1 as alice\n" +
		"[lobby]> " + clearLine + "[lobby] bob: hi\n[lobby]> " +
		clearLine + "[lobby]> " + // around the diagnostic, which went to its own writer
		"[lobby] alice: hello\n" +
		"[golang]> " + clearLine
	if out.String() != want {
		t.Errorf("terminal output\n%q\nwant\n%q", out.String(), want)
	}
	if diag.String() != "chat: a diagnostic\n" {
		t.Errorf("diagnostics %q", diag.String())
	}

	var plain strings.Builder
	term = &terminal{promptW: &plain}
	p := &printer{w: &plain, term: term}
	term.awaitInput(promptFor("lobby"))
	p.line("[lobby] bob: hi")
	term.close()
	if plain.String() != "[lobby] bob: hi\n" {
		t.Errorf("output without a terminal %q", plain.String())
	}
}

func TestOffsets(t *testing.T) {
	o := newOffsets()
	msg := func(conv string, seq int64) protocol.Message { return protocol.Message{Conv: conv, Seq: seq} }
	if !o.accept(msg("dm:a:b", 5)) {
		t.Fatal("a message of an unknown conversation is new")
	}
	if o.accept(msg("dm:a:b", 5)) || o.accept(msg("dm:a:b", 4)) {
		t.Fatal("a message at or below the offset was accepted")
	}
	if !o.accept(msg("dm:a:b", 6)) {
		t.Fatal("the next message was refused")
	}

	// A baseline is held but not printed: the recent messages of a join
	// still show once.
	o.set("room:r", 10)
	if o.accept(msg("room:r", 10)) {
		t.Fatal("a message at the baseline was accepted")
	}
	if !o.acceptRecent(msg("room:r", 9)) || !o.acceptRecent(msg("room:r", 10)) || !o.acceptRecent(msg("room:r", 11)) {
		t.Fatal("recent messages not printed before were refused")
	}
	if o.acceptRecent(msg("room:r", 10)) || o.accept(msg("room:r", 11)) {
		t.Fatal("a printed message was accepted again")
	}
	if got, _ := o.get("room:r"); got != 11 {
		t.Fatalf("offset after recent messages = %d, want 11", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan bool)
	go func() { done <- o.wait(ctx, "room:r", 13) }()
	o.accept(msg("room:r", 12))
	o.accept(msg("room:r", 13))
	if !<-done {
		t.Fatal("wait did not see the offset reach 13")
	}
	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if o.wait(short, "room:r", 14) {
		t.Fatal("wait reported an offset that was not reached")
	}

	o.forget("room:r")
	if _, ok := o.get("room:r"); ok {
		t.Fatal("a forgotten conversation is still known")
	}
	if snap := o.snapshot(); len(snap) != 1 || snap["dm:a:b"] != 6 {
		t.Fatalf("snapshot = %v", snap)
	}
}

func TestNodeOrder(t *testing.T) {
	nodes := []chatclient.NodeInfo{{ID: "n2"}, {ID: "n3"}, {ID: "n1"}}
	ids := func(ns []chatclient.NodeInfo) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.ID)
		}
		return out
	}
	tests := []struct {
		prefer, avoid string
		want          []string
	}{
		{"", "", []string{"n2", "n3", "n1"}},
		{"n1", "", []string{"n1", "n2", "n3"}},
		{"n9", "", []string{"n2", "n3", "n1"}},
		{"", "n2", []string{"n3", "n1"}},
		{"n2", "n2", []string{"n3", "n1"}},
	}
	for _, tt := range tests {
		if got := ids(nodeOrder(nodes, tt.prefer, tt.avoid)); !slices.Equal(got, tt.want) {
			t.Errorf("nodeOrder(prefer %q, avoid %q) = %v, want %v", tt.prefer, tt.avoid, got, tt.want)
		}
	}
	if got := ids(nodeOrder([]chatclient.NodeInfo{{ID: "n2"}}, "", "n2")); !slices.Equal(got, []string{"n2"}) {
		t.Errorf("the node to avoid is not tried when it is the only one: %v", got)
	}
}

func TestMergeByTime(t *testing.T) {
	m := func(conv string, seq, ts int64) protocol.Message {
		return protocol.Message{Conv: conv, Seq: seq, TS: ts}
	}
	got := mergeByTime([]protocol.Message{
		m("room:r", 2, 30), m("dm:a:b", 1, 10), m("room:r", 1, 20), m("dm:a:b", 2, 40),
		m("dm:a:c", 1, 5), m("dm:a:c", 2, 1), // a clock step back: seq order wins within a conversation
	})
	var order []string
	for _, x := range got {
		order = append(order, x.Conv+"#"+string(rune('0'+x.Seq)))
	}
	want := []string{"dm:a:c#1", "dm:a:c#2", "dm:a:b#1", "room:r#1", "room:r#2", "dm:a:b#2"}
	if !slices.Equal(order, want) {
		t.Fatalf("mergeByTime order %v, want %v", order, want)
	}
}

func TestParseFlags(t *testing.T) {
	for _, v := range []string{"CHAT_GATEWAY_URL", "CHAT_USER", "CHAT_PASSWORD", "CHAT_REGISTER", "CHAT_ROOM", "CHAT_CLIENT_NODE", "CHAT_TIMEOUT"} {
		t.Setenv(v, "") // restored after the test
		os.Unsetenv(v)
	}
	t.Setenv("CHAT_PASSWORD", "from-env")
	t.Setenv("CHAT_REGISTER", "1")
	cfg, err := parseFlags([]string{"--user", "alice", "--room", "lobby", "--node", "n2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Password != "from-env" || !cfg.Register || cfg.User != "alice" || cfg.Room != "lobby" || cfg.Node != "n2" {
		t.Fatalf("config %+v", cfg)
	}
	if cfg, err := parseFlags([]string{"--user", "alice", "--password", "flag-pw", "--register=false"}, io.Discard); err != nil || cfg.Password != "flag-pw" || cfg.Register {
		t.Fatalf("flags over env: %+v, %v", cfg, err)
	}

	var usage strings.Builder
	if _, err := parseFlags([]string{"-h"}, &usage); err == nil {
		t.Fatal("-h gave no error")
	}
	if strings.Contains(usage.String(), "from-env") {
		t.Fatalf("the usage text shows the password:\n%s", usage.String())
	}

	os.Unsetenv("CHAT_PASSWORD")
	bad := [][]string{
		{}, // no user
		{"--user", "a b", "--password", "x"},
		{"--user", "alice"}, // no password
		{"--user", "alice", "--password", "x", "--room", "no:colons"},
		{"--user", "alice", "--password", "x", "--gateway", "127.0.0.1:8080"},
		{"--user", "alice", "--password", "x", "extra"},
	}
	for _, args := range bad {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	t.Setenv("CHAT_REGISTER", "maybe")
	if _, err := parseFlags([]string{"--user", "alice", "--password", "x"}, io.Discard); err == nil {
		t.Error("CHAT_REGISTER=maybe accepted")
	}
}

func TestUserError(t *testing.T) {
	err := permanentError{fmt.Errorf("logging in as carol: %w", &chatclient.HTTPError{Status: 401, Msg: "wrong username or password"})}
	if got := userError(err); got != "logging in as carol: wrong username or password" {
		t.Errorf("userError = %q", got)
	}
	if !isPermanent(err) {
		t.Error("not permanent")
	}
	if got := userError(&chatclient.ReplyError{Code: 403, Msg: `not a member of room "x"`}); got != `not a member of room "x"` {
		t.Errorf("userError = %q", got)
	}
}

// Events have lines of their own; messages show their final state; the
// user's own joins and leaves have none.
func TestFormatEvents(t *testing.T) {
	for _, tc := range []struct {
		m    protocol.Message
		want string
	}{
		{protocol.Message{Conv: "room:lobby", Room: "lobby", From: "bob", Kind: protocol.KindEdit, Ref: 3, Text: "fixed"}, "[lobby] bob edited #3: fixed"},
		{protocol.Message{Conv: "dm:alice:bob", From: "bob", To: "alice", Kind: protocol.KindRecall, Ref: 4}, "[dm] bob recalled #4"},
		{protocol.Message{Conv: "dm:alice:bob", From: "alice", To: "bob", Kind: protocol.KindEdit, Ref: 2, Text: "x"}, "[dm -> bob] you edited #2: x"},
		{protocol.Message{Conv: "room:lobby", Room: "lobby", From: "dave", Kind: protocol.KindJoin}, "[lobby] dave joined"},
		{protocol.Message{Conv: "room:lobby", Room: "lobby", From: "dave", Kind: protocol.KindLeave}, "[lobby] dave left"},
		{protocol.Message{Conv: "room:lobby", Room: "lobby", From: "alice", Kind: protocol.KindJoin}, ""},
		{protocol.Message{Conv: "room:lobby", Room: "lobby", From: "bob", Text: "hi", Edited: 5}, "[lobby] bob: hi (edited)"},
		{protocol.Message{Conv: "dm:alice:bob", From: "bob", To: "alice", Recalled: true}, "[dm] bob: (message recalled)"},
		{protocol.Message{Conv: "room:lobby", From: "bob", Kind: "future"}, ""},
	} {
		if got := formatMessage("alice", tc.m); got != tc.want {
			t.Errorf("formatMessage(%+v) = %q, want %q", tc.m, got, tc.want)
		}
	}
	var s signals
	now := time.Now()
	if !s.typing("dm:a:b", "b", now) || s.typing("dm:a:b", "b", now.Add(time.Second)) || !s.typing("dm:a:b", "b", now.Add(typingEvery)) {
		t.Error("typing is printed once per typingEvery per user and conversation")
	}
	if !s.seen("dm:a:b", 3) || s.seen("dm:a:b", 3) || !s.seen("dm:a:b", 4) {
		t.Error("a reading is printed once per own message")
	}
}
