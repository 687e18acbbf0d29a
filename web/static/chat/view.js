// The views of the chat page: the conversation list, the message view, the
// room browser and the hot words. They read the store and render with
// text nodes only (common/dom.js).

import { el, $, setText, show, shortTime, fullTime } from '../common/dom.js';

const GROUP_MS = 5 * 60 * 1000; // consecutive messages of one sender within this are grouped

// presenceDot fills a dot element for user's presence.
export function presenceDot(dot, online) {
  dot.classList.toggle('online', online === true);
  dot.classList.toggle('offline', online === false);
  dot.title = online === true ? 'online' : online === false ? 'offline' : 'presence unknown';
}

function presenceWord(online) {
  return online === true ? 'online' : online === false ? 'offline' : '';
}

// ---- conversation list ---------------------------------------------------------

// ConvList is the list of conversations, latest activity first, each with
// its unread count and, for direct ones, a presence dot. It is a list of
// buttons with one tab stop: the arrow keys, Home and End move between
// them, Enter or Space opens one.
export class ConvList {
  constructor(store, onOpen) {
    this.store = store;
    this.onOpen = onOpen;
    this.ul = $('#convlist');
    this.empty = $('#convs-empty');
    this.items = new Map(); // conv id -> {li, button, ...parts}
    this.focusId = null; // the item that holds the tab stop
    this.ul.addEventListener('keydown', (ev) => this.key(ev));
  }

  render() {
    const convs = this.store.sortedConvs();
    const keep = new Set(convs.map((c) => c.id));
    for (const [id, it] of this.items) {
      if (!keep.has(id)) {
        it.li.remove();
        this.items.delete(id);
      }
    }
    const focused = document.activeElement;
    let refocus = null;
    convs.forEach((c, i) => {
      let it = this.items.get(c.id);
      if (!it) {
        it = this.build(c);
        this.items.set(c.id, it);
      }
      this.update(it, c);
      if (this.ul.children[i] !== it.li) {
        if (it.li.contains(focused)) refocus = focused;
        this.ul.insertBefore(it.li, this.ul.children[i] || null);
      }
    });
    if (refocus) refocus.focus();
    show(this.empty, convs.length === 0);
    if (!this.focusId || !this.items.has(this.focusId)) this.focusId = this.store.active || (convs[0] && convs[0].id);
    for (const [id, it] of this.items) it.button.tabIndex = id === this.focusId ? 0 : -1;
  }

  build(c) {
    const dot = el('span', { class: c.kind === 'dm' ? 'dot' : 'roomglyph', 'aria-hidden': 'true', text: c.kind === 'dm' ? '' : '#' });
    const name = el('span', { class: 'conv-name', text: c.name });
    const kind = el('span', { class: 'sr-only', text: c.kind === 'dm' ? 'direct, ' : 'room, ' });
    const presence = el('span', { class: 'sr-only' });
    const preview = el('span', { class: 'conv-preview' });
    const badge = el('span', { class: 'badge', hidden: true });
    const button = el('button', { type: 'button', class: 'conv-item', dataset: { conv: c.id } },
      dot, el('span', { class: 'conv-main' }, el('span', { class: 'conv-line' }, kind, name, presence), preview), badge);
    button.addEventListener('click', () => {
      this.focusId = c.id;
      this.onOpen(c.id, true);
    });
    const li = el('li', { dataset: { conv: c.id } }, button);
    return { li, button, dot, preview, badge, presence };
  }

  update(it, c) {
    const active = this.store.active === c.id;
    if (active) it.button.setAttribute('aria-current', 'true');
    else it.button.removeAttribute('aria-current');
    it.li.classList.toggle('active', active);
    if (c.kind === 'dm') {
      const online = this.store.presence.get(c.name);
      presenceDot(it.dot, online);
      setText(it.presence, online === undefined ? '' : `, ${presenceWord(online)}`);
    }
    const last = c.msgs.findLast((m) => !m.kind);
    setText(it.preview, last ? `${last.from === this.store.me ? 'You' : last.from}: ${last.text}` : '');
    show(it.badge, c.unread > 0);
    setText(it.badge, c.unread > 99 ? '99+' : String(c.unread));
    it.badge.setAttribute('aria-label', `${c.unread} unread`);
    it.li.dataset.unread = String(c.unread);
  }

  buttons() {
    return [...this.ul.querySelectorAll('button.conv-item')];
  }

  // focus moves the keyboard focus to the active (or first) conversation.
  focus() {
    const it = this.items.get(this.store.active) || this.items.get(this.focusId);
    if (it) it.button.focus();
    else $('#newchat-input').focus();
  }

