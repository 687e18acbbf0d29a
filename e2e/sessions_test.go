package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// kickReason is the reason of a kicked push and of the close that follows.
const kickReason = "logged in elsewhere"

// Many logins of the same users at the same moment, spread over three
// nodes, in several rounds.
//
// How the server decides (node/server.go login): each login takes a
// version from Redis, registers the connection on its node, kicking the
// user's connection there, and stores the global session unless a newer
// version is stored already. A login that finds a newer one kicks its own
// connection and answers 409, a reply the kick drops; a login that replaces
// the session of a connection on another live node has that node kick it
// through the leader. Whatever order the logins reach the nodes and Redis
// in, when the dust settles:
//   - each user has exactly one open connection; it logged in successfully,
//     got no kicked push, answers ping and receives the user's messages;
//   - the Redis session (<namespace>:session:<user>) names that connection
//     and its node, and userInfo, asked on any node, says the user is
//     online on that node;
//   - every other connection got exactly one kicked push and was then
//     closed by the server with code 1000 and the same reason; its login
//     call either succeeded (it was replaced afterwards), or failed with
//     409, or saw the connection close before the reply.
//
// The open connection of a round is one of the losers of the next one,
// whose logins are all newer.
func TestSessionDuplicateLoginRace(t *testing.T) {
	const (
		users   = 4
		perUser = 10
		rounds  = 3
	)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	rdb := sessRedis(t)

	var names []string
	for i := range users {
		names = append(names, fmt.Sprintf("racer%d", i))
	}
	register(t, c, names...)
	register(t, c, "watch0", "watch1", "watch2")
	// One watcher per node: each asks userInfo there and the first sends
	// messages.
	var watchers []*user
	for i := range 3 {
		watchers = append(watchers, connect(t, c.Node(i).WSURL, fmt.Sprintf("watch%d", i)))
	}
	// Token logins are cheap, so the racing logins are not spread out by
	// password hashing.
	tokens := map[string]string{}
	for _, name := range names {
		tok, _, err := gw(c).Login(ctxT(t, 10*time.Second), name, password)
		if err != nil {
			t.Fatalf("gateway login %s: %v", name, err)
		}
		tokens[name] = tok
	}

	conns := map[string][]*racer{} // every connection of each user, all rounds
	for round := range rounds {
		var racers []*racer
		for u, name := range names {
			for j := range perUser {
				r := dialRacer(t, c, name, (u+j)%3)
				racers = append(racers, r)
				conns[name] = append(conns[name], r)
			}
		}
		loginAtOnce(t, racers, tokens)

		sessWait(t, 20*time.Second, fmt.Sprintf("round %d: one live session per user", round), func() string {
			for _, name := range names {
				if s := raceOutcome(t, c, rdb, watchers, name, conns[name]); s != "" {
					return s
				}
			}
			return ""
		})

		kicksBefore := 0
		for _, name := range names {
			survivor := openRacers(conns[name])[0]
			if err := survivor.conn.Do(ctxT(t, 5*time.Second), protocol.ActionPing, protocol.Empty{}, nil); err != nil {
				t.Fatalf("round %d: %s's open connection on %s does not answer ping: %v", round, name, c.Node(survivor.node).ID, err)
			}
			for _, r := range conns[name] {
				kicksBefore += len(kicksOf(r.user))
				if r == survivor {
					if k := kicksOf(r.user); len(k) != 0 {
						t.Fatalf("round %d: %s's open connection got kicked pushes %v", round, name, k)
					}
					continue
				}
				checkLoser(t, c, r)
			}
			// The user's messages reach the open connection, live.
			before := len(survivor.received())
			msg := fmt.Sprintf("round %d to %s", round, name)
			if _, err := watchers[0].conn.Chat(ctxT(t, 5*time.Second), name, msg, ""); err != nil {
				t.Fatalf("chat to %s: %v", name, err)
			}
			testenv.WaitFor(t, 10*time.Second, msg+" reaches the open connection", func() bool {
				got := survivor.received()
				return len(got) > before && got[len(got)-1].Text == msg
			})
		}
		// Nothing kicks anything any more: the open connections stay, and
		// no connection got another kicked push.
		kicksAfter := 0
		for _, name := range names {
			if open := openRacers(conns[name]); len(open) != 1 {
				t.Fatalf("round %d: %s has %d open connections after the race settled", round, name, len(open))
			}
			for _, r := range conns[name] {
				kicksAfter += len(kicksOf(r.user))
			}
		}
		if kicksAfter != kicksBefore {
			t.Fatalf("round %d: %d kicked pushes after the race settled, %d before", round, kicksAfter, kicksBefore)
		}
	}
}

