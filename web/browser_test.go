package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"chatcluster/chatclient"
	"chatcluster/internal/testenv"
)

const (
	password    = "correct horse"
	pageTimeout = 15 * time.Second // one wait for something to show in a page
)

// TestBrowserChat drives the web client and the status page in headless
// Chromium against a real three-node cluster, as two users would: alice
// and bob register through the page, each on a node of their own (the
// page's ?node= parameter), and exchange direct and room messages; bob
// scrolls back through a room's history. Then bob's node is killed: his
// page says it is reconnecting, moves to another node, syncs, and shows
// every message of both conversations exactly once, also those sent while
// it was away and the one he typed while it was reconnecting. A graceful
// stop of his next node moves the page again; a login of bob elsewhere
// kicks it, and it stays off until asked to come back. Screenshots
// of the pages go to test-output/web/ at the repository root.
func TestBrowserChat(t *testing.T) {
	chrome := chromiumPath(t)
	shots := screenshotDir(t)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 3, Env: []string{"CHAT_RATE_LIMIT=100000"}})
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 15*time.Second, "the leader links to every node", func() bool { return linked(c) })
	gw := c.GatewayURL()

	// alice on the leader's node, bob on another; the third is left for
	// bob to move to.
	aNode, bNode := leader, ""
	for i := 0; i < c.Len(); i++ {
		if id := c.Node(i).ID; id != leader && bNode == "" {
			bNode = id
		}
	}

	// carol fills the room "archive" with more than a page of history,
	// through the Go client, for bob to scroll back through.
	const archived = 64
	carolPosts(t, c, "archive", archived)

	browser := startBrowser(t, chrome)
	alice := openPage(t, browser, "alice")
	bob := openPage(t, browser, "bob")

	for _, p := range []struct {
		pg   *page
		node string
	}{{alice, aNode}, {bob, bNode}} {
		p.pg.do(chromedp.Navigate(gw+"/?node="+p.node), chromedp.WaitVisible(chromedp.CSS("#login-form")))
		if p.pg == alice {
			alice.screenshot(shots, "chat-login.png")
		}
		p.pg.do(
			chromedp.SendKeys(chromedp.CSS("#username"), p.pg.name),
			chromedp.SendKeys(chromedp.CSS("#password"), password),
			chromedp.Click(chromedp.CSS("#register-btn")),
		)
		p.pg.waitOnline(p.node)
	}

	// Direct messages: bob sees the new conversation with 2 unread, opens
	// it and answers. The second text would run script if it were parsed
	// as HTML.
	dm := []string{
		"hello bob",
		`<img src=x onerror="window.__injected=1"> & <b>not bold</b> <script>window.__injected=2</script>`,
		"hi alice, got both",
	}
	alice.openDM("bob")
	alice.wait("bob shows as online next to the conversation", `document.querySelector('#convlist li[data-conv="dm:alice:bob"] .dot.online') !== null`)
	alice.send(dm[0])
	alice.send(dm[1])
	bob.wait("the conversation with alice shows 2 unread", `document.querySelector('#convlist li[data-conv="dm:alice:bob"]')?.dataset.unread === '2'`)
	bob.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="dm:alice:bob"] button`)))
	bob.waitTexts(dm[:2])
	bob.wait("opening the conversation clears its unread count", `document.querySelector('#convlist li[data-conv="dm:alice:bob"]')?.dataset.unread === '0'`)
	bob.send(dm[2])
	alice.waitTexts(dm)
	for _, p := range []*page{alice, bob} {
		got := evaluate[[]string](p, `[...document.querySelectorAll('#messages img, #messages b, #messages script')].map(e => e.outerHTML)`)
		if len(got) > 0 || evaluate[bool](p, `window.__injected !== undefined`) {
			t.Fatalf("%s: message text was parsed as HTML: %v", p.name, got)
		}
	}

	// A room: alice creates it, bob finds it in the room list and joins.
	room := []string{"morning, lobby", "morning alice"}
	alice.do(chromedp.SendKeys(chromedp.CSS("#room-input"), "lobby\n"))
	alice.waitTitle("#lobby")
	alice.send(room[0])
	bob.do(chromedp.Click(chromedp.CSS("#rooms-refresh")))
	bob.wait("lobby in the room list", `document.querySelector('#roomlist li[data-room="lobby"]') !== null`)
	bob.do(chromedp.Click(chromedp.CSS(`#roomlist li[data-room="lobby"] button`)))
	bob.waitTitle("#lobby")
	bob.waitTexts(room[:1])
	bob.send(room[1])
	alice.waitTexts(room)
	bob.wait("alice shows as online among the members", `document.querySelector('#members li[data-user="alice"] .dot.online') !== null`)

	// Scroll-back: joining shows the newest page of the room; scrolling to
	// the top loads the rest, in order.
	bob.do(chromedp.SendKeys(chromedp.CSS("#room-input"), "archive\n"))
	bob.waitTitle("#archive")
	// The page is of 50 entries: 49 messages and bob's join.
	bob.wait("the newest page of the archive and a way to load more",
		`document.querySelectorAll('#messages li[data-seq]').length === 50 && document.querySelectorAll('#messages li.msg').length === 49 && !document.querySelector('#older').hidden`)
	bob.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#scroller').scrollTop = 0`))
	want := make([]string, archived)
	for i := range want {
		want[i] = archiveText(i)
	}
	bob.waitTexts(want)
	bob.wait("the start of the conversation is shown", `!document.querySelector('#history-start').hidden && document.querySelector('#older').hidden`)

	// Keyboard: Escape leaves the message box for the conversation list,
	// the arrow keys move through it, Enter opens a conversation.
	alice.do(chromedp.Focus(chromedp.CSS("#text")), chromedp.KeyEvent(kb.Escape))
	alice.wait("Escape focuses the open conversation in the list", `document.activeElement?.dataset.conv === 'room:lobby'`)
	alice.do(chromedp.KeyEvent(kb.ArrowDown))
	alice.wait("ArrowDown moves to the next conversation", `document.activeElement?.dataset.conv === 'dm:alice:bob'`)
	alice.do(chromedp.KeyEvent(kb.Enter))
	alice.waitTitle("bob")
	alice.wait("opening a conversation focuses the message box", `document.activeElement?.id === 'text'`)
	bob.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="dm:alice:bob"] button`)))
	bob.waitTexts(dm)

	status := openPage(t, browser, "status")
	status.do(chromedp.Navigate(gw + "/status"))
	status.wait("three live nodes, the leader marked, two connections",
		fmt.Sprintf(`document.querySelectorAll('.node-card[data-state="live"]').length === 3 &&
		 document.querySelector('.node-card.is-leader')?.dataset.node === %q &&
		 document.querySelector('.node-card.is-leader .badge-leader')?.textContent === 'Leader · term 1' &&
		 document.querySelector('#t-conns .value').textContent === '2' &&
		 document.querySelector('#health').dataset.health === 'ok'`, leader))

	alice.screenshot(shots, "chat-alice-direct.png")
	bob.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="room:lobby"] button`)))
	bob.waitTitle("#lobby")
	bob.screenshot(shots, "chat-bob-room.png")
	bob.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="dm:alice:bob"] button`)))
	bob.waitTitle("alice")
	status.screenshot(shots, "status-three-nodes.png")

	// Kill bob's node. His page records every connection state it shows
	// and checks, on every change of the message list, that no text is
	// there twice.
	bob.do(chromedp.Evaluate[chromedp.Void](`(() => {
		window.__states = [];
		const conn = document.querySelector('#conn');
		new MutationObserver(() => window.__states.push(conn.dataset.state))
			.observe(conn, {attributes: true, attributeFilter: ['data-state']});
		window.__dups = [];
		new MutationObserver(() => {
			const seen = new Set();
			for (const e of document.querySelectorAll('#messages li .text, #pending li .text')) {
				if (seen.has(e.textContent)) window.__dups.push(e.textContent);
				seen.add(e.textContent);
			}
		}).observe(document.querySelector('#scroller'), {childList: true, subtree: true, characterData: true});
	})()`))
	killed := time.Now()
	c.Kill(c.Index(bNode))

	away := []string{"are you still there?", "your node went away", "this waits for you"}
	for _, s := range away {
		alice.send(s)
	}
	typed := "typed while reconnecting"
	bob.do(chromedp.SendKeys(chromedp.CSS("#text"), typed), pressEnter)
	alice.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="room:lobby"] button`)))
	alice.waitTitle("#lobby")
	roomAway := "room news while bob was away"
	alice.send(roomAway)

	bob.waitFor(30*time.Second, "bob's page reconnects to another node",
		fmt.Sprintf(`document.querySelector('#conn').dataset.state === 'online' && !['', %q].includes(document.querySelector('#conn').dataset.node)`, bNode))
	t.Logf("bob's page is online again on %s, %s after the kill", evaluate[string](bob, `document.querySelector('#conn').dataset.node`), time.Since(killed).Round(time.Millisecond))
	if states := evaluate[[]string](bob, `window.__states`); !slices.Contains(states, "reconnecting") {
		t.Errorf("bob's page never showed that it was reconnecting; states: %v", states)
	}

	allDM := append(append(append([]string{}, dm...), away...), typed)
	bob.waitTextSet(allDM)
	alice.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="dm:alice:bob"] button`)))
	alice.waitTitle("bob")
	alice.waitTextSet(allDM)
	checkSameOrder(t, alice, bob)
	bob.screenshot(shots, "chat-bob-after-reconnect.png")

	bob.wait("the room shows 1 unread: the message posted while bob was away",
		`document.querySelector('#convlist li[data-conv="room:lobby"]')?.dataset.unread === '1'`)
	bob.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="room:lobby"] button`)))
	bob.waitTitle("#lobby")
	bob.waitTexts(append(append([]string{}, room...), roomAway))
	alice.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="room:lobby"] button`)))
	alice.waitTexts(append(append([]string{}, room...), roomAway))
	if dups := evaluate[[]string](bob, `window.__dups`); len(dups) > 0 {
		t.Errorf("bob's page showed messages twice at some point: %q", dups)
	}
	alice.wait("bob shows as online again next to the conversation", `document.querySelector('#convlist li[data-conv="dm:alice:bob"] .dot.online') !== null`)

	status.wait("the killed node is shown as gone, and two live nodes",
		fmt.Sprintf(`document.querySelector('.node-card[data-node=%q]')?.dataset.state === 'gone' &&
		 document.querySelectorAll('.node-card[data-state="live"]').length === 2 &&
		 document.querySelector('#health').dataset.health === 'warn'`, bNode))
	status.screenshot(shots, "status-after-kill.png")

	// A graceful stop of bob's new node: the node tells the page to move
	// (the "node" push), and it does, to the last node.
	moved := evaluate[string](bob, `document.querySelector('#conn').dataset.node`)
	bob.do(chromedp.Evaluate[chromedp.Void](`window.__states = []`))
	c.Stop(c.Index(moved))
	bob.waitFor(30*time.Second, "bob's page moves off the node that stops",
		fmt.Sprintf(`document.querySelector('#conn').dataset.state === 'online' && !['', %q, %q].includes(document.querySelector('#conn').dataset.node)`, bNode, moved))
	if states := evaluate[[]string](bob, `window.__states`); !slices.Contains(states, "reconnecting") {
		t.Errorf("bob's page never showed that it was reconnecting from %s; states: %v", moved, states)
	}
	bob.waitTexts(append(append([]string{}, room...), roomAway))
	bob.send("still here after two moves")

	// A login of bob elsewhere kicks the page: it says so and stays
	// disconnected until asked to come back.
	other := bobElsewhere(t, c)
	bob.wait("the page says bob logged in elsewhere", `document.querySelector('#conn').dataset.state === 'kicked' && !document.querySelector('#banner').hidden`)
	bob.screenshot(shots, "chat-bob-kicked.png")
	other.Close()
	bob.do(chromedp.Click(chromedp.CSS("#banner-btn")))
	bob.waitFor(30*time.Second, "the page is back online after 'Use chat here'", `document.querySelector('#conn').dataset.state === 'online' && document.querySelector('#banner').hidden`)
	if dups := evaluate[[]string](bob, `window.__dups`); len(dups) > 0 {
		t.Errorf("bob's page showed messages twice at some point: %q", dups)
	}

	// Phone width: one column. Escape goes from the open conversation back
	// to the list; opening a conversation fills the screen with it.
	alice.do(chromedp.EmulateViewport(390, 844))
	alice.wait("the open conversation fills a phone screen", `getComputedStyle(document.querySelector('#sidebar')).display === 'none'`)
	alice.do(chromedp.Focus(chromedp.CSS("#text")), chromedp.KeyEvent(kb.Escape))
	alice.wait("Escape shows the list on a phone", `getComputedStyle(document.querySelector('#sidebar')).display !== 'none' && getComputedStyle(document.querySelector('#chat')).display === 'none'`)
	alice.screenshot(shots, "chat-phone-list.png")
	alice.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="dm:alice:bob"] button`)))
	alice.wait("the conversation fills a phone screen", `getComputedStyle(document.querySelector('#sidebar')).display === 'none' && document.querySelector('#conv-title').textContent === 'bob'`)
	alice.screenshot(shots, "chat-phone-conversation.png")

	for _, p := range []*page{alice, bob, status} {
		p.checkConsole()
	}
}