  key(ev) {
    const list = this.buttons();
    const i = list.indexOf(document.activeElement);
    if (i < 0) return;
    let j = -1;
    switch (ev.key) {
      case 'ArrowDown': j = Math.min(list.length - 1, i + 1); break;
      case 'ArrowUp': j = Math.max(0, i - 1); break;
      case 'Home': j = 0; break;
      case 'End': j = list.length - 1; break;
      default: return;
    }
    ev.preventDefault();
    for (const b of list) b.tabIndex = -1;
    list[j].tabIndex = 0;
    this.focusId = list[j].dataset.conv;
    list[j].focus();
  }
}

// ---- messages ------------------------------------------------------------------

// MessageView shows the active conversation: its messages in seq order,
// then the user's messages that are still being sent. Scrolling to the top
// loads older messages.
export class MessageView {
  constructor(store, client, { onRetry }) {
    this.store = store;
    this.client = client;
    this.onRetry = onRetry;
    this.conv = null;
    this.section = $('#conv');
    this.emptyEl = $('#empty');
    this.title = $('#conv-title');
    this.sub = $('#conv-sub');
    this.dot = $('#conv-dot');
    this.members = $('#members');
    this.leave = $('#leave-room');
    this.scroller = $('#scroller');
    this.ol = $('#messages');
    this.pendingOl = $('#pending');
    this.older = $('#older');
    this.start = $('#history-start');
    this.jump = $('#jump');
    this.typingEl = $('#typing');
    this.typingTimer = 0;
    this.loadingOlder = false;
    this.scroller.addEventListener('scroll', () => this.scrolled(), { passive: true });
    this.older.addEventListener('click', () => this.loadOlder());
    this.jump.addEventListener('click', () => this.toBottom());
  }

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 40;
  }

  toBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    show(this.jump, false);
  }

  // open shows conversation id (null: none).
  open(id) {
    this.conv = id;
    const c = id && this.store.conv(id, false);
    show(this.section, !!c);
    show(this.emptyEl, !c);
    if (!c) return;
    this.section.dataset.conv = c.id;
    this.header(c);
    // Busy while the list is replaced, so that screen readers do not read
    // out the whole conversation as new messages.
    this.ol.setAttribute('aria-busy', 'true');
    this.ol.replaceChildren(...c.msgs.map((m) => this.item(m)));
    for (let i = 0; i < c.msgs.length; i++) this.group(c, i);
    requestAnimationFrame(() => this.ol.removeAttribute('aria-busy'));
    this.renderPending();
    this.olderState(c);
    this.seen(c);
    this.typing();
    this.toBottom();
  }

  header(c) {
    show(this.leave, c.kind === 'room');
    if (c.kind === 'cs') {
      // A support conversation the user holds as an agent.
      const sc = c.support || {};
      const name = this.store.displayName(c.name);
      setText(this.title, name);
      $('#text-label').textContent = `Reply to ${name}`;
      this.dot.hidden = true;
      const parts = ['customer service', sc.channel ? `from ${sc.channel}` : '', sc.from ? `transferred by ${sc.from}` : ''];
      setText(this.sub, parts.filter(Boolean).join(' · '));
      show(this.members, false);
      return;
    }
    setText(this.title, c.kind === 'dm' ? c.name : `#${c.name}`);
    $('#text-label').textContent = c.kind === 'dm' ? `Message to ${c.name}` : `Message to room ${c.name}`;
    if (c.kind === 'dm') {
      const online = this.store.presence.get(c.name);
      this.dot.hidden = false;
      presenceDot(this.dot, online);
      setText(this.sub, c.name === this.store.me ? 'notes to yourself' : presenceWord(online) || 'direct messages');
      show(this.members, false);
      return;
    }
    this.dot.hidden = true;
    const ms = c.members || [];
    const on = ms.filter((u) => u === this.store.me || this.store.presence.get(u) === true).length;
    setText(this.sub, c.members ? `${ms.length} member${ms.length === 1 ? '' : 's'} · ${on} online` : 'room');
    show(this.members, ms.length > 0);
    this.members.replaceChildren(...ms.map((u) => {
      const dot = el('span', { class: 'dot', 'aria-hidden': 'true' });
      presenceDot(dot, u === this.store.me ? true : this.store.presence.get(u));
      const state = u === this.store.me ? 'you' : presenceWord(this.store.presence.get(u));
      return el('li', { dataset: { user: u } }, dot, el('span', { text: u }), state ? el('span', { class: 'sr-only', text: `, ${state}` }) : null);
    }));
  }

  refreshHeader() {
    const c = this.conv && this.store.conv(this.conv, false);
    if (c) this.header(c);
  }

  item(m) {
    const data = { id: m.id, seq: m.seq, from: m.from };
    if (m.kind === 'join' || m.kind === 'leave') {
      const who = m.from === this.store.me ? 'You' : this.store.displayName(m.from);
      return el('li', { class: 'event member', dataset: { ...data, kind: m.kind } },
        el('span', { text: `${who} ${m.kind === 'join' ? 'joined' : 'left'}` }));
    }
    // An edit or recall keeps its place in the list, unseen: it shows in
    // the message it changed.
    if (m.kind) return el('li', { class: 'event', hidden: true, dataset: { ...data, kind: m.kind } });
    const own = m.from === this.store.me;
    const meta = el('div', { class: 'meta' },
      el('span', { class: 'from', text: own ? 'You' : this.store.displayName(m.from) }),
      el('time', { datetime: new Date(m.ts).toISOString(), title: fullTime(m.ts), text: shortTime(m.ts) }));
    if (m.recalled) {
      return el('li', { class: own ? 'msg own recalled' : 'msg recalled', dataset: data }, meta,
        el('p', { class: 'text', text: 'message recalled' }));
    }
    if (m.edited) meta.append(el('span', { class: 'edited', title: `edited ${fullTime(m.edited)}`, text: '(edited)' }));
    const li = el('li', { class: own ? 'msg own' : 'msg', dataset: data }, meta, el('p', { class: 'text', text: m.text }));
    if (own && !m.kind && this.store.conv(m.conv, false)?.kind !== 'cs') {
      li.append(el('span', { class: 'msg-actions' },
        el('button', { type: 'button', class: 'small edit-btn', text: 'Edit', 'aria-label': 'Edit this message' }),
        el('button', { type: 'button', class: 'small recall-btn', text: 'Recall', 'aria-label': 'Recall this message' })));
    }
    return li;
  }

  // seen marks, in a direct conversation, the user's last message that the
  // other user has read.
  seen(c) {
    for (const x of this.ol.querySelectorAll('.seen')) x.remove();
    if (c.kind !== 'dm' || !c.readPeer) return;
    const m = c.msgs.findLast((x) => !x.kind && x.from === this.store.me && x.seq <= c.readPeer);
    const li = m && this.ol.querySelector(`li[data-id="${CSS.escape(m.id)}"]`);
    if (li) li.append(el('span', { class: 'seen', text: 'Seen' }));
  }

  // typing shows who is typing in the open conversation, until it expires.
  typing() {
    const c = this.conv && this.store.conv(this.conv, false);
    const who = c ? this.store.typists(c).map((u) => this.store.displayName(u)) : [];
    setText(this.typingEl, who.length === 0 ? '' : who.length === 1 ? `${who[0]} is typing…` : `${who.join(', ')} are typing…`);
    show(this.typingEl, who.length > 0);
    clearTimeout(this.typingTimer);
    if (who.length) this.typingTimer = setTimeout(() => this.typing(), 500);
  }

  // group marks message i of c as continuing the one before it.
  group(c, i) {
    const li = this.ol.children[i];
    if (!li) return;
    const m = c.msgs[i];
    const p = c.msgs[i - 1];
    li.classList.toggle('cont', !!p && p.from === m.from && m.ts - p.ts < GROUP_MS);
  }

  // messages takes a store "messages" event.
  messages(d) {
    if (d.conv !== this.conv) return;
    const c = this.store.conv(d.conv, false);
    if (!c) return;
    const s = this.scroller;
    const wasBottom = this.atBottom();
    const fromBottom = s.scrollHeight - s.scrollTop;
    for (const m of d.updated) {
      const li = this.ol.querySelector(`li[data-id="${CSS.escape(m.id)}"]`);
      if (li && !li.classList.contains('editing')) {
        li.replaceWith(this.item(m));
        const i = c.msgs.indexOf(m);
        if (i >= 0) this.group(c, i);
      }
    }
    // In ascending order of their final places, so that everything before
    // each one is in the list when it goes in.
    const places = d.added.map((m) => [c.msgs.indexOf(m), m]).filter((x) => x[0] >= 0).sort((a, b) => a[0] - b[0]);
    for (const [i, m] of places) {
      this.ol.insertBefore(this.item(m), this.ol.children[i] || null);
      this.group(c, i);
      this.group(c, i + 1);
    }
    this.olderState(c);
    this.seen(c);
    if (d.older) {
      s.scrollTop = s.scrollHeight - fromBottom; // keep what the user looked at in place
    } else if (wasBottom) {
      this.toBottom();
    } else if (d.added.some((m) => m.from !== this.store.me)) {
      show(this.jump, true);
    }
  }

  renderPending() {
    const c = this.conv;
    const wasBottom = this.atBottom();
    const items = c ? this.store.pending(c) : [];
    this.pendingOl.replaceChildren(...items.map((e) => {
      const status = e.state === 'failed' ? `not sent: ${e.error}`
        : e.state === 'sending' ? 'sending…'
          : this.client.phase === 'online' ? 'sending…' : 'waiting for the connection…';
      const actions = e.state === 'failed' ? el('span', { class: 'actions' },
        el('button', { type: 'button', class: 'small', text: 'Retry', onclick: () => this.onRetry(e) }),
        el('button', { type: 'button', class: 'small', text: 'Discard', onclick: () => this.store.discard(e) })) : null;
      return el('li', { class: `msg own pending ${e.state}`, dataset: { local: e.local, state: e.state } },
        el('div', { class: 'meta' }, el('span', { class: 'from', text: 'You' }), el('span', { class: 'status', text: status })),
        el('p', { class: 'text', text: e.text }), actions);
    }));
    if (wasBottom) this.toBottom();
  }

  olderState(c) {
    const more = c.hasOlder();
    show(this.older, more);
    show(this.start, !more && c.msgs.length > 0);
    this.older.disabled = this.loadingOlder;
    setText(this.older, this.loadingOlder ? 'Loading…' : 'Load older messages');
  }

  scrolled() {
    if (this.scroller.scrollTop < 120) this.loadOlder();
    if (this.atBottom()) show(this.jump, false);
  }

  async loadOlder() {
    const c = this.conv && this.store.conv(this.conv, false);
    if (!c || !c.hasOlder() || this.loadingOlder || this.client.phase !== 'online') return;
    this.loadingOlder = true;
    this.olderState(c);
    try {
      await this.client.loadOlder(c);
    } catch (e) {
      // Offline or busy: the button stays for another try.
    } finally {
      this.loadingOlder = false;
      if (this.store.conv(c.id, false)) this.olderState(c);
    }
  }
}