// A disconnect of an old connection that arrives after a newer login of
// the same user, on another node, leaves the newer session alone: Redis
// still names it, userInfo says the user is online there, and messages
// reach it live. First the plain case: the old connection is closed by the
// kick the new login causes. Then a really late one: the old connection's
// node is paused while the new login happens and the client closes the old
// connection, so the node only handles the close after it resumes.
func TestSessionLateDisconnectKeepsNewerSession(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	leader := c.Index(c.WaitLeader(t))
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	rdb := sessRedis(t)
	register(t, c, "lena", "otto")
	// a and b are not the leader, so a can be paused without an election;
	// otto asks and writes from the leader's node, the third one.
	var others []int
	for i := range 3 {
		if i != leader {
			others = append(others, i)
		}
	}
	a, b := others[0], others[1]
	otto := connect(t, c.Node(leader).WSURL, "otto")

	// newerSessionHolds checks that r holds lena's session after the late
	// disconnect, which its node logs before it asks Redis to delete the
	// session; the checks take several round trips after that, and the
	// Redis one is done again at the end.
	newerSessionHolds := func(step string, r *racer) {
		t.Helper()
		id := c.Node(r.node).ID
		check := func() {
			t.Helper()
			if h := sessionHash(t, rdb, c, "lena"); h["conn"] != r.sid || h["node"] != id {
				t.Fatalf("%s: Redis session of lena is %v, want conn %s on %s", step, h, r.sid, id)
			}
		}
		check()
		if info := infoFrom(t, otto, "lena"); !info.Online || info.Node != id || len(info.Devices) != 1 || info.Devices[0].Node != id || info.Devices[0].LoginTime != info.LoginTime {
			t.Fatalf("%s: userInfo lena = %+v, want online on %s, one device", step, info, id)
		}
		msg := "after " + step
		if _, err := otto.conn.Chat(ctxT(t, 5*time.Second), "lena", msg, ""); err != nil {
			t.Fatalf("%s: chat to lena: %v", step, err)
		}
		testenv.WaitFor(t, 10*time.Second, step+": message reaches the newer connection live", func() bool {
			got := r.received()
			return len(got) > 0 && got[len(got)-1].Text == msg
		})
		if connEnded(r.user) || len(kicksOf(r.user)) != 0 {
			t.Fatalf("%s: the newer connection was closed (%v) or kicked (%v)", step, r.conn.Err(), kicksOf(r.user))
		}
		check()
	}

	// The kick closes the old connection.
	first := loginRacer(t, dialRacer(t, c, "lena", a))
	second := loginRacer(t, dialRacer(t, c, "lena", b))
	testenv.WaitFor(t, 10*time.Second, "the first connection is closed", func() bool { return connEnded(first.user) })
	checkLoser(t, c, first)
	testenv.WaitFor(t, 10*time.Second, "the first connection's node logs it out", func() bool { return loggedOutIn(t, c, a, first.sid) })
	newerSessionHolds("the kicked connection's disconnect", second)

	// The same the other way round, so that lena's session is on a.
	third := loginRacer(t, dialRacer(t, c, "lena", a))
	testenv.WaitFor(t, 10*time.Second, "the second connection is closed", func() bool { return connEnded(second.user) })
	checkLoser(t, c, second)
	testenv.WaitFor(t, 10*time.Second, "the second connection's node logs it out", func() bool { return loggedOutIn(t, c, b, second.sid) })
	newerSessionHolds("the second kicked connection's disconnect", third)

	// Node a sleeps through the new login on b and through the client
	// closing the old connection; it handles both when it wakes up. The
	// pause is much shorter than the ZooKeeper session, so a stays live.
	c.Pause(a)
	fourth := loginRacer(t, dialRacer(t, c, "lena", b))
	third.conn.Close()
	c.Resume(a)
	testenv.WaitFor(t, 10*time.Second, "the paused node logs the old connection out", func() bool { return loggedOutIn(t, c, a, third.sid) })
	newerSessionHolds("a disconnect handled after the newer login", fourth)
}

// A session whose node died counts as offline once ZooKeeper drops the
// node, whether or not its Redis record is still there: after kill -9 the
// node cannot remove it; the leader removes it when it learns the node is
// gone, but nobody does when the dead node was the leader. A message to the
// user is still accepted, and reaches them by sync when they log in on
// another node.
func TestSessionOnDeadNodeCountsOffline(t *testing.T) {
	t.Run("node", func(t *testing.T) { sessionOnDeadNode(t, false) })
	t.Run("leader", func(t *testing.T) { sessionOnDeadNode(t, true) })
}

