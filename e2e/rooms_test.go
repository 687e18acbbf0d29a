package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"chatcluster/chatclient"
	"chatcluster/hotwords"
	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// roomMsgs returns the messages of room that u received, in arrival order.
func (u *user) roomMsgs(room string) []protocol.Message {
	var out []protocol.Message
	for _, m := range u.received() {
		if m.Conv == protocol.RoomConv(room) {
			out = append(out, m)
		}
	}
	return out
}

// presences returns the presence pushes u received, in order.
func (u *user) presences() []protocol.PresencePush {
	var out []protocol.PresencePush
	for _, p := range u.otherPushes() {
		var pp protocol.PresencePush
		if p.Action == protocol.PushPresence && json.Unmarshal(p.Data, &pp) == nil {
			out = append(out, pp)
		}
	}
	return out
}

func join(t *testing.T, u *user, room string) protocol.RoomReply {
	t.Helper()
	r, err := u.conn.JoinRoom(ctxT(t, 10*time.Second), room)
	if err != nil {
		t.Fatalf("%s joins %s: %v", u.name, room, err)
	}
	return r
}

// postAll has every user post n messages to room at once and returns the
// acknowledged messages by id.
func postAll(t *testing.T, users []*user, room string, n int, tag string) map[string]protocol.ChatReply {
	t.Helper()
	var (
		mu    sync.Mutex
		acked = map[string]protocol.ChatReply{}
		wg    sync.WaitGroup
		errs  = make(chan error, len(users))
	)
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				r, err := u.conn.ChatRoom(ctxT(t, 10*time.Second), room, fmt.Sprintf("%s %s %d", tag, u.name, i), "")
				if err != nil {
					errs <- fmt.Errorf("%s posts %d: %w", u.name, i, err)
					return
				}
				mu.Lock()
				acked[r.ID] = r
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return acked
}