// ---- rooms ---------------------------------------------------------------------

// RoomList shows every room with its member count and a button to open,
// join or leave it.
export class RoomList {
  constructor(store, { onJoin, onLeave, onOpen }) {
    this.store = store;
    this.ul = $('#roomlist');
    this.count = $('#rooms-count');
    this.handlers = { onJoin, onLeave, onOpen };
    this.rooms = null;
  }

  render(rooms = this.rooms) {
    this.rooms = rooms;
    if (!rooms) return;
    setText(this.count, `${rooms.length} room${rooms.length === 1 ? '' : 's'}`);
    this.ul.replaceChildren(...rooms.map((r) => {
      const joined = this.store.convs.has(`room:${r.name}`) || r.joined;
      const buttons = joined
        ? [el('button', { type: 'button', class: 'small', text: 'Open', 'aria-label': `Open room ${r.name}`, onclick: () => this.handlers.onOpen(r.name) }),
          el('button', { type: 'button', class: 'small', text: 'Leave', 'aria-label': `Leave room ${r.name}`, onclick: () => this.handlers.onLeave(r.name) })]
        : [el('button', { type: 'button', class: 'small primary', text: 'Join', 'aria-label': `Join room ${r.name}`, onclick: () => this.handlers.onJoin(r.name) })];
      return el('li', { dataset: { room: r.name, joined: joined ? '1' : '0' } },
        el('span', { class: 'room-name', text: `#${r.name}` }),
        el('span', { class: 'muted small', text: `${r.members} member${r.members === 1 ? '' : 's'}` }),
        el('span', { class: 'actions' }, buttons));
    }));
  }
}

// ---- hot words -----------------------------------------------------------------

export function renderHotWords(words) {
  const ol = $('#hotwords');
  const max = words.reduce((a, w) => Math.max(a, w.count), 1);
  ol.replaceChildren(...words.map((w) => el('li', { dataset: { word: w.word } },
    el('span', { class: 'word', text: w.word }),
    el('span', { class: 'bar', 'aria-hidden': 'true' }, el('span', { style: { width: `${Math.max(4, (100 * w.count) / max)}%` } })),
    el('span', { class: 'count', text: String(w.count), 'aria-label': `${w.count} times` }))));
  show($('#hot-empty'), words.length === 0);
}