func sessionOnDeadNode(t *testing.T, killLeader bool) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	leader := c.Index(c.WaitLeader(t))
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	rdb := sessRedis(t)
	register(t, c, "mira", "nils")
	// mira logs in on the node that dies, nils asks and writes from
	// another, and mira comes back on the third.
	dead := (leader + 1) % 3
	if killLeader {
		dead = leader
	}
	ask, back := (dead+1)%3, (dead+2)%3
	deadID, backID := c.Node(dead).ID, c.Node(back).ID
	nils := connect(t, c.Node(ask).WSURL, "nils")
	mira := loginRacer(t, dialRacer(t, c, "mira", dead))
	if info := infoFrom(t, nils, "mira"); !info.Online || info.Node != deadID {
		t.Fatalf("userInfo mira = %+v, want online on %s", info, deadID)
	}
	key := c.Namespace() + ":session:mira"
	left := sessionHash(t, rdb, c, "mira")
	if left["conn"] != mira.sid || left["node"] != deadID {
		t.Fatalf("Redis session of mira is %v, want conn %s on %s", left, mira.sid, deadID)
	}

	c.Kill(dead)
	c.WaitNodes(t, c.Node(ask).ID, backID)
	offline := func(what string) {
		t.Helper()
		testenv.WaitFor(t, 20*time.Second, what, func() bool {
			info := infoFrom(t, nils, "mira")
			if info.Online {
				return false
			}
			if info.Node != "" || info.LoginTime != 0 {
				t.Fatalf("userInfo of an offline user = %+v, want no node and no login time", info)
			}
			return true
		})
	}
	offline("userInfo says mira is offline once her node is gone")
	h := sessionHash(t, rdb, c, "mira")
	if len(h) != 0 && (h["conn"] != mira.sid || h["node"] != deadID) {
		t.Fatalf("Redis session of mira is %v, want the dead node's record or none", h)
	}
	if len(h) != 0 {
		t.Logf("the dead node's record is still in Redis: %v", h)
	} else {
		// The leader removed it. Put it back: a record that names a node
		// ZooKeeper no longer lists must count as offline by itself.
		t.Logf("the leader removed the dead node's record; putting it back")
		if err := rdb.HSet(ctxT(t, 5*time.Second), key, left).Err(); err != nil {
			t.Fatal(err)
		}
	}
	offline("userInfo says mira is offline while her dead node's record is in Redis")

	c.WaitLeader(t)
	sent, err := nils.conn.Chat(ctxT(t, 5*time.Second), "mira", "while you were away", "")
	if err != nil {
		t.Fatalf("chat to a user whose node died: %v", err)
	}
	again := loginRacer(t, dialRacer(t, c, "mira", back))
	if info := infoFrom(t, nils, "mira"); !info.Online || info.Node != backID {
		t.Fatalf("userInfo mira after logging in again = %+v, want online on %s", info, backID)
	}
	if h := sessionHash(t, rdb, c, "mira"); h["conn"] != again.sid || h["node"] != backID {
		t.Fatalf("Redis session of mira is %v, want conn %s on %s", h, again.sid, backID)
	}
	conv := protocol.DMConv("mira", "nils")
	sr, err := again.conn.Sync(ctxT(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := sr.Convs[conv]
	if got.Latest != sent.Seq || len(got.Messages) != 1 || got.Messages[0].ID != sent.ID || got.Messages[0].Text != "while you were away" {
		t.Fatalf("sync of %s = %+v, want the message %s (seq %d)", conv, got, sent.ID, sent.Seq)
	}
	// And from now on messages arrive live.
	if _, err := nils.conn.Chat(ctxT(t, 5*time.Second), "mira", "welcome back", ""); err != nil {
		t.Fatal(err)
	}
	// The message sent while she was away may also arrive live (the
	// leader holds a push for a user it cannot place for a moment, and
	// she logged in meanwhile); clients deduplicate by id.
	testenv.WaitFor(t, 10*time.Second, "a new message reaches mira live", func() bool {
		got := again.received()
		for _, m := range got {
			if m.Text != "welcome back" && m.ID != sent.ID {
				t.Fatalf("mira got %+v live, want only the two messages sent to her", m)
			}
		}
		return len(got) > 0 && got[len(got)-1].Text == "welcome back"
	})
}

// A node killed with kill -9 and started again at once under the same id
// is live in ZooKeeper, but the sessions its earlier run left behind hold
// connections that no longer exist: they count as offline too (a session
// left behind by a node that died, docs/protocol.md 4.6). A message to the
// user is accepted and reaches them by sync when they log in again.
func TestSessionLeftByKilledNodeOfflineAfterRestart(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	leader := c.Index(c.WaitLeader(t))
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "tove", "ulf")
	dead, ask := (leader+1)%3, (leader+2)%3
	ulf := connect(t, c.Node(ask).WSURL, "ulf")
	loginRacer(t, dialRacer(t, c, "tove", dead))

	c.Kill(dead)
	c.Restart(dead)
	c.WaitNodes(t, c.Node(0).ID, c.Node(1).ID, c.Node(2).ID)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	var last protocol.UserInfoReply
	waited := false
	defer func() { // WaitFor ends the goroutine when it times out
		if !waited {
			t.Logf("last userInfo tove: %+v", last)
		}
	}()
	testenv.WaitFor(t, 20*time.Second, "userInfo says tove, whose node was killed and restarted, is offline", func() bool {
		last = infoFrom(t, ulf, "tove")
		return !last.Online
	})
	waited = true

	sent, err := ulf.conn.Chat(ctxT(t, 5*time.Second), "tove", "are you there?", "")
	if err != nil {
		t.Fatal(err)
	}
	again := loginRacer(t, dialRacer(t, c, "tove", dead))
	sr, err := again.conn.Sync(ctxT(t, 5*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := sr.Convs[protocol.DMConv("tove", "ulf")]; got.Latest != sent.Seq || len(got.Messages) != 1 || got.Messages[0].ID != sent.ID {
		t.Fatalf("sync = %+v, want the message %s (seq %d)", got, sent.ID, sent.Seq)
	}
}

// racer is one connection of a user, logged in on its own or together
// with the user's other connections.
type racer struct {
	*user
	node int // index of the node it is connected to

	// Written by the login before loginRacer or loginAtOnce returns, read
	// after.
	sid string // session id of a successful login
	err error  // why the login failed
}

// dialRacer connects to node i and starts collecting pushes; it does not
// log in.
func dialRacer(t *testing.T, c *testenv.Cluster, name string, i int) *racer {
	t.Helper()
	conn, err := chatclient.Dial(ctxT(t, 10*time.Second), c.Node(i).WSURL, 4096)
	if err != nil {
		t.Fatalf("dial %s: %v", c.Node(i).ID, err)
	}
	t.Cleanup(func() { conn.Close() })
	u := &user{name: name, conn: conn, readDone: make(chan struct{})}
	go u.collect()
	return &racer{user: u, node: i}
}

// loginRacer logs r in with the password and fails the test if it does
// not work.
func loginRacer(t *testing.T, r *racer) *racer {
	t.Helper()
	rep, err := r.conn.Login(ctxT(t, 10*time.Second), r.name, password)
	if err != nil || rep.SessionID == "" {
		t.Fatalf("login %s: %+v, %v", r.name, rep, err)
	}
	r.sid = rep.SessionID
	return r
}

// loginAtOnce sends every racer's login, with its user's token, at the
// same moment and waits for all of them to end.
func loginAtOnce(t *testing.T, racers []*racer, tokens map[string]string) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rep, err := r.conn.LoginToken(ctx, tokens[r.name])
			r.sid, r.err = rep.SessionID, err
		}()
	}
	close(start)
	wg.Wait()
}

