package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// The terminal client (cmd/chat) as users run it: real processes driven
// through their standard input, checked by what they print.

const (
	termWait      = 20 * time.Second // an output line that needs a round trip or two
	termReconnect = 40 * time.Second // an output line that needs a reconnect
)

// term is one running chat process. Its methods are for the test
// goroutine.
type term struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{} // closed once the process was waited for

	mu     sync.Mutex
	lines  []string     // standard output so far, by line
	stderr bytes.Buffer // standard error so far
	err    error        // what Wait returned
}

// startTerm starts the chat client for user against the cluster's gateway
// with extra flags; the password comes from the environment.
func startTerm(t *testing.T, c *testenv.Cluster, user string, flags ...string) *term {
	t.Helper()
	args := append([]string{"--gateway", c.GatewayURL(), "--user", user}, flags...)
	tm := &term{t: t, name: user, exited: make(chan struct{})}
	tm.cmd = exec.Command(testenv.Build(t).Chat, args...)
	tm.cmd.Env = append(os.Environ(), "CHAT_PASSWORD="+password)
	tm.cmd.Stderr = lockedWriter{mu: &tm.mu, w: &tm.stderr}
	var err error
	if tm.stdin, err = tm.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := tm.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.cmd.Start(); err != nil {
		t.Fatalf("start chat for %s: %v", user, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			tm.mu.Lock()
			tm.lines = append(tm.lines, sc.Text())
			tm.mu.Unlock()
		}
		err := tm.cmd.Wait() // after the last read, as os/exec asks
		tm.mu.Lock()
		tm.err = err
		tm.mu.Unlock()
		close(tm.exited)
	}()
	t.Cleanup(tm.stop)
	return tm
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stop ends the input and waits for the process to exit, killing it if it
// does not; if the test failed (or CHAT_TEST_SHOW_TERM is set), it logs
// what the process printed.
func (tm *term) stop() {
	_ = tm.cmd.Process.Signal(syscall.SIGCONT) // in case a test paused it
	tm.stdin.Close()
	select {
	case <-tm.exited:
	case <-time.After(10 * time.Second):
		tm.t.Errorf("%s's chat did not exit within 10s of the end of its input; killed it", tm.name)
		_ = tm.cmd.Process.Kill()
		<-tm.exited
	}
	if tm.t.Failed() || os.Getenv("CHAT_TEST_SHOW_TERM") != "" {
		tm.t.Logf("---- output of %s's chat ----\n%s", tm.name, tm.transcript())
	}
}

func (tm *term) transcript() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return strings.Join(tm.lines, "\n") + "\n---- its standard error ----\n" + tm.stderr.String()
}

// send writes lines to the process's input.
func (tm *term) send(lines ...string) {
	tm.t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(tm.stdin, l+"\n"); err != nil {
			tm.t.Fatalf("writing to %s's chat: %v", tm.name, err)
		}
	}
}

// output returns the lines printed so far.
func (tm *term) output() []string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return slices.Clone(tm.lines)
}

// count is how many times line was printed.
func (tm *term) count(line string) int {
	n := 0
	for _, l := range tm.output() {
		if l == line {
			n++
		}
	}
	return n
}

// waitFor waits until cond holds for the output, failing early if the
// process exits.
func (tm *term) waitFor(timeout time.Duration, what string, cond func([]string) bool) {
	tm.t.Helper()
	testenv.WaitFor(tm.t, timeout, tm.name+"'s chat prints "+what, func() bool {
		if cond(tm.output()) {
			return true
		}
		select {
		case <-tm.exited:
			if !cond(tm.output()) {
				tm.t.Fatalf("%s's chat exited (%v) before printing %s", tm.name, tm.waitErr(), what)
			}
			return true
		default:
			return false
		}
	})
}

// waitLine waits until every one of lines was printed.
func (tm *term) waitLine(lines ...string) {
	tm.t.Helper()
	for _, line := range lines {
		tm.waitFor(termWait, fmt.Sprintf("%q", line), func(out []string) bool { return slices.Contains(out, line) })
	}
}

// waitMatch waits for a line matching re and returns it.
func (tm *term) waitMatch(timeout time.Duration, re *regexp.Regexp) string {
	tm.t.Helper()
	var got string
	tm.waitFor(timeout, "a line matching "+re.String(), func(out []string) bool {
		for _, l := range out {
			if re.MatchString(l) {
				got = l
				return true
			}
		}
		return false
	})
	return got
}