// TestBrowserStatus checks, in headless Chromium against a real two-node
// cluster, that the status page shows the leader's term (1, 2, ... one per
// leader, as GET /api/cluster reports it) beside its epoch, and that the
// node cards keep their badges on the name's line and their WebSocket URLs
// whole, at a normal width, with the cards at their narrowest, and at a
// phone width. Then the leader stops, and the page shows its successor
// with term 2. Screenshots go to test-output/web/status-*.png.
func TestBrowserStatus(t *testing.T) {
	chrome := chromiumPath(t)
	shots := screenshotDir(t)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2})
	leader := c.WaitLeader(t)
	testenv.WaitFor(t, 15*time.Second, "the leader links to every node", func() bool { return linked(c) })
	var v clusterView
	testenv.WaitFor(t, 15*time.Second, "the gateway reports the leader's term", func() bool {
		v = readCluster(t, c)
		return v.Leader == leader && v.Term > 0
	})
	if v.Term != 1 || v.Epoch <= 0 {
		t.Fatalf("the first leader of a new cluster: term %d, epoch %d; want term 1 and an epoch", v.Term, v.Epoch)
	}

	browser := startBrowser(t, chrome)
	status := openPage(t, browser, "status")
	status.do(chromedp.Navigate(c.GatewayURL() + "/status"))
	status.wait("the leader with its term and epoch", fmt.Sprintf(
		`document.querySelector('#t-leader .value').textContent === %q &&
		 document.querySelector('#t-leader .sub').textContent.startsWith('term 1 · epoch %d') &&
		 document.querySelector('.node-card.is-leader .badge-leader')?.textContent === 'Leader · term 1' &&
		 document.querySelectorAll('.node-card[data-state="live"]').length === 2`, leader, v.Epoch))

	for _, size := range []struct {
		w, h int
		shot string
	}{
		{1280, 860, "status-wide.png"},
		{624, 860, "status-medium.png"}, // two columns of cards at their narrowest (19em)
		{360, 800, "status-narrow.png"},
	} {
		status.do(chromedp.EmulateViewport(int64(size.w), int64(size.h)))
		for _, card := range evaluate[[]cardLayout](status, jsCardLayout) {
			if !card.SameLine {
				t.Errorf("%d px: the badges of %s are not on the line of its name: %s", size.w, card.Node, card.Boxes)
			}
			if card.Clipped {
				t.Errorf("%d px: the name %s is cut short", size.w, card.Node)
			}
			if want := nodeWS(v, card.Node); card.URL != want || card.URLLines != 1 || !card.URLInside {
				t.Errorf("%d px: %s's WebSocket URL shows as %q on %d lines (inside the card: %v); want %q whole on one line",
					size.w, card.Node, card.URL, card.URLLines, card.URLInside, want)
			}
		}
		status.screenshot(shots, size.shot)
	}

	// The leader stops; its successor counts the next term.
	c.Stop(c.Index(leader))
	next := c.Node(1 - c.Index(leader)).ID
	status.waitFor(30*time.Second, "the new leader with term 2", fmt.Sprintf(
		`document.querySelector('#t-leader .value').textContent === %q &&
		 document.querySelector('#t-leader .sub').textContent.startsWith('term 2 · epoch ') &&
		 document.querySelector('.node-card.is-leader')?.dataset.node === %q &&
		 document.querySelector('.node-card.is-leader .badge-leader')?.textContent === 'Leader · term 2'`, next, next))
	if v2 := readCluster(t, c); v2.Leader != next || v2.Term != 2 || v2.Epoch <= v.Epoch {
		t.Errorf("after the leader stopped: leader %s, term %d, epoch %d; want %s, term 2, an epoch above %d", v2.Leader, v2.Term, v2.Epoch, next, v.Epoch)
	}
	status.screenshot(shots, "status-new-leader.png")
	status.checkConsole()
}