// Three nodes, members on every node: each member, the sender included,
// gets every room message exactly once and in seq order; presence reaches
// the other members; non-members cannot post.
func TestRoomAcrossNodes(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	names := []string{"r0", "r1", "r2", "r3", "r4", "r5", "rz"}
	register(t, c, names...)
	var members []*user
	for i, n := range names[:6] {
		members = append(members, connect(t, c.Node(i%3).WSURL, n))
	}
	outsider := connect(t, c.Node(0).WSURL, "rz")

	// Each join is an event of the room: the recent ones are the joins so
	// far, each member's own last.
	for i, u := range members {
		r := join(t, u, "lobby")
		if len(r.Members) != i+1 || !slices.Contains(r.Members, u.name) || len(r.Recent) != i+1 ||
			r.Recent[i].Kind != protocol.KindJoin || r.Recent[i].From != u.name || r.Recent[i].Seq != int64(i+1) {
			t.Fatalf("%s joins lobby: %+v", u.name, r)
		}
	}
	joins := int64(len(members))
	if r := join(t, members[0], "lobby"); len(r.Members) != 6 {
		t.Fatalf("joining again changed the room: %+v", r)
	}
	if _, err := outsider.conn.ChatRoom(ctxT(t, 5*time.Second), "lobby", "let me in", ""); chatclient.Code(err) != protocol.CodeForbidden {
		t.Fatalf("non-member posts: %v, want 403", err)
	}
	if _, err := outsider.conn.ChatRoom(ctxT(t, 5*time.Second), "nowhere", "hello?", ""); chatclient.Code(err) != protocol.CodeNotFound {
		t.Fatalf("post to an unknown room: %v, want 404", err)
	}
	if _, err := outsider.conn.History(ctxT(t, 5*time.Second), protocol.HistoryData{Room: "lobby"}); chatclient.Code(err) != protocol.CodeForbidden {
		t.Fatalf("non-member reads the room: %v, want 403", err)
	}
	rooms, err := outsider.conn.Rooms(ctxT(t, 5*time.Second))
	if err != nil || !slices.Contains(rooms, protocol.RoomInfo{Name: "lobby", Members: 6, Owner: "r0"}) {
		t.Fatalf("rooms: %+v, %v", rooms, err)
	}

	// Presence: r5 goes away and comes back; the other members hear both.
	members[5].conn.Close()
	testenv.WaitFor(t, 10*time.Second, "members hear that r5 went offline", func() bool {
		for _, u := range members[:5] {
			if !slices.Contains(u.presences(), protocol.PresencePush{Username: "r5", Online: false}) {
				return false
			}
		}
		return true
	})
	members[5] = connect(t, c.Node(2).WSURL, "r5")
	testenv.WaitFor(t, 10*time.Second, "members hear that r5 is back", func() bool {
		for _, u := range members[:5] {
			if !slices.Contains(u.presences(), protocol.PresencePush{Username: "r5", Online: true}) {
				return false
			}
		}
		return true
	})
	if p := outsider.presences(); len(p) != 0 {
		t.Fatalf("a non-member got presence pushes: %+v", p)
	}

	const each = 40
	acked := postAll(t, members, "lobby", each, "hello")
	total := each * len(members)
	if len(acked) != total {
		t.Fatalf("%d messages acknowledged, want %d", len(acked), total)
	}
	for _, u := range members {
		testenv.WaitFor(t, 20*time.Second, u.name+" receives every room message", func() bool {
			return len(u.roomMsgs("lobby")) >= total
		})
	}
	for _, u := range members {
		got := u.roomMsgs("lobby")
		checkOrderOnce(t, u.name, got)
		if len(got) != total {
			t.Fatalf("%s received %d room messages, want %d", u.name, len(got), total)
		}
		for i, m := range got {
			if m.Seq != joins+int64(i+1) || m.Room != "lobby" {
				t.Fatalf("%s: message %d is %+v, want seq %d of room lobby", u.name, i, m, joins+int64(i+1))
			}
			if a, ok := acked[m.ID]; !ok || a.Seq != m.Seq {
				t.Fatalf("%s received %+v, which no one was acknowledged", u.name, m)
			}
		}
	}
	if n := len(outsider.roomMsgs("lobby")); n != 0 {
		t.Fatalf("a non-member received %d room messages", n)
	}
	if h := allHistory(t, members[3], "room:lobby"); len(h) != total+int(joins) {
		t.Fatalf("room history holds %d messages and events, want %d", len(h), total+int(joins))
	}

	// Leaving: the room's reply no longer lists the user, and new
	// messages no longer reach them.
	r, err := members[1].conn.LeaveRoom(ctxT(t, 5*time.Second), "lobby")
	if err != nil || slices.Contains(r.Members, "r1") || len(r.Members) != 5 {
		t.Fatalf("leave: %+v, %v", r, err)
	}
	if _, err := members[1].conn.ChatRoom(ctxT(t, 5*time.Second), "lobby", "still here?", ""); chatclient.Code(err) != protocol.CodeForbidden {
		t.Fatalf("post after leaving: %v, want 403", err)
	}
	last, err := members[0].conn.ChatRoom(ctxT(t, 5*time.Second), "lobby", "after r1 left", "")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "r2 receives the message posted after r1 left", func() bool {
		got := members[2].roomMsgs("lobby")
		return len(got) > 0 && got[len(got)-1].ID == last.ID
	})
	if n := len(members[1].roomMsgs("lobby")); n != total {
		t.Fatalf("r1 received %d room messages, want %d: nothing after leaving", n, total)
	}
}