func (tm *term) waitErr() error {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.err
}

// waitExit closes the input and returns the exit status.
func (tm *term) waitExit() int {
	tm.t.Helper()
	tm.stdin.Close()
	select {
	case <-tm.exited:
	case <-time.After(termWait):
		tm.t.Fatalf("%s's chat did not exit within %s", tm.name, termWait)
	}
	return tm.cmd.ProcessState.ExitCode()
}

// onceEach fails unless every line was printed exactly once.
func (tm *term) onceEach(lines ...string) {
	tm.t.Helper()
	for _, l := range lines {
		if n := tm.count(l); n != 1 {
			tm.t.Errorf("%s's chat printed %q %d times, want once", tm.name, l, n)
		}
	}
}

// withPrefix returns the printed lines that start with prefix, in order.
// Member lines ("[lobby] bob joined") are left out: each session sees the
// joins after its own.
func withPrefix(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) && !memberLine.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// memberLine is the line of a room's member event.
var memberLine = regexp.MustCompile(`^\[[^\]]+\] [^ :]+ (joined|left)$`)

// after returns the lines printed after the first one equal to mark.
func after(lines []string, mark string) []string {
	if i := slices.Index(lines, mark); i >= 0 {
		return lines[i+1:]
	}
	return nil
}

// Two users on different nodes join a room, talk, exchange direct
// messages and look each other up; each prints every room message exactly
// once and both in the same (seq) order.
func TestTerminalChat(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	c.WaitNodes(t, "n1", "n2", "n3")
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "alice", "bob")
	n1, n2, n3 := c.Node(0).ID, c.Node(1).ID, c.Node(2).ID

	alice := startTerm(t, c, "alice", "--node", n1)
	bob := startTerm(t, c, "bob", "--node", n2)
	alice.waitLine("connected to " + n1 + " as alice")
	bob.waitLine("connected to " + n2 + " as bob")

	// A message before bob joins reaches him as a recent one. A join says
	// which of the other members are online.
	alice.send("/join lobby", "early bird")
	alice.waitLine("joined lobby: alice", "online in lobby: nobody else", "[lobby] alice: early bird")
	bob.send("/join lobby")
	bob.waitLine("joined lobby: alice, bob", "online in lobby: alice", "[lobby] alice: early bird")
	if got := after(bob.output(), "joined lobby: alice, bob"); len(got) < 2 || got[0] != "online in lobby: alice" {
		t.Errorf("bob's join printed %q; want the online line right after the joined one", got)
	}

	alice.send("hello from " + n1)
	bob.waitLine("[lobby] alice: hello from " + n1)
	bob.send("hello from " + n2)
	alice.waitLine("[lobby] bob: hello from " + n2)

	// Both talk at once.
	want := []string{"[lobby] alice: early bird", "[lobby] alice: hello from " + n1, "[lobby] bob: hello from " + n2}
	for i := 1; i <= 5; i++ {
		alice.send(fmt.Sprintf("zebra a%d", i))
		bob.send(fmt.Sprintf("zebra b%d", i))
		want = append(want, fmt.Sprintf("[lobby] alice: zebra a%d", i), fmt.Sprintf("[lobby] bob: zebra b%d", i))
	}
	alice.waitLine(want...)
	bob.waitLine(want...)
	alice.onceEach(want...)
	bob.onceEach(want...)
	ra, rb := withPrefix(alice.output(), "[lobby] "), withPrefix(bob.output(), "[lobby] ")
	if !slices.Equal(ra, rb) {
		t.Errorf("alice and bob saw the room in different orders:\nalice %q\nbob   %q", ra, rb)
	}
	for _, who := range []string{"alice", "bob"} {
		var mine []string
		for _, l := range ra {
			if strings.HasPrefix(l, "[lobby] "+who+": zebra") {
				mine = append(mine, l)
			}
		}
		if !slices.IsSorted(mine) || len(mine) != 5 {
			t.Errorf("%s's messages out of order or missing: %q", who, mine)
		}
	}

	// Direct messages: the sender prints them once stored, the recipient
	// when they arrive.
	alice.send("/msg bob psst, bob")
	alice.waitLine("[dm -> bob] psst, bob")
	bob.waitLine("[dm] alice: psst, bob")
	bob.send("/msg alice got it")
	bob.waitLine("[dm -> alice] got it")
	alice.waitLine("[dm] bob: got it")
	bob.send("/history @alice")
	bob.waitLine("history @alice: 2 messages", "  [dm] alice: psst, bob", "  [dm -> alice] got it")

	alice.send("/who bob", "/who nobody", "/rooms", "/top 3")
	alice.waitLine("bob is online on "+n2, "error: unknown user", "rooms: lobby (2, joined, current)")
	// The ranking lags the messages by up to a second (words are added
	// to Redis once a second): ask again until it has them.
	alice.waitMatch(termWait, regexp.MustCompile(`^top: `))
	asked := time.Now()
	testenv.WaitFor(t, 20*time.Second, "/top after ten zebras names zebra", func() bool {
		for _, l := range alice.output() {
			if strings.HasPrefix(l, "top: ") && strings.Contains(l, "zebra") {
				return true
			}
		}
		if time.Since(asked) > time.Second {
			alice.send("/top 3")
			asked = time.Now()
		}
		return false
	})

	// Presence: bob leaves and comes back on another node.
	bob.send("/quit")
	if code := bob.waitExit(); code != 0 {
		t.Errorf("bob's chat exited with %d after /quit, want 0", code)
	}
	alice.waitLine("* bob is offline")
	bob2 := startTerm(t, c, "bob", "--node", n3, "--room", "lobby")
	bob2.waitLine("connected to "+n3+" as bob", "joined lobby: alice, bob", "online in lobby: alice")
	alice.waitLine("* bob is online")
	// The new session shows the room's recent messages once, in order.
	bob2.waitLine(want...)
	if got := withPrefix(bob2.output(), "[lobby] "); !slices.Equal(got, ra) {
		t.Errorf("bob's second session shows the room as\n%q\nwant\n%q", got, ra)
	}

	// Leaving the only room leaves no current room, and says so; text
	// then goes nowhere, with a hint.
	alice.send("/leave", "anyone?", "/history lobby")
	alice.waitLine("left lobby", "no current room: /join <room> to pick one",
		"error: no current room: /join <room> to pick one, or /msg <user> <text>",
		`error: not a member of room "lobby"`)
	alice.onceEach("[dm -> bob] psst, bob", "[dm] bob: got it", "* bob is offline")
	bob.onceEach("[dm] alice: psst, bob", "[dm -> alice] got it")
	for _, tm := range []*term{alice, bob2} {
		if code := tm.waitExit(); code != 0 {
			t.Errorf("%s's chat exited with %d at the end of its input, want 0", tm.name, code)
		}
	}
}