// TestBrowserSupport drives customer service in headless Chromium against
// a real two-node cluster: ann, an agent of capacity 1, works in the chat
// page's console; visitors A and B open the support page. A is assigned to
// ann at once, B waits and its page shows its place; ann sees A's
// conversation with its unread message, answers, and A's page shows the
// answer, also after a reload. ann closes A's conversation: A's page says
// so and offers a new one, B's page shows ann, and ann's console holds B.
// A's new conversation waits behind B. Screenshots go to
// test-output/web/support-*.png.
func TestBrowserSupport(t *testing.T) {
	chrome := chromiumPath(t)
	shots := screenshotDir(t)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2})
	c.WaitLeader(t)
	testenv.WaitFor(t, 15*time.Second, "the leader links to every node", func() bool { return linked(c) })
	gw := c.GatewayURL()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := (&chatclient.Gateway{URL: gw}).Register(ctx, "ann", password); err != nil {
		t.Fatalf("register ann: %v", err)
	}
	c.Admin(t, "agent", "add", "ann", "--capacity", "1")
	waitAgent(t, c, "ann")

	browser := startBrowser(t, chrome)
	ann := openPage(t, browser, "ann")
	ann.do(chromedp.Navigate(gw+"/"), chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "ann"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#login-btn")))
	ann.wait("ann online with the support console", `document.querySelector('#conn').dataset.state === 'online' && !document.querySelector('#support').hidden`)
	ann.do(chromedp.Click(chromedp.CSS("#agent-available")))
	ann.wait("ann available", `document.querySelector('#agent-available').getAttribute('aria-pressed') === 'true' &&
		document.querySelector('#agent-load').textContent.startsWith('0 of 1 ')`)

	// Visitor A, whose name would run script if it were parsed as HTML,
	// is assigned at once.
	const nameA = `Vera <img src=x onerror="window.__injected=1">`
	a := openPage(t, browser, "visitor A")
	a.do(chromedp.Navigate(gw+"/support"), chromedp.WaitVisible(chromedp.CSS("#start-form")))
	a.screenshot(shots, "support-start.png")
	a.do(chromedp.SendKeys(chromedp.CSS("#name"), nameA), chromedp.Click(chromedp.CSS("#start-btn")))
	a.waitState("assigned", "You are talking to ann")
	convA := evaluate[string](a, `JSON.parse(localStorage.getItem('support.visitor')).conv`)
	ann.wait("A's conversation in ann's console", fmt.Sprintf(
		`document.querySelectorAll('#support-convs li').length === 1 &&
		 document.querySelector('#support-convs li[data-conv=%q] .conv-name')?.textContent === %q`, convA, nameA))

	// Visitor B waits: ann holds all she may.
	b := openPage(t, browser, "visitor B")
	b.do(chromedp.Navigate(gw+"/support"), chromedp.WaitVisible(chromedp.CSS("#start-form")),
		chromedp.SendKeys(chromedp.CSS("#name"), "Bo"), chromedp.Click(chromedp.CSS("#start-btn")))
	b.waitState("queued", "You are number 1 in the queue (1 waiting)")
	ann.waitFor(30*time.Second, "the queue of one in ann's console", `document.querySelector('#queue-info').dataset.length === '1' &&
		document.querySelector('#queue-info').textContent.startsWith('Queue: 1 waiting · oldest ')`)

	// A writes; ann sees it unread, opens the conversation and answers.
	talk := []string{"my order is late", "hello Vera, how can I help?", "it is order 42"}
	a.send(talk[0])
	ann.wait("A's message unread in ann's console", fmt.Sprintf(`document.querySelector('#support-convs li[data-conv=%q]')?.dataset.unread === '1'`, convA))
	ann.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`#support-convs li[data-conv=%q] button`, convA))))
	ann.waitTitle(nameA)
	ann.waitTexts(talk[:1])
	ann.wait("opening it clears the unread count", fmt.Sprintf(`document.querySelector('#support-convs li[data-conv=%q]')?.dataset.unread === '0' && !document.querySelector('#cs-tools').hidden`, convA))
	ann.send(talk[1])
	a.waitTexts(talk[:2])
	a.send(talk[2])
	ann.waitTexts(talk)
	if got := evaluate[[]string](ann, `[...document.querySelectorAll('#support img, #conv img')].map(e => e.outerHTML)`); len(got) > 0 || evaluate[bool](ann, `window.__injected !== undefined`) {
		t.Fatalf("ann: the visitor's name was parsed as HTML: %v", got)
	}

	// The visitor's history, across their conversations.
	ann.do(chromedp.Click(chromedp.CSS("#cs-history-btn")))
	ann.wait("the visitor's history", `document.querySelectorAll('#cs-history-list li.msg').length === 3 &&
		document.querySelector('#cs-history-convs').textContent.startsWith('1 conversation')`)
	ann.screenshot(shots, "support-agent.png")

	// A reload resumes the same conversation.
	a.do(chromedp.Reload())
	a.waitState("assigned", "You are talking to ann")
	a.waitTexts(talk)
	if again := evaluate[string](a, `JSON.parse(localStorage.getItem('support.visitor')).conv`); again != convA {
		t.Fatalf("A's page after a reload shows %s, want %s", again, convA)
	}

	// ann closes A's conversation: A's page says so; B's is assigned to
	// ann, and her console holds B's.
	ann.do(chromedp.Click(chromedp.CSS("#cs-close")))
	a.waitState("closed", "The conversation was closed")
	a.wait("a button to start a new conversation", `!document.querySelector('#closed').hidden && document.querySelector('#text').disabled`)
	a.screenshot(shots, "support-closed.png")
	b.waitFor(30*time.Second, "B assigned to ann", `document.querySelector('#state').dataset.state === 'assigned' && document.querySelector('#state').textContent === 'You are talking to ann'`)
	convB := evaluate[string](b, `JSON.parse(localStorage.getItem('support.visitor')).conv`)
	ann.wait("B's conversation, and A's no longer, in ann's console", fmt.Sprintf(
		`document.querySelectorAll('#support-convs li').length === 1 && document.querySelector('#support-convs li[data-conv=%q] .conv-name')?.textContent === 'Bo' &&
		 document.querySelector('#queue-info').dataset.length === '0'`, convB))

	// A starts again and waits behind B.
	a.do(chromedp.Click(chromedp.CSS("#new-conv")))
	a.waitState("queued", "You are number 1 in the queue (1 waiting)")
	a.waitTexts([]string{})
	if next := evaluate[string](a, `JSON.parse(localStorage.getItem('support.visitor')).conv`); next == convA || next == "" {
		t.Fatalf("A's new conversation is %q, want one after %s", next, convA)
	}

	// The page at a phone's width: nothing wider than the screen, touch
	// targets of 44 px.
	b.do(chromedp.EmulateViewport(390, 844))
	b.wait("the support page fits a phone", `document.documentElement.scrollWidth <= window.innerWidth &&
		document.querySelector('#send').getBoundingClientRect().height >= 44 &&
		document.querySelector('#text').getBoundingClientRect().height >= 44`)
	b.send("sent from a phone")
	b.screenshot(shots, "support-phone.png")

	for _, p := range []*page{ann, a, b} {
		p.checkConsole()
	}
}