// raceOutcome says what keeps name's connections from the state a race of
// logins must end in, or "" if nothing does.
func raceOutcome(t *testing.T, c *testenv.Cluster, rdb *redis.Client, watchers []*user, name string, conns []*racer) string {
	open := openRacers(conns)
	if len(open) != 1 {
		return fmt.Sprintf("%s has %d open connections and the Redis session %v; all of them:\n%s",
			name, len(open), sessionHash(t, rdb, c, name), describeRacers(c, conns))
	}
	s := open[0]
	id := c.Node(s.node).ID
	if s.sid == "" {
		return fmt.Sprintf("%s's only open connection, on %s, did not log in (%v); all of them:\n%s", name, id, s.err, describeRacers(c, conns))
	}
	if h := sessionHash(t, rdb, c, name); h["conn"] != s.sid || h["node"] != id {
		return fmt.Sprintf("%s's Redis session is %v, but the open connection is %s on %s; all of them:\n%s", name, h, s.sid, id, describeRacers(c, conns))
	}
	for _, w := range watchers {
		if info := infoFrom(t, w, name); !info.Online || info.Node != id {
			return fmt.Sprintf("userInfo %s asked by %s = %+v, want online on %s", name, w.name, info, id)
		}
	}
	return ""
}

func openRacers(conns []*racer) []*racer {
	var open []*racer
	for _, r := range conns {
		if !connEnded(r.user) {
			open = append(open, r)
		}
	}
	return open
}