// reconnectPair starts alice on the leader and bob on the other node of a
// two-node cluster, both in room ops, and returns bob's node index.
func reconnectPair(t *testing.T) (c *testenv.Cluster, alice, bob *term, bobNode int) {
	c = testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitNodes(t, "n1", "n2")
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	li := c.Index(leader)
	bobNode = 1 - li
	register(t, c, "alice", "bob")
	alice = startTerm(t, c, "alice", "--node", leader)
	alice.waitLine("connected to " + leader + " as alice")
	alice.send("/join ops")
	alice.waitLine("joined ops: alice")
	bob = startTerm(t, c, "bob", "--node", c.Node(bobNode).ID, "--room", "ops")
	bob.waitLine("connected to "+c.Node(bobNode).ID+" as bob", "joined ops: alice, bob")

	alice.send("/msg bob before", "first")
	bob.waitLine("[dm] alice: before", "[ops] alice: first")
	return c, alice, bob, bobNode
}

// A node that drains for shutdown sends its clients elsewhere: the client
// says so, reconnects to another node, and misses nothing.
func TestTerminalReconnectOnDrain(t *testing.T) {
	c, alice, bob, bi := reconnectPair(t)
	gone := c.Node(bi).ID
	c.Stop(bi)
	bob.waitLine("node " + gone + " is going away; reconnecting...")
	line := bob.waitMatch(termReconnect, regexp.MustCompile(`^reconnected to n\d+; \d+ missed messages?$`))
	if strings.HasPrefix(line, "reconnected to "+gone+";") {
		t.Errorf("bob reconnected to the node that went away: %q", line)
	}

	alice.send("/msg bob after", "second")
	bob.waitLine("[dm] alice: after", "[ops] alice: second")
	bob.onceEach("[dm] alice: before", "[ops] alice: first", "[dm] alice: after", "[ops] alice: second", line)
	if got := withPrefix(bob.output(), "[ops] "); !slices.Equal(got, []string{"[ops] alice: first", "[ops] alice: second"}) {
		t.Errorf("bob's room lines: %q", got)
	}
	if code := bob.waitExit(); code != 0 {
		t.Errorf("bob's chat exited with %d, want 0", code)
	}
}