// waitAgent waits until the leader knows name as an agent (it reads the
// operator's changes every few seconds), so that the page's first
// agentStatus finds it.
func waitAgent(t *testing.T, c *testenv.Cluster, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	conn, err := chatclient.Dial(ctx, c.Node(0).WSURL, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		for range conn.Pushes() {
		}
	}()
	if _, err := conn.Login(ctx, name, password); err != nil {
		t.Fatalf("%s logs in: %v", name, err)
	}
	testenv.WaitFor(t, 30*time.Second, name+" is an agent", func() bool {
		_, err := conn.AgentStatus(ctx, "")
		return err == nil
	})
}

// waitState waits until the support page shows the conversation in state
// with text.
func (p *page) waitState(state, text string) {
	p.t.Helper()
	p.waitFor(30*time.Second, fmt.Sprintf("the support page to say %q", text), fmt.Sprintf(
		`document.querySelector('#state').dataset.state === %q && document.querySelector('#state').textContent === %q`, state, text))
}

// clusterView is what the status test reads of GET /api/cluster.
type clusterView struct {
	Leader string `json:"leader"`
	Epoch  int64  `json:"epoch"`
	Term   int64  `json:"term"`
	Nodes  []struct {
		ID string `json:"id"`
		WS string `json:"ws"`
	} `json:"nodes"`
}

