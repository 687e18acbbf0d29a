package e2e

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"chatcluster/internal/testenv"
	"chatcluster/protocol"
)

// The reasons of the kicked pushes of the multi login policy.
const (
	kickSameDevice = "logged in again on this device"
	kickTooMany    = "logged in on more than 5 devices; this one was the oldest"
)

// multiEnv runs the nodes under the multi login policy, 5 devices per
// user (the default bound).
var multiEnv = append([]string{"CHAT_LOGIN_POLICY=multi"}, fastEnv...)

// device is one connection of a user, logged in on its own device.
type device struct {
	*racer
	device string // the device the login named; "" none
}

// loginDevice connects to node i and logs name in there, naming device
// (none when ""), and fails the test if that does not work.
func loginDevice(t *testing.T, c *testenv.Cluster, name string, i int, dev string) *device {
	t.Helper()
	r := dialRacer(t, c, name, i)
	var rep protocol.LoginReply
	if err := r.conn.Do(ctxT(t, 10*time.Second), protocol.ActionLogin, protocol.LoginData{Username: name, Password: password, Device: dev}, &rep); err != nil || rep.SessionID == "" {
		t.Fatalf("login %s on %s, device %q: %+v, %v", name, c.Node(i).ID, dev, rep, err)
	}
	r.sid = rep.SessionID
	return &device{racer: r, device: dev}
}

// hasMessage reports whether u received message id.
func hasMessage(u *user, id string) bool {
	return slices.ContainsFunc(u.received(), func(m protocol.Message) bool { return m.ID == id })
}

// waitPushed waits until every one of us received message id.
func waitPushed(t *testing.T, what, id string, us ...*user) {
	t.Helper()
	for _, u := range us {
		testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("%s reaches %s's connection", what, u.name), func() bool { return hasMessage(u, id) })
	}
}

// checkKicked checks that d was kicked once with reason and then closed by
// the server with code 1000 and the same reason.
func checkKicked(t *testing.T, d *device, reason string) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("%s's connection %s is closed", d.name, d.sid), func() bool { return connEnded(d.user) })
	if k := kicksOf(d.user); len(k) != 1 || k[0].Reason != reason {
		t.Fatalf("%s's connection %s got kicked pushes %+v, want one with reason %q", d.name, d.sid, k, reason)
	}
	var ce *websocket.CloseError
	if !errors.As(d.conn.Err(), &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != reason {
		t.Fatalf("%s's connection %s ended with %v, want close %d %q", d.name, d.sid, d.conn.Err(), websocket.CloseNormalClosure, reason)
	}
}

// checkOpen checks that none of ds was kicked or closed.
func checkOpen(t *testing.T, ds ...*device) {
	t.Helper()
	for _, d := range ds {
		if connEnded(d.user) || len(kicksOf(d.user)) != 0 {
			t.Fatalf("%s's connection %s (device %q) was closed (%v) or kicked (%+v)", d.name, d.sid, d.device, d.conn.Err(), kicksOf(d.user))
		}
	}
}

// devicesOnline waits until userInfo, asked by asker, lists exactly want
// (node ids, newest login first) as name's devices.
func devicesOnline(t *testing.T, asker *user, name string, want ...string) protocol.UserInfoReply {
	t.Helper()
	var last protocol.UserInfoReply
	sessWait(t, 10*time.Second, fmt.Sprintf("userInfo lists %s's devices on %v", name, want), func() string {
		last = infoFrom(t, asker, name)
		var nodes []string
		for _, d := range last.Devices {
			nodes = append(nodes, d.Node)
		}
		if !slices.Equal(nodes, want) {
			return fmt.Sprintf("userInfo %s = %+v", name, last)
		}
		return ""
	})
	if len(want) == 0 {
		if last.Online || last.Node != "" || last.LoginTime != 0 {
			t.Fatalf("userInfo of %s with no device online = %+v", name, last)
		}
		return last
	}
	if !last.Online || last.Node != last.Devices[0].Node || last.LoginTime != last.Devices[0].LoginTime {
		t.Fatalf("userInfo %s = %+v: want online, with node and loginTime of the newest device", name, last)
	}
	return last
}