// The node of a client dies while the client cannot react; messages sent
// to it meanwhile are stored, and when it notices, it reconnects elsewhere
// and prints exactly those messages, each once.
func TestTerminalCatchUpAfterNodeKill(t *testing.T) {
	c, alice, bob, bi := reconnectPair(t)
	gone := c.Node(bi).ID

	// Pausing bob's process makes sure that everything below is sent
	// while he is away, whatever the timing.
	if err := bob.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.Kill(bi)
	alice.send("/msg bob m1", "/msg bob m2", "while you were away", "/msg bob m3")
	alice.waitLine("[dm -> bob] m1", "[dm -> bob] m2", "[ops] alice: while you were away", "[dm -> bob] m3")
	if err := bob.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	bob.waitLine("connection to " + gone + " lost; reconnecting...")
	line := bob.waitMatch(termReconnect, regexp.MustCompile(`^reconnected to n\d+; \d+ missed messages?$`))
	if want := "reconnected to " + alice.nodeID(t) + "; 4 missed messages"; line != want {
		t.Errorf("bob printed %q, want %q", line, want)
	}
	missed := []string{"[dm] alice: m1", "[dm] alice: m2", "[ops] alice: while you were away", "[dm] alice: m3"}
	bob.waitLine(missed...)
	got := after(bob.output(), line)
	if len(got) < 4 || !sameSet(got[:4], missed) {
		t.Errorf("bob printed after %q:\n%q\nwant the missed messages %q first", line, got, missed)
	}
	if dms := withPrefix(got, "[dm] "); !slices.IsSorted(dms) {
		t.Errorf("bob's missed direct messages out of order: %q", dms)
	}

	alice.send("/msg bob back", "welcome back")
	bob.waitLine("[dm] alice: back", "[ops] alice: welcome back")
	bob.onceEach(append(missed, "[dm] alice: before", "[ops] alice: first", "[dm] alice: back", "[ops] alice: welcome back")...)
	if code := bob.waitExit(); code != 0 {
		t.Errorf("bob's chat exited with %d, want 0", code)
	}
}

