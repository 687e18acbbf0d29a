package web_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"chatcluster/web"
)

// storeChecks runs in the browser against the client's store module
// (static/chat/store.js) and returns what went wrong: message order and
// dedupe, the sync offset ("top"), the outbox that never shows a message
// twice, and names as the server orders them.
const storeChecks = `(async () => {
  const { Store, dmConv, validName } = await import('/static/chat/store.js');
  const bad = [];
  const check = (what, got, want) => {
    const g = JSON.stringify(got), w = JSON.stringify(want);
    if (g !== w) bad.push(what + ': got ' + g + ', want ' + w);
  };
  const msg = (conv, seq, from, extra = {}) => ({ id: conv + '#' + seq, conv, seq, from, text: 't' + seq, ts: Date.now(), ...extra });

  // Order, dedupe, top, gaps and unread.
  let s = new Store();
  s.reset('alice');
  const cv = 'dm:alice:bob';
  let gaps = s.add([msg(cv, 1, 'bob'), msg(cv, 3, 'bob')], { countUnread: true });
  check('a gap is reported', gaps, [cv]);
  let c = s.conv(cv);
  check('top stops below the gap', c.top, 1);
  s.add([msg(cv, 2, 'bob'), msg(cv, 3, 'bob'), msg(cv, 1, 'bob')], { countUnread: true });
  check('seq order, each once', c.msgs.map((m) => m.seq), [1, 2, 3]);
  check('top after the gap is filled', c.top, 3);
  check('unread counts new messages only', c.unread, 3);
  s.setActive(cv);
  check('opening clears unread', c.unread, 0);
  s.add([msg(cv, 4, 'bob')], { countUnread: true });
  check('the open conversation does not count', c.unread, 0);
  s.add([{ ...msg(cv, 4, 'bob'), text: 'masked' }]);
  check('the stored text replaces a held one', c.msgs[3].text, 'masked');

  // Outbox: a copy that arrives before the reply hides the pending entry.
  s = new Store();
  s.reset('alice');
  const room = 'room:lobby';
  s.conv(room);
  const e1 = s.enqueue(room, 'one');
  s.setState(e1, 'sending');
  check('pending while sending', s.pending(room).length, 1);
  s.add([msg(room, 1, 'alice', { room: 'lobby', text: 'one' })]);
  check('the copy hides the entry', s.pending(room).length, 0);
  s.ack(e1, { id: room + '#1', conv: room, seq: 1, ts: Date.now() }, 'alice');
  check('once after the reply', s.conv(room).msgs.map((m) => m.text), ['one']);
  check('outbox empty', s.outbox.length, 0);

  // Two entries whose copies come in the other order.
  const e2 = s.enqueue(room, 'two');
  const e3 = s.enqueue(room, 'three');
  s.setState(e2, 'sending');
  s.setState(e3, 'sending');
  s.add([msg(room, 3, 'alice', { room: 'lobby', text: 'three' })]);
  check('one entry hidden', s.pending(room).length, 1);
  s.ack(e2, { id: room + '#2', conv: room, seq: 2, ts: Date.now() }, 'alice');
  check('the other entry takes the copy', [s.pending(room).length, e3.shadow], [0, room + '#3']);
  s.ack(e3, { id: room + '#3', conv: room, seq: 3, ts: Date.now() }, 'alice');
  check('each message once', s.conv(room).msgs.map((m) => m.text), ['one', 'two', 'three']);

  // The reply first, then the copy (a room push after the reply).
  const e4 = s.enqueue(room, 'four');
  s.setState(e4, 'sending');
  s.ack(e4, { id: room + '#4', conv: room, seq: 4, ts: Date.now() }, 'alice');
  s.add([msg(room, 4, 'alice', { room: 'lobby', text: 'four' })]);
  check('a late copy changes nothing', [s.conv(room).msgs.length, s.pending(room).length], [4, 0]);

  // A room left: its late pushes are dropped.
  s.removeConv(room);
  s.add([msg(room, 5, 'bob')]);
  check('a left room stays gone', s.conv(room, false), undefined);

  // Support conversations are held only while tracked.
  s = new Store();
  s.reset('ann');
  const cs = 'cs:~v1:2';
  s.add([msg(cs, 1, '~v1')], { countUnread: true });
  check('an untracked support conversation is dropped', s.conv(cs, false), undefined);
  s.track(cs);
  s.add([msg(cs, 1, '~v1'), msg(cs, 2, '~v1')], { countUnread: true });
  check('a tracked one holds its messages and unread', [s.conv(cs).msgs.length, s.conv(cs).unread, s.conv(cs).name], [2, 2, '~v1']);
  s.conv('dm:ann:bob');
  check('the conversation list leaves support out', s.sortedConvs().map((c) => c.id), ['dm:ann:bob']);
  check('the support list', s.supportConvs().map((c) => c.id), [cs]);
  const e5 = s.enqueue(cs, 'hello');
  check('a reply goes to the conversation', e5.target, { conv: cs });
  s.untrack(cs);
  check('untracked: gone with its outbox', [s.conv(cs, false), s.outbox.length], [undefined, 0]);
  check('nothing to send to an untracked one', s.enqueue(cs, 'late'), null);
  check('malformed support ids', ['cs:~v1', 'cs::1', 'cs:~v1:0', 'cs:~v1:x'].map((id) => s.track(id) !== undefined), [false, false, false, false]);

  // Names: ordered by UTF-8 bytes as the server orders them.
  check('dm order', dmConv('Zoe', 'adam'), 'dm:Zoe:adam');
  check('dm order by UTF-8 bytes', dmConv('\u{1D49C}', '\uFF5A'), 'dm:\uFF5A:\u{1D49C}');
  check('valid names', ['alice', 'li.wei', '张伟', 'a-b_c'].map(validName), [true, true, true, true]);
  check('invalid names', ['', 'a b', 'a:b', '<x>', 'x'.repeat(33)].map(validName), [false, false, false, false, false]);
  // Events: an edit or recall changes the message it names, whichever
  // arrives first; a recall is final; the later edit wins.
  s = new Store();
  s.reset('alice');
  const ev = (seq, kind, ref, text, extra = {}) => msg(cv, seq, 'alice', { kind, ref, text, ...extra });
  let got = [];
  s.addEventListener('messages', (e) => { got = e.detail.updated.map((m) => m.seq); });
  s.add([msg(cv, 1, 'alice')]);
  s.add([ev(2, 'edit', 1, 'first fix')]);
  c = s.conv(cv);
  check('an edit changes its message', [c.msgs[0].text, !!c.msgs[0].edited], ['first fix', true]);
  check('the edited message is reported updated', got, [1]);
  s.add([ev(4, 'edit', 1, 'second fix'), ev(3, 'edit', 1, 'older fix')]);
  check('the later edit wins', c.msgs[0].text, 'second fix');
  s.add([ev(6, 'edit', 5, 'early'), msg(cv, 5, 'alice')]);
  check('an edit held before its message applies to it', c.msgs.find((m) => m.seq === 5).text, 'early');
  s.add([ev(7, 'recall', 1, ''), ev(8, 'edit', 1, 'too late')]);
  check('a recall is final', [c.msgs[0].recalled, c.msgs[0].text], [true, '']);
  s.add([msg(cv, 5, 'alice', { text: '', recalled: true })]);
  check('a message read back recalled is recalled', !!c.msgs.find((m) => m.seq === 5).recalled, true);

  // Read positions: one's own, from any device, clears what it covers.
  s = new Store();
  s.reset('alice');
  s.add([msg(cv, 1, 'bob'), msg(cv, 2, 'bob'), msg(cv, 3, 'bob')], { countUnread: true });
  c = s.conv(cv);
  s.setRead(cv, 'alice', 2);
  check('own read position clears what it covers', [c.readMine, c.unread], [2, 1]);
  s.setRead(cv, 'alice', 1);
  check('a read position never goes back', c.readMine, 2);
  s.setRead(cv, 'bob', 3);
  check('the peer position', c.readPeer, 3);
  s.add([msg(cv, 4, 'bob')], { countUnread: true });
  s.setRead(cv, 'alice', 5);
  s.add([msg(cv, 5, 'bob')], { countUnread: true });
  check('a message already read counts as read', c.unread, 0);
  s.setTyping(cv, 'bob');
  check('typing shows', s.typists(c), ['bob']);
  s.add([msg(cv, 6, 'bob')], { countUnread: true });
  check('a message of the typist ends the typing', s.typists(c), []);

  // Rebuild: what the client holds above the server's floor goes back,
  // also below the latest of a counter seeded 1000 above that floor.
  const { ChatClient } = await import('/static/chat/client.js');
  s = new Store();
  s.reset('alice');
  s.add([1, 2, 3, 4, 5].map((q) => msg(cv, q, 'bob')));
  const sent = [];
  const conn = { request: async (action, data) => { sent.push([action, data.conv, data.messages.map((m) => m.seq)]); return {}; } };
  await new ChatClient(s).rebuild(conn, s.conv(cv), 3, 1003);
  check('rebuild gives back what is above the floor', sent, [['rebuild', cv, [4, 5]]]);
  return bad;
})()`

// TestStoreLogic checks the client's state logic in the browser, without
// a cluster.
func TestStoreLogic(t *testing.T) {
	chrome := chromiumPath(t)
	srv := httptest.NewServer(web.New(nil))
	defer srv.Close()
	browser := startBrowser(t, chrome)
	p := openPage(t, browser, "store")
	// Any page of the origin can import the module; this one runs no script.
	p.do(chromedp.Navigate(srv.URL + "/static/common/base.css"))
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	bad, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](storeChecks, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Error(b)
	}
	p.checkConsole()
}