func readCluster(t *testing.T, c *testenv.Cluster) clusterView {
	t.Helper()
	var v clusterView
	resp, err := http.Get(c.GatewayURL() + "/api/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET /api/cluster: %v", err)
	}
	return v
}

func nodeWS(v clusterView, id string) string {
	for _, n := range v.Nodes {
		if n.ID == id {
			return n.WS
		}
	}
	return ""
}

// cardLayout is how a node card is laid out (jsCardLayout).
type cardLayout struct {
	Node      string `json:"node"`
	SameLine  bool   `json:"sameLine"`  // every badge is right of the name and overlaps its line
	Clipped   bool   `json:"clipped"`   // the name does not fit its box
	URL       string `json:"url"`       // the WebSocket URL as shown
	URLLines  int    `json:"urlLines"`  // the lines it takes
	URLInside bool   `json:"urlInside"` // it stays inside the card
	Boxes     string `json:"boxes"`     // the boxes compared, for a failure message
}

// jsCardLayout measures every node card of the status page. The lines a
// text takes are the distinct tops of its line boxes.
const jsCardLayout = `[...document.querySelectorAll('.node-card')].map(card => {
	const name = card.querySelector('h3');
	const h = name.getBoundingClientRect();
	const badges = [...card.querySelectorAll('.tags > *')].map(b => b.getBoundingClientRect());
	const url = card.querySelector('dd.url');
	const range = document.createRange();
	range.selectNodeContents(url);
	const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
	const u = range.getBoundingClientRect(), c = card.getBoundingClientRect();
	const box = r => '[' + [r.left, r.top, r.right, r.bottom].map(Math.round).join(' ') + ']';
	return {
		node: card.dataset.node,
		sameLine: badges.length > 0 && badges.every(b => b.left >= h.right && b.top < h.bottom && b.bottom > h.top),
		clipped: name.scrollWidth > name.clientWidth,
		url: url.textContent,
		urlLines: tops.size,
		urlInside: u.left >= c.left && u.right <= c.right,
		boxes: 'name ' + box(h) + ', badges ' + badges.map(box).join(' '),
	};
})`