// nodeID is the node the client said it connected to first.
func (tm *term) nodeID(t *testing.T) string {
	t.Helper()
	for _, l := range tm.output() {
		if rest, ok := strings.CutPrefix(l, "connected to "); ok {
			id, _, _ := strings.Cut(rest, " ")
			return id
		}
	}
	t.Fatalf("%s's chat printed no connected line", tm.name)
	return ""
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A script piped to the client runs in order, prints the same every time,
// and ends with status 0 at the end of the input. Control characters
// typed by mistake are not sent; leaving the current room moves to
// another one the user is in, or says there is none.
func TestTerminalScript(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 1, Env: fastEnv})
	c.WaitNodes(t, "n1")
	script := strings.Join([]string{
		"/join demo",
		"hello script",
		"/msg carol note to self",
		"/who carol",
		"/rooms",
		"/history demo",
		"/history @carol",
		"/nonsense",
		"",
		"/msg carol",
		"tab\there, bell\a, clear\x0c, arrow\x1b[A, alt\x1bx keys",
		"\x0c",
		"\x1b[A\x1b[B",
		"/join side",
		"/room",
		"/leave",
		"back in demo",
		"/rooms",
		"/leave demo",
		"orphan",
		"/room",
	}, "\n") + "\n"
	out, code := runScript(t, c, script, "carol", password, "--register")
	want := []string{
		"connected to n1 as carol",
		"joined demo: carol",
		"online in demo: nobody else",
		"[demo] carol: hello script",
		"[dm -> carol] note to self",
		"carol is online on n1",
		"rooms: demo (1, joined, current)",
		"history demo: 1 message",
		"  [demo] carol: hello script",
		"history @carol: 1 message",
		"  [dm -> carol] note to self",
		`error: unknown command "/nonsense" (/help lists the commands)`,
		"error: usage: /msg <user> <text>",
		"[demo] carol: tab here, bell, clear, arrow, alt keys",
		"joined side: carol",
		"online in side: nobody else",
		"current room: side",
		"left side",
		"current room: demo",
		"[demo] carol: back in demo",
		"rooms: demo (1, joined, current), side (0)",
		"left demo",
		"no current room: /join <room> to pick one",
		"error: no current room: /join <room> to pick one, or /msg <user> <text>",
		"no current room: /join <room> to pick one",
	}
	if code != 0 || !slices.Equal(out, want) {
		t.Errorf("script run: status %d, output\n%s\nwant status 0, output\n%s", code, strings.Join(out, "\n"), strings.Join(want, "\n"))
	}

	// Again, registering a taken name with the right password: the
	// recent messages of the room joined show once, then the new one.
	out, code = runScript(t, c, "/join demo\nsecond run\n/quit\nnot sent\n", "carol", password, "--register")
	want = []string{
		"connected to n1 as carol",
		"joined demo: carol",
		"online in demo: nobody else",
		"[demo] carol: hello script",
		"[demo] carol: tab here, bell, clear, arrow, alt keys",
		"[demo] carol: back in demo",
		"[demo] carol: second run",
	}
	if code != 0 || !slices.Equal(out, want) {
		t.Errorf("second run: status %d, output\n%s\nwant status 0, output\n%s", code, strings.Join(out, "\n"), strings.Join(want, "\n"))
	}

	// Another spelling of the name logs in as the user as registered,
	// and the client takes that name as its own.
	out, code = runScript(t, c, "/msg carol other spelling\n", "ＣＡＲＯＬ", password)
	if want := []string{"connected to n1 as carol", "[dm -> carol] other spelling"}; code != 0 || !slices.Equal(out, want) {
		t.Errorf("other spelling: status %d, output %q; want status 0, output %q", code, out, want)
	}

	// A wrong password ends it at once with status 1.
	out, code = runScript(t, c, "/rooms\n", "carol", "not the password")
	if want := []string{"error: logging in as carol: wrong username or password"}; code != 1 || !slices.Equal(out, want) {
		t.Errorf("wrong password: status %d, output %q; want status 1, output %q", code, out, want)
	}

	// A session kicked by a newer login of the same user says so and ends
	// with status 3 instead of reconnecting.
	first := startTerm(t, c, "carol")
	first.waitLine("connected to n1 as carol")
	if _, code := runScript(t, c, "/who carol\n", "carol", password); code != 0 {
		t.Errorf("second login: status %d", code)
	}
	first.waitLine("kicked: logged in elsewhere")
	if code := first.waitExit(); code != 3 {
		t.Errorf("kicked session ended with status %d, want 3", code)
	}
	if out := first.output(); slices.ContainsFunc(out, func(l string) bool { return strings.Contains(l, "reconnect") }) {
		t.Errorf("kicked session tried to reconnect: %q", out)
	}
}

// runScript runs the client with script as its whole input and returns
// its output lines and exit status.
func runScript(t *testing.T, c *testenv.Cluster, script, user, pw string, flags ...string) ([]string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--gateway", c.GatewayURL(), "--user", user}, flags...)
	cmd := exec.CommandContext(ctx, testenv.Build(t).Chat, args...)
	cmd.Env = append(os.Environ(), "CHAT_PASSWORD="+pw)
	cmd.Stdin = strings.NewReader(script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running chat: %v\n%s", err, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("chat did not finish its script within 60s; output:\n%s\n%s", stdout.String(), stderr.String())
	}
	if stderr.Len() > 0 {
		t.Logf("chat's standard error:\n%s", stderr.String())
	}
	return strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n"), cmd.ProcessState.ExitCode()
}