// kill -9 of the leader while a room is busy: the new leader loads the
// room with all its members, the next messages reach every member, and
// sync fills in what a member missed during the gap.
func TestRoomSurvivesLeaderKill(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: fastEnv})
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	li := c.Index(leader)
	var survivors []int
	for i := 0; i < 3; i++ {
		if i != li {
			survivors = append(survivors, i)
		}
	}
	names := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	register(t, c, names...)
	members := make([]*user, len(names))
	for i, n := range names {
		members[i] = connect(t, c.Node(i%3).WSURL, n)
		join(t, members[i], "ops")
	}
	// The poster sits on a node that survives.
	var poster *user
	for i, u := range members {
		if i%3 == survivors[0] {
			poster = u
			break
		}
	}

	var (
		mu    sync.Mutex
		acked []protocol.ChatReply
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r, err := poster.conn.ChatRoom(ctxT(t, 10*time.Second), "ops", fmt.Sprintf("busy %d", i), fmt.Sprintf("busy-%d", i))
			if err != nil {
				continue // refused while there is no leader: allowed
			}
			mu.Lock()
			acked = append(acked, r)
			mu.Unlock()
		}
	}()
	testenv.WaitFor(t, 10*time.Second, "the room is busy before the kill", func() bool { return len(poster.roomMsgs("ops")) >= 30 })
	c.Kill(li)
	newLeader := c.WaitLeader(t)
	if newLeader == leader {
		t.Fatalf("leader %s still listed after kill -9", leader)
	}
	testenv.WaitFor(t, 10*time.Second, "new leader links to every node", func() bool { return linked(t, c) })
	// Members of the dead node come back on a surviving one.
	for i, u := range members {
		if i%3 == li {
			members[i] = connect(t, c.Node(survivors[i%2]).WSURL, u.name)
		}
	}
	testenv.WaitFor(t, 20*time.Second, "posting works under the new leader", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > 0 && acked[len(acked)-1].TS > time.Now().Add(-time.Second).UnixMilli()
	})
	close(stop)
	<-done

	r := join(t, members[survivors[1]], "ops")
	if want := append([]string(nil), names...); !slices.Equal(r.Members, want) {
		t.Fatalf("after the kill the room has %v, want %v", r.Members, want)
	}
	// The next messages reach every member live.
	var next []protocol.ChatReply
	for i := 0; i < 5; i++ {
		rep, err := poster.conn.ChatRoom(ctxT(t, 10*time.Second), "ops", fmt.Sprintf("after %d", i), "")
		if err != nil {
			t.Fatalf("post after re-election: %v", err)
		}
		next = append(next, rep)
	}
	for _, u := range members {
		testenv.WaitFor(t, 10*time.Second, u.name+" receives the messages posted after re-election", func() bool {
			got := u.roomMsgs("ops")
			ids := map[string]bool{}
			for _, m := range got {
				ids[m.ID] = true
			}
			for _, n := range next {
				if !ids[n.ID] {
					return false
				}
			}
			return true
		})
	}

	// Each member syncs from the last seq it holds without a gap; with
	// what it received live, it then holds every acknowledged message
	// exactly once.
	mu.Lock()
	all := append(acked, next...)
	mu.Unlock()
	for _, u := range members {
		got := u.roomMsgs("ops")
		checkOrderOnce(t, u.name, got)
		have := map[int64]string{}
		for _, m := range got {
			have[m.Seq] = m.ID
		}
		var offset int64
		for have[offset+1] != "" {
			offset++
		}
		convs, err := u.conn.SyncAll(ctxT(t, 20*time.Second), map[string]int64{"room:ops": offset})
		if err != nil {
			t.Fatalf("%s syncs: %v", u.name, err)
		}
		sc := convs["room:ops"]
		for _, m := range sc.Messages {
			if id, ok := have[m.Seq]; ok && id != m.ID {
				t.Fatalf("%s: seq %d is %s live but %s by sync", u.name, m.Seq, id, m.ID)
			}
			have[m.Seq] = m.ID
		}
		for s := int64(1); s <= sc.Latest; s++ {
			if have[s] == "" {
				t.Fatalf("%s misses seq %d of %d after sync", u.name, s, sc.Latest)
			}
		}
		byID := map[string]bool{}
		for _, id := range have {
			byID[id] = true
		}
		for _, a := range all {
			if !byID[a.ID] {
				t.Fatalf("%s misses acknowledged message %s (seq %d)", u.name, a.ID, a.Seq)
			}
		}
	}
	t.Logf("%d messages acknowledged across the kill of %s; new leader %s", len(all), leader, newLeader)
}