// bobElsewhere logs bob in with the Go client, which kicks his page.
func bobElsewhere(t *testing.T, c *testenv.Cluster) *chatclient.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := (&chatclient.Gateway{URL: c.GatewayURL()}).Nodes(ctx)
	if err != nil || len(nodes.Nodes) == 0 {
		t.Fatalf("nodes: %+v, %v", nodes, err)
	}
	conn, err := chatclient.Dial(ctx, nodes.Nodes[0].WS, 1024)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range conn.Pushes() {
		}
	}()
	if _, err := conn.Login(ctx, "bob", password); err != nil {
		conn.Close()
		t.Fatalf("bob logs in elsewhere: %v", err)
	}
	return conn
}

func archiveText(i int) string { return fmt.Sprintf("archive message %02d", i) }

// carolPosts registers carol and has her post n messages to room.
func carolPosts(t *testing.T, c *testenv.Cluster, room string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := &chatclient.Gateway{URL: c.GatewayURL()}
	if err := g.Register(ctx, "carol", password); err != nil {
		t.Fatalf("register carol: %v", err)
	}
	conn, err := chatclient.Dial(ctx, c.Node(c.Len()-1).WSURL, 1024)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() { // nothing to read, but the pushes must be drained
		for range conn.Pushes() {
		}
	}()
	if _, err := conn.Login(ctx, "carol", password); err != nil {
		t.Fatalf("carol logs in: %v", err)
	}
	if _, err := conn.JoinRoom(ctx, room); err != nil {
		t.Fatalf("carol joins %s: %v", room, err)
	}
	for i := 0; i < n; i++ {
		if _, err := conn.ChatRoom(ctx, room, archiveText(i), fmt.Sprintf("carol-%d", i)); err != nil {
			t.Fatalf("carol posts %d: %v", i, err)
		}
	}
}

// checkSameOrder checks that both pages show the open conversation in the
// same order, by strictly increasing seq.
func checkSameOrder(t *testing.T, a, b *page) {
	t.Helper()
	ta, tb := evaluate[[]string](a, jsTexts), evaluate[[]string](b, jsTexts)
	if !slices.Equal(ta, tb) {
		t.Fatalf("%s and %s show the conversation in different orders:\n%q\n%q", a.name, b.name, ta, tb)
	}
	for _, p := range []*page{a, b} {
		seqs := evaluate[[]int](p, `[...document.querySelectorAll('#messages li.msg')].map(li => +li.dataset.seq)`)
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1] {
				t.Fatalf("%s shows seq %d after seq %d: %v", p.name, seqs[i], seqs[i-1], seqs)
			}
		}
	}
}

// linked reports whether the gateway lists a leader that holds a peer
// link to every live node.
func linked(c *testenv.Cluster) bool {
	resp, err := http.Get(c.GatewayURL() + "/api/cluster")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var v struct {
		Leader string `json:"leader"`
		Nodes  []struct {
			Linked bool `json:"linked"`
		} `json:"nodes"`
	}
	if json.NewDecoder(resp.Body).Decode(&v) != nil || v.Leader == "" || len(v.Nodes) != c.Len() {
		return false
	}
	for _, n := range v.Nodes {
		if !n.Linked {
			return false
		}
	}
	return true
}

// ---- the browser --------------------------------------------------------------

// chromiumPath finds Debian's chromium. The test does not skip without
// it: deploy/install.sh installs it, and make test runs that first.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHAT_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: the browser tests need it. Run deploy/install.sh (as root), " +
		"which `make test` runs first, or set CHAT_TEST_CHROMIUM to a Chrome or Chromium binary")
	return ""
}

// screenshotDir is test-output/web/ at the repository root (ignored by git).
func screenshotDir(t *testing.T) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "test-output", "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startBrowser starts headless Chromium for the test; it is stopped when
// the test ends.
func startBrowser(t *testing.T, chrome string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // root in CI containers; the pages are our own
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 860),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", chrome, err)
	}
	return ctx
}

