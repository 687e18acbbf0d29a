package main

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
)

// The client in this process against a real cluster, so that the race
// detector sees its goroutines through a drain, a reconnect and a kick.
// (e2e/terminal_test.go drives the built binary.)

const sessionPassword = "session-test"

// session is one client running run in this process.
type session struct {
	t     *testing.T
	name  string
	in    *io.PipeWriter
	out   *lineBuffer
	errs  *lineBuffer
	done  chan struct{}
	code  int
	close sync.Once
}

func startSession(t *testing.T, gateway, user string, flags ...string) *session {
	t.Helper()
	inR, inW := io.Pipe()
	s := &session{t: t, name: user, in: inW, out: &lineBuffer{}, errs: &lineBuffer{}, done: make(chan struct{})}
	args := append([]string{"--gateway", gateway, "--user", user, "--password", sessionPassword, "--timeout", "10s"}, flags...)
	go func() {
		defer close(s.done)
		s.code = run(context.Background(), args, inR, s.out, s.errs)
		inR.Close() // ends the stdin reader if the session ended first
	}()
	t.Cleanup(func() {
		s.end()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			t.Errorf("%s's session did not end within 15s of the end of its input", user)
		}
		if t.Failed() {
			t.Logf("---- %s ----\n%s\n---- diagnostics ----\n%s", user, strings.Join(s.out.lines(), "\n"), strings.Join(s.errs.lines(), "\n"))
		}
	})
	return s
}

func (s *session) send(lines ...string) {
	s.t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(s.in, l+"\n"); err != nil {
			s.t.Fatalf("input of %s: %v", s.name, err)
		}
	}
}

func (s *session) end() { s.close.Do(func() { s.in.Close() }) }

func (s *session) waitLine(lines ...string) {
	s.t.Helper()
	for _, l := range lines {
		testenv.WaitFor(s.t, 30*time.Second, s.name+" prints "+l, func() bool { return slices.Contains(s.out.lines(), l) })
	}
}

func (s *session) waitExit() int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.t.Fatalf("%s's session did not end", s.name)
	}
	return s.code
}

func (s *session) count(line string) int {
	n := 0
	for _, l := range s.out.lines() {
		if l == line {
			n++
		}
	}
	return n
}

// lineBuffer collects what a printer writes (whole lines per write).
type lineBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lineBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSuffix(b.buf.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestSessionDrainAndKick(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: []string{"CHAT_RATE_LIMIT=100000"}})
	c.WaitNodes(t, "n1", "n2")
	leader := c.WaitLeader(t)
	other := c.Node(1 - c.Index(leader)).ID
	gw := &chatclient.Gateway{URL: c.GatewayURL()}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, u := range []string{"ann", "ben"} {
		if err := gw.Register(ctx, u, sessionPassword); err != nil {
			t.Fatal(err)
		}
	}

	ann := startSession(t, c.GatewayURL(), "ann", "--node", leader, "--room", "den")
	ann.waitLine("connected to "+leader+" as ann", "joined den: ann")
	ben := startSession(t, c.GatewayURL(), "ben", "--node", other, "--room", "den")
	ben.waitLine("connected to "+other+" as ben", "joined den: ann, ben")

	ann.send("/msg ben one", "two")
	ben.send("/msg ann three", "four")
	for _, s := range []*session{ann, ben} {
		s.waitLine("[den] ann: two", "[den] ben: four")
	}
	ben.waitLine("[dm] ann: one")
	ann.waitLine("[dm] ben: three")

	// ben's node drains: he moves to the leader's node.
	c.Stop(c.Index(other))
	ben.waitLine("node "+other+" is going away; reconnecting...", "reconnected to "+leader+"; 0 missed messages")
	ann.send("/msg ben five", "six")
	ben.waitLine("[dm] ann: five", "[den] ann: six")
	for _, l := range []string{"[dm] ann: one", "[den] ann: two", "[dm -> ann] three", "[den] ben: four", "[dm] ann: five", "[den] ann: six"} {
		if n := ben.count(l); n != 1 {
			t.Errorf("ben printed %q %d times", l, n)
		}
	}

	// A second login of ben kicks the first session, which ends with 3.
	ben2 := startSession(t, c.GatewayURL(), "ben")
	ben2.waitLine("connected to " + leader + " as ben")
	ben.waitLine("kicked: logged in elsewhere")
	if code := ben.waitExit(); code != exitKicked {
		t.Errorf("kicked session ended with %d, want %d", code, exitKicked)
	}
	ben2.send("/who ann", "/quit")
	ben2.waitLine("ann is online on " + leader)
	if code := ben2.waitExit(); code != exitOK {
		t.Errorf("/quit ended with %d", code)
	}
	ann.end()
	if code := ann.waitExit(); code != exitOK {
		t.Errorf("end of input ended with %d", code)
	}
}