func describeRacers(c *testenv.Cluster, conns []*racer) string {
	var b strings.Builder
	for i, r := range conns {
		state := "open"
		if connEnded(r.user) {
			state = fmt.Sprintf("closed (%v)", r.conn.Err())
		}
		fmt.Fprintf(&b, "  #%d on %s: session %q, login error %v, %d kicked pushes, %s\n",
			i, c.Node(r.node).ID, r.sid, r.err, len(kicksOf(r.user)), state)
	}
	return b.String()
}

// checkLoser checks a connection that lost its user's session: one kicked
// push, then a close by the server with code 1000 and the same reason,
// after a login that succeeded, failed with 409 or saw the close.
func checkLoser(t *testing.T, c *testenv.Cluster, r *racer) {
	t.Helper()
	where := fmt.Sprintf("%s's connection on %s (session %q)", r.name, c.Node(r.node).ID, r.sid)
	if !connEnded(r.user) {
		t.Fatalf("%s is still open", where)
	}
	if k := kicksOf(r.user); len(k) != 1 || k[0].Reason != kickReason {
		t.Fatalf("%s got kicked pushes %+v, want one with reason %q", where, k, kickReason)
	}
	var ce *websocket.CloseError
	if !errors.As(r.conn.Err(), &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != kickReason {
		t.Fatalf("%s ended with %v, want close %d %q", where, r.conn.Err(), websocket.CloseNormalClosure, kickReason)
	}
	if r.sid == "" && chatclient.Code(r.err) != protocol.CodeConflict && !errors.Is(r.err, chatclient.ErrClosed) {
		t.Fatalf("%s: login failed with %v, want success, 409 or the connection closing", where, r.err)
	}
}

// connEnded reports whether u's connection has ended and every frame it
// received has been collected.
func connEnded(u *user) bool {
	select {
	case <-u.readDone:
		return true
	default:
		return false
	}
}

// kicksOf returns the kicked pushes u received.
func kicksOf(u *user) []protocol.KickedPush {
	var out []protocol.KickedPush
	for _, p := range u.otherPushes() {
		if p.Action == protocol.PushKicked {
			var k protocol.KickedPush
			_ = json.Unmarshal(p.Data, &k)
			out = append(out, k)
		}
	}
	return out
}

// infoFrom asks userInfo about name on asker's connection.
func infoFrom(t *testing.T, asker *user, name string) protocol.UserInfoReply {
	t.Helper()
	var info protocol.UserInfoReply
	if err := asker.conn.Do(ctxT(t, 5*time.Second), protocol.ActionUserInfo, protocol.UserInfoData{Username: name}, &info); err != nil {
		t.Fatalf("userInfo %s asked by %s: %v", name, asker.name, err)
	}
	return info
}

func sessRedis(t *testing.T) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// sessionHash reads user's global session from Redis (see session.Store).
func sessionHash(t *testing.T, rdb *redis.Client, c *testenv.Cluster, user string) map[string]string {
	t.Helper()
	h, err := rdb.HGetAll(ctxT(t, 5*time.Second), c.Namespace()+":session:"+user).Result()
	if err != nil {
		t.Fatalf("read the session of %s: %v", user, err)
	}
	return h
}

// loggedOutIn reports whether node i has logged that connection conn
// logged out.
func loggedOutIn(t *testing.T, c *testenv.Cluster, i int, conn string) bool {
	t.Helper()
	f, err := os.Open(c.Node(i).Log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e struct {
			Message string `json:"message"`
			Conn    string `json:"conn"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Conn == conn && e.Message == "logged out" {
			return true
		}
	}
	return false
}

// sessWait waits until check returns "", and on timeout logs what it
// returned last.
func sessWait(t *testing.T, timeout time.Duration, what string, check func() string) {
	t.Helper()
	last := "not checked yet"
	waited := false
	defer func() { // WaitFor ends the goroutine when it times out
		if !waited {
			t.Logf("last state: %s", last)
		}
	}()
	testenv.WaitFor(t, timeout, what, func() bool {
		last = check()
		return last == ""
	})
	waited = true
}