// Under the multi login policy, on two nodes: a user logged in on two
// devices, one on each node, gets every message on both, direct and room;
// what it sends from one device reaches the other, but not the device it
// was sent from, which has the reply; userInfo lists both; room mates see
// it come online with the first device and go offline with the last.
func TestDevicesAcrossNodes(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: multiEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "ada", "ben", "cleo")
	n1, n2 := c.Node(0).ID, c.Node(1).ID

	// Presence: cleo shares a room with ada.
	first := loginDevice(t, c, "ada", 0, "phone")
	cleo := connect(t, c.Node(1).WSURL, "cleo")
	ben := connect(t, c.Node(0).WSURL, "ben")
	join(t, first.user, "den")
	join(t, cleo, "den")
	join(t, ben, "den")
	first.conn.Close()
	testenv.WaitFor(t, 10*time.Second, "cleo sees ada go offline", func() bool {
		return slices.Contains(cleo.presences(), protocol.PresencePush{Username: "ada", Online: false})
	})
	devicesOnline(t, ben, "ada")

	phone := loginDevice(t, c, "ada", 0, "phone")
	testenv.WaitFor(t, 10*time.Second, "cleo sees ada come online", func() bool {
		return slices.Contains(cleo.presences(), protocol.PresencePush{Username: "ada", Online: true})
	})
	laptop := loginDevice(t, c, "ada", 1, "")
	info := devicesOnline(t, ben, "ada", n2, n1)
	if info.Devices[1].Device != "phone" || info.Devices[0].Device != "" || info.Devices[0].LoginTime < info.Devices[1].LoginTime {
		t.Fatalf("userInfo ada = %+v, want the laptop (no name) then the phone", info)
	}
	checkOpen(t, phone, laptop)

	// Ben writes to ada: both devices get it.
	sent, err := ben.conn.Chat(ctxT(t, 5*time.Second), "ada", "hello both", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ben's message", sent.ID, phone.user, laptop.user)

	// Ada writes from the phone: ben gets it, and so does the laptop; the
	// phone has the reply.
	fromPhone, err := phone.conn.Chat(ctxT(t, 5*time.Second), "ben", "from my phone", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ada's message from the phone", fromPhone.ID, ben, laptop.user)
	// And from the laptop, on the other node.
	fromLaptop, err := laptop.conn.Chat(ctxT(t, 5*time.Second), "ben", "from my laptop", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ada's message from the laptop", fromLaptop.ID, ben, phone.user)

	// A room message reaches both devices; one ada posts from the laptop
	// reaches the phone (and the laptop, as every room post reaches its
	// sender).
	post, err := ben.conn.ChatRoom(ctxT(t, 5*time.Second), "den", "morning den", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ben's room message", post.ID, phone.user, laptop.user, cleo)
	adaPost, err := laptop.conn.ChatRoom(ctxT(t, 5*time.Second), "den", "ada here", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ada's room message", adaPost.ID, phone.user, laptop.user, ben, cleo)

	// A message to oneself reaches every device once.
	self, err := phone.conn.Chat(ctxT(t, 5*time.Second), "ada", "note to self", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ada's note to herself", self.ID, phone.user, laptop.user)

	// The phone logs out: the laptop stays, gets messages, and cleo is told
	// nothing; userInfo lists the laptop alone. (A presence push the
	// phone's logout caused would reach cleo before ben's next room post:
	// ben's node reported the logout before the session left Redis, and
	// the leader pushes presence as it handles the report, ahead of the
	// posts it handles after.)
	phone.conn.Close()
	devicesOnline(t, ben, "ada", n2)
	marker, err := ben.conn.ChatRoom(ctxT(t, 5*time.Second), "den", "still here?", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ben's second room message", marker.ID, cleo)
	if got, want := cleo.presences(), []protocol.PresencePush{{Username: "ada", Online: false}, {Username: "ada", Online: true}}; !slices.Equal(got, want) {
		t.Fatalf("cleo's presence pushes while ada has a device left = %+v, want %+v", got, want)
	}
	later, err := ben.conn.Chat(ctxT(t, 5*time.Second), "ada", "just the laptop now", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "a message after the phone left", later.ID, laptop.user)
	checkOpen(t, laptop)
	laptop.conn.Close()
	devicesOnline(t, ben, "ada")
	testenv.WaitFor(t, 10*time.Second, "cleo sees ada go offline with her last device", func() bool {
		return len(cleo.presences()) == 3
	})
	want := []protocol.PresencePush{{Username: "ada", Online: false}, {Username: "ada", Online: true}, {Username: "ada", Online: false}}
	if got := cleo.presences(); !slices.Equal(got, want) {
		t.Fatalf("cleo's presence pushes = %+v, want %+v: online with the first device, offline with the last", got, want)
	}

	// No device got a direct message it sent as a push, and none got a
	// message twice.
	if hasMessage(phone.user, fromPhone.ID) || hasMessage(laptop.user, fromLaptop.ID) {
		t.Fatal("a device got the direct message it sent pushed; it has the reply")
	}
	for _, d := range []*device{phone, laptop} {
		checkOrderOnce(t, "ada's "+d.sid, d.received())
	}
	checkOrderOnce(t, "ben", ben.received())
}

// Under the multi login policy: a sixth device kicks the user's oldest,
// with a reason that says so; a device that logs in again replaces its own
// earlier connection, on another node or on the same one, and counts
// once; logging out one device leaves the others.
func TestDevicesBoundAndReconnect(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: multiEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "dora", "eli")
	eli := connect(t, c.Node(0).WSURL, "eli")
	ids := []string{c.Node(0).ID, c.Node(1).ID}

	// Five devices, on both nodes; the third names itself.
	var devs []*device
	for i := range 5 {
		name := ""
		if i == 2 {
			name = "tablet"
		}
		devs = append(devs, loginDevice(t, c, "dora", i%2, name))
	}
	devicesOnline(t, eli, "dora", ids[0], ids[1], ids[0], ids[1], ids[0])
	checkOpen(t, devs...)
	join(t, devs[0].user, "porch")
	join(t, eli, "porch")

	// The tablet reconnects on the other node: its old connection goes,
	// the count stays at five.
	tablet := loginDevice(t, c, "dora", 1, "tablet")
	checkKicked(t, devs[2], kickSameDevice)
	info := devicesOnline(t, eli, "dora", ids[1], ids[0], ids[1], ids[1], ids[0])
	if info.Devices[0].Device != "tablet" {
		t.Fatalf("userInfo dora = %+v, want the tablet newest", info)
	}
	// And again on the same node.
	tablet2 := loginDevice(t, c, "dora", 1, "tablet")
	checkKicked(t, tablet, kickSameDevice)
	devicesOnline(t, eli, "dora", ids[1], ids[0], ids[1], ids[1], ids[0])
	devs = []*device{devs[0], devs[1], devs[3], devs[4], tablet2}
	checkOpen(t, devs...)

	// A sixth device: the oldest, devs[0], is kicked.
	sixth := loginDevice(t, c, "dora", 1, "")
	checkKicked(t, devs[0], kickTooMany)
	devicesOnline(t, eli, "dora", ids[1], ids[1], ids[0], ids[1], ids[1])
	devs = append(devs[1:], sixth)
	checkOpen(t, devs...)

	// Every device left gets a message, the kicked ones nothing.
	sent, err := eli.conn.Chat(ctxT(t, 5*time.Second), "dora", "five of you", "")
	if err != nil {
		t.Fatal(err)
	}
	var us []*user
	for _, d := range devs {
		us = append(us, d.user)
	}
	waitPushed(t, "eli's message", sent.ID, us...)

	// One device logs out: the others stay.
	devs[1].conn.Close()
	devicesOnline(t, eli, "dora", ids[1], ids[1], ids[0], ids[1])
	checkOpen(t, devs[0], devs[2], devs[3], devs[4])

	// The rest log out: dora's room mate sees her go offline, once, when
	// the last one goes (the leader forgot every connection that ended,
	// the replaced and the kicked ones too).
	for _, d := range []*device{devs[0], devs[2], devs[3], devs[4]} {
		d.conn.Close()
	}
	devicesOnline(t, eli, "dora")
	testenv.WaitFor(t, 10*time.Second, "eli sees dora go offline", func() bool { return len(eli.presences()) > 0 })
	if got := eli.presences(); !slices.Equal(got, []protocol.PresencePush{{Username: "dora", Online: false}}) {
		t.Fatalf("eli's presence pushes = %+v, want dora offline once", got)
	}
}

// Under the multi login policy, on two nodes: what a user does on one
// device that changes a conversation, or says how far it was read,
// reaches the user's other devices too: an edit and a recall of a direct
// message, a read position (with the other user told as well), a room
// joined; typing reaches the other user's every device but never the
// typer's own. The device that acted has the reply and no push.
func TestDevicesSeeEditsReadsAndJoins(t *testing.T) {
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: multiEnv})
	c.WaitLeader(t)
	testenv.WaitFor(t, 10*time.Second, "leader links to every node", func() bool { return linked(t, c) })
	register(t, c, "ada", "ben")
	phone := loginDevice(t, c, "ada", 0, "phone")
	laptop := loginDevice(t, c, "ada", 1, "laptop")
	ben := connect(t, c.Node(0).WSURL, "ben")
	devicesOnline(t, ben, "ada", c.Node(1).ID, c.Node(0).ID)

	sent, err := phone.conn.Chat(ctxT(t, 5*time.Second), "ben", "helo", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ada's message", sent.ID, ben, laptop.user)

	edit, err := phone.conn.Edit(ctxT(t, 5*time.Second), sent.Conv, sent.Seq, "hello")
	if err != nil {
		t.Fatal(err)
	}
	recall, err := laptop.conn.Recall(ctxT(t, 5*time.Second), sent.Conv, sent.Seq)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what     string
		seq, ref int64
		kind     string
		to       []*user
		notTo    *user
	}{
		{"the edit from the phone", edit.Seq, sent.Seq, protocol.KindEdit, []*user{ben, laptop.user}, phone.user},
		{"the recall from the laptop", recall.Seq, sent.Seq, protocol.KindRecall, []*user{ben, phone.user}, laptop.user},
	} {
		for _, u := range tc.to {
			testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("%s reaches %s's connection", tc.what, u.name), func() bool {
				return u.pushedEvent(sent.Conv, tc.seq, tc.kind, tc.ref)
			})
		}
		if tc.notTo.pushedEvent(sent.Conv, tc.seq, tc.kind, tc.ref) {
			t.Fatalf("%s was pushed to the device that sent it", tc.what)
		}
	}

	// Ada reads on the laptop: ben and the phone are told.
	if got := laptop.read(t, sent.Conv, recall.Seq); got != recall.Seq {
		t.Fatalf("read position %d, want %d", got, recall.Seq)
	}
	want := protocol.ReadPush{Conv: sent.Conv, User: "ada", Seq: recall.Seq}
	for _, u := range []*user{ben, phone.user} {
		testenv.WaitFor(t, 10*time.Second, "ada's read reaches "+u.name+"'s connection", func() bool {
			return slices.Contains(u.readPushes(), want)
		})
	}
	if slices.Contains(laptop.readPushes(), want) {
		t.Fatal("the read was pushed to the device that sent it")
	}

	// Ben types: both of ada's devices see it. Ada types on the phone:
	// ben sees it; her laptop never does.
	typeUntilSeen(t, ben, sent.Conv, phone.user, laptop.user)
	typeUntilSeen(t, phone.user, sent.Conv, ben)
	// Ben's next message is queued behind any typing push the laptop
	// could have got, on the laptop's node.
	marker, err := ben.conn.Chat(ctxT(t, 5*time.Second), "ada", "after the typing", "")
	if err != nil {
		t.Fatal(err)
	}
	waitPushed(t, "ben's message after the typing", marker.ID, laptop.user)
	for _, tp := range append(laptop.typings(), phone.typings()...) {
		if tp.From == "ada" {
			t.Fatalf("ada's own device got her typing: %+v", tp)
		}
	}

	// Ada joins a room on the phone: the laptop hears of it too.
	join(t, phone.user, "den")
	testenv.WaitFor(t, 10*time.Second, "the laptop gets ada's join of den", func() bool {
		return slices.ContainsFunc(laptop.members(), func(p protocol.MemberPush) bool {
			return p.Room == "den" && p.Username == "ada" && p.Joined
		})
	})
	checkOpen(t, phone, laptop)
	for _, d := range []*device{phone, laptop} {
		checkOrderOnce(t, "ada's "+d.device, d.received())
	}
}