// chat seed-demo creates the demo users and rooms once; a second run
// changes nothing (a room a demo user left stays left), and the users can
// log in with the documented passwords.
func TestTerminalSeedDemo(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	seed := func() []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, testenv.Build(t).Chat, "seed-demo", "--gateway", c.GatewayURL(), "--wait", "60s")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chat seed-demo: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		return strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	}
	first := seed()
	for _, want := range []string{
		"seed-demo: alice: registered, member of lobby, golang",
		"seed-demo: dave: registered, member of lobby, random",
		"seed-demo: sam: registered",
		"seed-demo: done",
	} {
		if !slices.Contains(first, want) {
			t.Errorf("first seed-demo run printed\n%s\nwithout %q", strings.Join(first, "\n"), want)
		}
	}
	out, code := runScript(t, c, "/rooms\n/join lobby\n", "carol", "carol-demo")
	want := []string{"rooms: golang (2), lobby (4, joined), random (2, joined)", "joined lobby: alice, bob, carol, dave"}
	if code != 0 || len(out) < 3 || !slices.Equal(out[1:3], want) {
		t.Errorf("carol after seeding: status %d, output %q; want status 0 and %q after the connected line", code, out, want)
	}

	// carol leaves lobby; seeding again leaves her out of it.
	if out, code := runScript(t, c, "/leave lobby\n", "carol", "carol-demo"); code != 0 || !slices.Contains(out, "left lobby") {
		t.Fatalf("carol leaves lobby: status %d, output %q", code, out)
	}
	second := seed()
	for _, u := range []string{"alice", "bob", "carol", "dave", "sam"} {
		if want := "seed-demo: " + u + ": exists, left as it is"; !slices.Contains(second, want) {
			t.Errorf("second seed-demo run printed\n%s\nwithout %q", strings.Join(second, "\n"), want)
		}
	}
	out, code = runScript(t, c, "/rooms\n", "carol", "carol-demo")
	if want := "rooms: golang (2), lobby (3), random (2, joined)"; code != 0 || !slices.Contains(out, want) {
		t.Errorf("carol after seeding again: status %d, output %q; want %q", code, out, want)
	}
}

// Two terminals on two nodes: edits and recalls of one's last message, in
// a room and in a direct conversation, print on both sides; a read mark of
// the other side prints "seen by"; typing prints; and joins of others are
// lines of the room.
func TestTerminalEditRecallRead(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: fastEnv})
	c.WaitNodes(t, "n1", "n2")
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "alice", "bob", "carol")
	n1, n2 := c.Node(0).ID, c.Node(1).ID
	alice := startTerm(t, c, "alice", "--node", n1, "--device", "laptop")
	bob := startTerm(t, c, "bob", "--node", n2)
	alice.waitLine("connected to " + n1 + " as alice")
	bob.waitLine("connected to " + n2 + " as bob")

	alice.send("/join den")
	alice.waitLine("joined den: alice")
	bob.send("/join den")
	bob.waitLine("joined den: alice, bob")
	alice.waitLine("[den] bob joined")

	alice.send("helo den")
	bob.waitLine("[den] alice: helo den")
	alice.send("/edit hello den")
	for _, tm := range []*term{alice, bob} {
		tm.waitLine("[den] alice edited #3: hello den")
	}
	alice.send("/recall")
	for _, tm := range []*term{alice, bob} {
		tm.waitLine("[den] alice recalled #3")
	}
	alice.send("/edit again")
	alice.waitLine("error: message 3 of room:den was recalled: it can no longer be edited")

	alice.send("/msg bob are you there")
	alice.waitLine("[dm -> bob] are you there")
	bob.waitLine("[dm] alice: are you there")
	alice.send("/edit @bob are you there, bob?")
	alice.waitLine("[dm -> bob] you edited #1: are you there, bob?")
	bob.waitLine("[dm] alice edited #1: are you there, bob?")

	// bob marks it read; alice is told once.
	bob.send("/read @alice")
	bob.waitLine("marked your conversation with alice read up to #2")
	alice.waitLine("[dm -> bob] seen by bob")

	// Typing is best-effort: carol types to alice (through the protocol;
	// the terminal prints typing, it sends none) until alice prints it.
	carol := connect(t, c.Node(1).WSURL, "carol")
	testenv.WaitFor(t, 30*time.Second, "alice prints carol typing", func() bool {
		_ = carol.conn.Typing(ctxT(t, 5*time.Second), protocol.DMConv("alice", "carol"))
		return slices.Contains(alice.output(), "[dm] carol is typing…")
	})
	if n := alice.count("[dm] carol is typing…"); n != 1 {
		t.Errorf("alice printed carol's typing %d times within seconds, want once", n)
	}
	alice.send("/help")
	alice.waitLine("  /recall [room|@user]   take back your last message there (within 2 minutes)")
}