// page is one browser tab, in a browser context of its own (its own
// storage, like another browser), with the console messages it wrote.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage // guarded by mu
}

func openPage(t *testing.T, browser context.Context, name string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: opening a tab: %v", name, err)
	}
	p := &page{t: t, name: name, ctx: ctx}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, m)
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *page) do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v\n%s", p.name, err, p.describe())
	}
}

func evaluate[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("%s: evaluating %s: %v", p.name, expr, err)
	}
	return v
}

// wait waits until the JavaScript condition cond is true in the page.
func (p *page) wait(what, cond string) {
	p.t.Helper()
	p.waitFor(pageTimeout, what, cond)
}

// holdsWithin reports whether cond becomes true within timeout.
func (p *page) holdsWithin(timeout time.Duration, cond string) bool {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(25*time.Millisecond)))
	return err == nil
}

func (p *page) waitFor(timeout time.Duration, what, cond string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(25*time.Millisecond)))
	if err != nil {
		p.t.Fatalf("%s: waiting for %s: %v\n%s", p.name, what, err, p.describe())
	}
}

// jsTexts lists the texts of the messages shown, in order (without the
// ones still being sent).
const jsTexts = `[...document.querySelectorAll('#messages li.msg')].map(li => li.querySelector('.text').textContent)`

// waitTexts waits until the open conversation shows exactly texts, in
// this order, and nothing is waiting to be sent.
func (p *page) waitTexts(texts []string) {
	p.t.Helper()
	want, _ := json.Marshal(texts)
	p.wait(fmt.Sprintf("the messages %q", texts),
		fmt.Sprintf(`JSON.stringify(%s) === JSON.stringify(%s) && document.querySelectorAll('#pending li').length === 0`, jsTexts, want))
}

// byCodeUnits is a JavaScript comparison for sort.
const byCodeUnits = `((a, b) => a < b ? -1 : a > b ? 1 : 0)`

// waitTextSet waits until the open conversation shows exactly texts, each
// once, in any order, and nothing is waiting to be sent.
func (p *page) waitTextSet(texts []string) {
	p.t.Helper()
	want, _ := json.Marshal(texts)
	p.waitFor(30*time.Second, fmt.Sprintf("each of the messages %q once", texts),
		fmt.Sprintf(`JSON.stringify(%s.sort(%s)) === JSON.stringify(%s.sort(%s)) && document.querySelectorAll('#pending li').length === 0`, jsTexts, byCodeUnits, want, byCodeUnits))
}

func (p *page) waitOnline(node string) {
	p.t.Helper()
	p.wait("online on "+node, fmt.Sprintf(`document.querySelector('#conn').dataset.state === 'online' && document.querySelector('#conn').dataset.node === %q`, node))
}

func (p *page) waitTitle(title string) {
	p.t.Helper()
	p.wait("the conversation "+title+" to open", fmt.Sprintf(`document.querySelector('#conv-title').textContent === %q && !document.querySelector('#conv').hidden`, title))
}

// openDM opens the direct conversation with user from the "Message a
// user" box.
func (p *page) openDM(user string) {
	p.t.Helper()
	p.do(chromedp.SendKeys(chromedp.CSS("#newchat-input"), user+"\n"))
	p.waitTitle(user)
	p.wait("the message box has the focus", `document.activeElement?.id === 'text'`)
}

// send types text into the message box, presses Enter, and waits until
// the message is stored (shown with its seq, no longer pending).
func (p *page) send(text string) {
	p.t.Helper()
	p.do(chromedp.SendKeys(chromedp.CSS("#text"), text), pressEnter)
	want, _ := json.Marshal(text)
	p.wait(fmt.Sprintf("%q to be sent", text), fmt.Sprintf(`%s.includes(%s)`, jsTexts, want))
}

// pressEnter presses Enter in the focused element as a user does: key
// down and key up. (SendKeys adds a separate "char" event, which the
// browser does not suppress when the page handles the key down, so a new
// line would land in the emptied message box.)
var pressEnter = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
	for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
		_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{
			Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
		})
		if err != nil {
			return err
		}
	}
	return nil
})

func (p *page) screenshot(dir, name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, pageTimeout)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("%s: screenshot: %v", p.name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot of %s: %s", p.name, path)
}