// The word filter masks listed words in any case and width, before the
// message is stored; popular ranks the words of a known input.
func TestWordFilterAndPopular(t *testing.T) {
	words := t.TempDir() + "/words.txt"
	if err := writeFile(words, "# test list\ndarn\n坏蛋\nHeck\n"); err != nil {
		t.Fatal(err)
	}
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: append([]string{"CHAT_WORD_FILTER_FILE=" + words}, fastEnv...)})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "fa", "fb")
	fa := connect(t, c.Node(0).WSURL, "fa")
	fb := connect(t, c.Node(1).WSURL, "fb")
	join(t, fa, "words")
	join(t, fb, "words")

	masked := map[string]string{
		"Darn it":         "**** it",
		"ＤＡＲＮ and dArN":   "**** and ****",
		"你这个坏蛋!":          "你这个**!",
		"oh hEcK, darned": "oh ****, ****ed",
		"clean text":      "clean text",
	}
	inputs := make([]string, 0, len(masked))
	for in := range masked {
		inputs = append(inputs, in)
	}
	sort.Strings(inputs)
	for _, in := range inputs {
		if _, err := fa.conn.ChatRoom(ctxT(t, 5*time.Second), "words", in, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := fa.conn.Chat(ctxT(t, 5*time.Second), "fb", in, ""); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "fb receives every message", func() bool { return len(fb.received()) >= 2*len(inputs) })
	for _, m := range fb.received() {
		if want, ok := masked[unmask(m.Text, masked)]; !ok || m.Text != want {
			t.Fatalf("fb received %q: not one of the masked texts", m.Text)
		}
	}
	for _, conv := range []string{"room:words", "dm:fa:fb"} {
		for _, m := range allHistory(t, fb, conv) {
			if m.Kind != "" {
				continue // the joins
			}
			if _, ok := masked[unmask(m.Text, masked)]; !ok {
				t.Fatalf("%s stores %q unmasked", conv, m.Text)
			}
		}
	}

	// Direct messages are private: their words stay out of the public
	// ranking. Sent from fb's node before the known input below, so they
	// are queued for counting before it.
	for range 5 {
		if _, err := fb.conn.Chat(ctxT(t, 5*time.Second), "fa", "privateword privateword", ""); err != nil {
			t.Fatal(err)
		}
	}

	// A known input for the ranking, three times over so that it
	// outweighs the words above (one each at most): each word counts once
	// per message, Chinese by character pairs, ties in word order.
	for range 3 {
		for _, in := range []string{"apple banana apple", "Apple cherry", "banana APPLE", "今天天气", "天气"} {
			if _, err := fb.conn.ChatRoom(ctxT(t, 5*time.Second), "words", in, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []protocol.WordCount{{Word: "apple", Count: 9}, {Word: "banana", Count: 6}, {Word: "天气", Count: 6}}
	var got []protocol.WordCount
	testenv.WaitFor(t, 10*time.Second, "popular ranks the known input", func() bool {
		got, _ = fa.conn.Popular(ctxT(t, 5*time.Second), 3)
		return slices.Equal(got, want)
	})
	all, err := fa.conn.Popular(ctxT(t, 5*time.Second), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range all {
		if w.Word == "privateword" {
			t.Fatalf("popular counts the words of direct messages: %v", all)
		}
	}
	if _, err := fa.conn.Popular(ctxT(t, 5*time.Second), 1000); chatclient.Code(err) != protocol.CodeBadRequest {
		t.Fatalf("popular n=1000: %v, want 400", err)
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o644) }

// unmask finds which input produced a masked text.
func unmask(text string, masked map[string]string) string {
	for in, out := range masked {
		if out == text {
			return in
		}
	}
	return ""
}

// The hot-word ranking is reset on the configured interval by the leader
// and never by another node, and a new leader carries on the schedule.
func TestHotWordsResetByLeaderOnly(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: append([]string{"CHAT_HOT_WORDS_RESET=1s"}, fastEnv...)})
	leader := c.WaitLeader(t)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	counter := hotwords.New(rdb, c.Namespace()+":")
	register(t, c, "hw")
	u := connect(t, c.Node((c.Index(leader)+1)%3).WSURL, "hw")
	join(t, u, "hot")

	lastReset := func() hotwords.ResetInfo {
		r, err := counter.LastReset(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Watch several resets: each is done by the leader of the moment.
	var seen []hotwords.ResetInfo
	testenv.WaitFor(t, 15*time.Second, "three resets", func() bool {
		r := lastReset()
		if !r.At.IsZero() && (len(seen) == 0 || !r.At.Equal(seen[len(seen)-1].At)) {
			seen = append(seen, r)
		}
		return len(seen) >= 3
	})
	for _, r := range seen {
		if r.Node != leader {
			t.Fatalf("reset %+v done by %s, not by the leader %s", r, r.Node, leader)
		}
	}
	for i := 1; i < len(seen); i++ {
		if gap := seen[i].At.Sub(seen[i-1].At); gap < time.Second {
			t.Fatalf("resets %v apart, more often than every 1s", gap)
		}
	}

	// Words counted are gone after the next reset.
	if _, err := u.conn.ChatRoom(ctxT(t, 5*time.Second), "hot", "zebra crossing", ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "a reset clears the ranking", func() bool {
		words, err := u.conn.Popular(ctxT(t, 5*time.Second), 10)
		return err == nil && len(words) == 0 && lastReset().At.After(seen[len(seen)-1].At)
	})

	// After the leader dies the next one resets, on the same schedule.
	c.Kill(c.Index(leader))
	next := c.WaitLeader(t)
	testenv.WaitFor(t, 15*time.Second, "the new leader resets", func() bool { return lastReset().Node == next })
}