// describe sums up the page for a failure message.
func (p *page) describe() string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.pathname + location.search,
		conn: document.querySelector('#conn')?.dataset,
		connText: document.querySelector('#conn')?.textContent,
		title: document.querySelector('#conv-title')?.textContent,
		messages: [...document.querySelectorAll('#messages li.msg')].map(li => li.dataset.seq + ' ' + li.querySelector('.text').textContent),
		pending: [...document.querySelectorAll('#pending li')].map(li => li.dataset.state + ' ' + li.textContent),
		convs: [...document.querySelectorAll('#convlist li')].map(li => li.dataset.conv + ' unread=' + li.dataset.unread),
		errors: [...document.querySelectorAll('.error')].map(e => e.textContent).filter(Boolean),
		notice: document.querySelector('#notice')?.textContent,
		supportState: document.querySelector('#state')?.dataset.state + ' ' + document.querySelector('#state')?.textContent,
		supportConvs: [...document.querySelectorAll('#support-convs li')].map(li => li.dataset.conv + ' unread=' + li.dataset.unread),
		queue: document.querySelector('#queue-info')?.textContent,
	}, null, 1)`))
	if err != nil {
		return "(page state unavailable: " + err.Error() + ")"
	}
	return "page state: " + s
}

// checkConsole fails the test for script errors and security messages
// (a Content-Security-Policy violation, for one). Failed WebSocket
// connections to the killed node are expected and only logged.
func (p *page) checkConsole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.console {
		bad := m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") || m.Source == "security"
		if bad && !strings.Contains(m.Text, "WebSocket connection to") {
			p.t.Errorf("%s: console %s (%s): %s at %s:%d", p.name, m.Type, m.Source, m.Text, m.URL, m.Line+1)
		} else if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning {
			p.t.Logf("%s: console %s (%s): %s", p.name, m.Type, m.Source, m.Text)
		}
	}
}

// TestBrowserEventsAndReceipts drives two pages on two nodes through what
// happens around a message: bob sees alice typing, alice sees that bob
// has seen her message, bob sees her edit ("(edited)", the new text) and
// her recall ("message recalled"), and a room shows who joined.
func TestBrowserEventsAndReceipts(t *testing.T) {
	chrome := chromiumPath(t)
	shots := screenshotDir(t)
	c := testenv.StartCluster(t, testenv.Options{Nodes: 2, Env: []string{"CHAT_RATE_LIMIT=100000"}})
	c.WaitLeader(t)
	testenv.WaitFor(t, 15*time.Second, "the leader links to every node", func() bool { return linked(c) })
	gw := c.GatewayURL()
	browser := startBrowser(t, chrome)
	alice := openPage(t, browser, "alice")
	bob := openPage(t, browser, "bob")
	for i, p := range []*page{alice, bob} {
		node := c.Node(i).ID
		p.do(chromedp.Navigate(gw+"/?node="+node), chromedp.WaitVisible(chromedp.CSS("#login-form")),
			chromedp.SendKeys(chromedp.CSS("#username"), p.name),
			chromedp.SendKeys(chromedp.CSS("#password"), password),
			chromedp.Click(chromedp.CSS("#register-btn")))
		p.waitOnline(node)
	}

	alice.openDM("bob")
	alice.send("helo bob")
	alice.send("this one goes")
	bob.wait("the conversation with alice", `document.querySelector('#convlist li[data-conv="dm:alice:bob"] button') !== null`)
	bob.do(chromedp.Click(chromedp.CSS(`#convlist li[data-conv="dm:alice:bob"] button`)))
	bob.waitTexts([]string{"helo bob", "this one goes"})

	// Typing: a typing push is best-effort, so alice types on until bob
	// sees it (the page sends one a second at most).
	typing := `!document.querySelector('#typing').hidden && document.querySelector('#typing').textContent === 'alice is typing…'`
	for deadline := time.Now().Add(30 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("bob never saw alice typing; %s", bob.describe())
		}
		alice.do(chromedp.SendKeys(chromedp.CSS("#text"), "x"))
		// A little over the second after which the page sends another.
		if bob.holdsWithin(1500*time.Millisecond, typing) {
			break
		}
	}
	alice.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#text').value = ''`))

	// Read mark: bob has the conversation open, so his page marks it read;
	// alice's last message shows "Seen".
	alice.wait("alice's last message shows Seen", `document.querySelector('#messages li.msg.own:last-of-type .seen')?.textContent === 'Seen'`)

	// Edit: alice edits her first message in place.
	alice.do(chromedp.Click(chromedp.CSS(`#messages li.msg.own[data-seq="1"] .edit-btn`)))
	alice.wait("the edit field", `document.querySelector('#messages li.editing .edit-input') !== null`)
	alice.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('#messages li.editing .edit-input').value = 'hello bob'`),
		chromedp.Focus(chromedp.CSS(`#messages li.editing .edit-input`)), pressEnter)
	for _, p := range []*page{alice, bob} {
		p.wait(p.name+" sees the edit", `(() => { const li = document.querySelector('#messages li.msg[data-seq="1"]');
			return li?.querySelector('.text')?.textContent === 'hello bob' && li.querySelector('.edited')?.textContent === '(edited)'; })()`)
	}

	// Recall: alice takes back her second message.
	alice.do(chromedp.Click(chromedp.CSS(`#messages li.msg.own[data-seq="2"] .recall-btn`)))
	for _, p := range []*page{alice, bob} {
		p.wait(p.name+" sees the recall", `(() => { const li = document.querySelector('#messages li.msg[data-seq="2"]');
			return li?.classList.contains('recalled') && li.querySelector('.text')?.textContent === 'message recalled'; })()`)
	}
	bob.screenshot(shots, "chat-events.png")

	// A room: alice makes it, bob joins, and alice's page says so.
	alice.do(chromedp.SendKeys(chromedp.CSS("#room-input"), "den\n"))
	alice.waitTitle("#den")
	bob.do(chromedp.Click(chromedp.CSS("#rooms-refresh")))
	bob.wait("den in the room list", `document.querySelector('#roomlist li[data-room="den"]') !== null`)
	bob.do(chromedp.Click(chromedp.CSS(`#roomlist li[data-room="den"] button`)))
	bob.waitTitle("#den")
	alice.wait("alice sees bob join", `[...document.querySelectorAll('#messages li.event.member')].some(li => li.textContent === 'bob joined')`)
	alice.checkConsole()
	bob.checkConsole()
}
