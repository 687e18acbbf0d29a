// The customer-service console of the chat page, for users the operator
// made agents (chat admin agent add). After every login the page asks
// agentStatus: a reply means the user is an agent, and the console shows
// the agent's status (available or away), the queue, and the conversations
// assigned to the agent with their unread counts; a 403 means the user is
// not an agent, and the page stays as it is.
//
// The assigned conversations live in the store like the others (tracked
// support conversations), so the message view, the outbox, unread counts
// and the sync after a reconnect work for them as for direct messages. The
// console keeps the set in step with the server: supportConvs after every
// login, the assigned, unassigned and closed pushes in between.

import { $, el, setText, show, shortTime, fullTime, duration } from '../common/dom.js';
import { validName } from './store.js';

const TICK = 1000; // ms between redraws of the oldest wait
const REFRESH_TICKS = 5; // ticks between agentStatus requests
const HISTORY_PAGE = 30;
const MAX_UNKNOWN = 12; // failed first agentStatus requests before the page stops asking (until the next login)

export class AgentConsole {
  constructor(store, client, { onNotice, onOpen }) {
    this.store = store;
    this.client = client;
    this.onNotice = onNotice;
    this.onOpen = onOpen; // opens a conversation in the message view
    this.items = new Map(); // conv id -> {li, button, name, preview, badge}
    this.timer = 0;
    this.history = null; // the visitor history shown: {visitor, next, messages, convs}
    this.reset();
    $('#agent-available').addEventListener('click', () => this.setStatus('available'));
    $('#agent-away').addEventListener('click', () => this.setStatus('away'));
    $('#cs-close').addEventListener('click', () => this.close());
    $('#cs-transfer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.transfer();
    });
    $('#cs-history-btn').addEventListener('click', () => this.toggleHistory());
    $('#cs-older').addEventListener('click', () => this.loadHistory(true));
    store.addEventListener('convs', () => this.renderConvs());
    store.addEventListener('active', () => this.activeChanged());
  }

  // reset forgets the agent (logout).
  reset() {
    this.gen = (this.gen || 0) + 1; // replies to requests of before are dropped
    this.stopTimer();
    this.isAgent = null; // unknown until agentStatus answers
    this.needConvs = false; // supportConvs is to be asked (after a login)
    this.unknown = 0; // agentStatus requests that failed while isAgent is null
    this.state = null; // the last AgentState
    this.stateAt = 0; // when it came (ms)
    this.busy = false;
    this.history = null;
    show($('#support'), false);
    this.activeChanged();
  }

  // online runs after every login: is the user an agent, and what does it
  // hold now.
  async online() {
    if (this.isAgent === false) return;
    this.needConvs = true;
    this.unknown = 0;
    if (!this.timer) {
      let ticks = 0;
      this.timer = setInterval(() => {
        this.renderQueue();
        if (++ticks % REFRESH_TICKS === 0) this.refresh();
      }, TICK);
    }
    await this.refresh();
  }

  // refresh asks for the agent's state, and after a login what the agent
  // holds. Errors other than 403 (no leader for a moment, a lost
  // connection) leave things as they are until the next try.
  async refresh() {
    if (this.isAgent === false || this.client.phase !== 'online') return;
    const gen = this.gen;
    try {
      const st = await this.client.request('agentStatus', {});
      if (gen !== this.gen) return; // logged out meanwhile
      this.showState(st);
    } catch (e) {
      // A user who is not an agent gets 403. Other errors are retried at
      // the next tick; while it is not known yet whether the user is an
      // agent, MAX_UNKNOWN times (a node without customer service answers
      // 503 to everyone).
      if (gen !== this.gen) return;
      if (e.code === 403) this.notAgent();
      else if (this.isAgent === null && ++this.unknown >= MAX_UNKNOWN) this.stopTimer(); // the next login asks again
      return;
    }
    if (this.needConvs) {
      this.needConvs = false;
      if (!(await this.loadConvs())) this.needConvs = true;
    }
  }

  notAgent() {
    this.isAgent = false;
    this.stopTimer();
    show($('#support'), false);
  }

  stopTimer() {
    clearInterval(this.timer);
    this.timer = 0;
  }

  showState(st) {
    this.isAgent = true;
    this.state = st;
    this.stateAt = Date.now();
    show($('#support'), true);
    for (const [id, s] of [['#agent-available', 'available'], ['#agent-away', 'away']]) {
      const b = $(id);
      b.setAttribute('aria-pressed', String(st.status === s));
      b.classList.toggle('primary', st.status === s);
    }
    $('#support').dataset.status = st.status || '';
    setText($('#agent-load'), `${st.open} of ${st.capacity} conversation${st.capacity === 1 ? '' : 's'} · ${st.status === 'available' ? 'taking new ones' : 'not taking new ones'}`);
    this.renderQueue();
  }

  // renderQueue shows the queue, the oldest wait counted on from the last
  // state.
  renderQueue() {
    const st = this.state;
    if (!st) return;
    const q = st.queue || { length: 0, oldestWait: 0 };
    const p = $('#queue-info');
    p.dataset.length = String(q.length);
    p.classList.toggle('waiting', q.length > 0);
    const wait = (q.oldestWait || 0) + (Date.now() - this.stateAt);
    setText(p, q.length ? `Queue: ${q.length} waiting · oldest ${duration(wait / 1000)}` : 'Queue: empty');
  }

  async setStatus(status) {
    setText($('#support-error'), '');
    try {
      this.showState(await this.client.request('agentStatus', { status }));
    } catch (e) {
      setText($('#support-error'), e.message);
    }
  }

  // loadConvs takes what the server says the agent holds: new ones are
  // tracked and synced, ones no longer held are dropped. It returns
  // whether the server answered.
  async loadConvs() {
    let r;
    const gen = this.gen;
    try {
      r = await this.client.request('supportConvs', {});
    } catch (e) {
      return false; // asked again with the next refresh
    }
    if (gen !== this.gen) return true;
    if (r.agent) this.showState(r.agent);
    const held = new Set();
    const behind = [];
    for (const sc of r.convs || []) {
      held.add(sc.conv);
      const c = this.hold(sc);
      if (c && c.top < (sc.latest || 0)) behind.push(sc.conv);
    }
    for (const c of this.store.supportConvs()) {
      if (!held.has(c.id)) this.store.untrack(c.id);
    }
    if (behind.length) {
      try {
        await this.client.syncTracked(behind, false);
      } catch (e) {
        for (const id of behind) this.client.syncConv(id);
      }
    }
    this.renderConvs();
    return true;
  }

  // hold tracks support conversation sc (a SupportConv) in the store.
  hold(sc) {
    if (sc.name) this.store.names.set(sc.visitor, sc.name);
    const c = this.store.track(sc.conv);
    if (!c) return null;
    c.support = { ...c.support, ...sc };
    delete c.support.messages;
    if (!c.lastTs) c.lastTs = sc.assigned || sc.opened || 0;
    return c;
  }

  // push takes a support push (the client hands over what it does not
  // handle itself).
  push(action, d) {
    if (!d || typeof d.conv !== 'string') return;
    switch (action) {
      case 'assigned': {
        if (this.isAgent === false) return;
        this.isAgent = true;
        show($('#support'), true);
        const c = this.hold(d);
        if (!c) return;
        const gaps = this.store.add(d.messages || [], { countUnread: true });
        if (gaps.length || c.top < (d.latest || 0)) this.client.syncConv(d.conv);
        this.store.emit('convs');
        const who = this.store.displayName(d.visitor);
        this.onNotice(d.from ? `${d.from} handed you the conversation with ${who}.` : `New conversation with ${who}.`);
        this.refresh();
        break;
      }
      case 'unassigned': {
        if (!this.store.conv(d.conv, false)) return;
        const who = this.whoOf(d.conv);
        this.store.untrack(d.conv);
        this.onNotice(d.reason === 'transferred' ? `The conversation with ${who} went to ${d.to}.`
          : d.reason === 'disabled' ? `You were disabled as an agent: the conversation with ${who} went back to the queue.`
            : `The conversation with ${who} went back to the queue.`);
        this.refresh();
        break;
      }
      case 'closed': {
        if (!this.store.conv(d.conv, false)) return;
        const who = this.whoOf(d.conv);
        this.store.untrack(d.conv);
        if (d.by !== this.store.me) {
          this.onNotice(d.by && d.by.startsWith('~') ? `${who} closed the conversation.` : `The conversation with ${who} was closed.`);
        }
        this.refresh();
        break;
      }
      default:
        break;
    }
  }

  whoOf(id) {
    const c = this.store.conv(id, false);
    return c ? this.store.displayName(c.name) : 'the visitor';
  }

  // ---- the list ---------------------------------------------------------------

  renderConvs() {
    const ul = $('#support-convs');
    const convs = this.store.supportConvs();
    const keep = new Set(convs.map((c) => c.id));
    for (const [id, it] of this.items) {
      if (!keep.has(id)) {
        it.li.remove();
        this.items.delete(id);
      }
    }
    convs.forEach((c, i) => {
      let it = this.items.get(c.id);
      if (!it) {
        it = this.build(c);
        this.items.set(c.id, it);
      }
      this.update(it, c);
      if (ul.children[i] !== it.li) ul.insertBefore(it.li, ul.children[i] || null);
    });
    show($('#support-empty'), convs.length === 0);
  }

  build(c) {
    const name = el('span', { class: 'conv-name' });
    const sub = el('span', { class: 'conv-preview' });
    const badge = el('span', { class: 'badge', hidden: true });
    const glyph = el('span', { class: 'initial', 'aria-hidden': 'true' });
    const button = el('button', { type: 'button', class: 'conv-item', dataset: { conv: c.id } },
      glyph, el('span', { class: 'conv-main' }, el('span', { class: 'conv-line' }, name), sub), badge);
    button.addEventListener('click', () => this.onOpen(c.id, true));
    const li = el('li', { dataset: { conv: c.id } }, button);
    return { li, button, glyph, name, sub, badge };
  }

  update(it, c) {
    const active = this.store.active === c.id;
    if (active) it.button.setAttribute('aria-current', 'true');
    else it.button.removeAttribute('aria-current');
    it.li.classList.toggle('active', active);
    const name = this.store.displayName(c.name);
    setText(it.name, name);
    setText(it.glyph, ([...name.replace(/^~/, '')][0] || '?').toUpperCase());
    const last = c.msgs[c.msgs.length - 1];
    const sc = c.support || {};
    setText(it.sub, last ? `${last.from === this.store.me ? 'You' : this.store.displayName(last.from)}: ${last.text}`
      : `waiting since ${shortTime(sc.opened || Date.now())}`);
    show(it.badge, c.unread > 0);
    setText(it.badge, c.unread > 99 ? '99+' : String(c.unread));
    it.badge.setAttribute('aria-label', `${c.unread} unread`);
    it.li.dataset.unread = String(c.unread);
    it.li.dataset.visitor = c.name;
  }

  // ---- the open conversation -----------------------------------------------------

  activeConv() {
    const c = this.store.active && this.store.conv(this.store.active, false);
    return c && c.kind === 'cs' ? c : null;
  }

  activeChanged() {
    const c = this.activeConv();
    show($('#cs-tools'), !!c);
    setText($('#cs-error'), '');
    if (!c || (this.history && this.history.visitor !== c.name)) {
      this.history = null;
      show($('#cs-history'), false);
      $('#cs-history-btn').setAttribute('aria-expanded', 'false');
    }
  }

  async close() {
    const c = this.activeConv();
    if (!c) return;
    setText($('#cs-error'), '');
    try {
      await this.client.request('supportClose', { conv: c.id });
      this.onNotice(`You closed the conversation with ${this.store.displayName(c.name)}.`);
      this.store.untrack(c.id);
      this.refresh();
    } catch (e) {
      setText($('#cs-error'), e.message);
    }
  }

  async transfer() {
    const c = this.activeConv();
    const input = $('#cs-to');
    const to = input.value.trim();
    if (!c) return;
    if (!validName(to)) {
      setText($('#cs-error'), 'Type the username of the agent to hand the conversation to.');
      input.focus();
      return;
    }
    setText($('#cs-error'), '');
    try {
      await this.client.request('supportTransfer', { conv: c.id, to });
      input.value = '';
      this.onNotice(`The conversation with ${this.store.displayName(c.name)} went to ${to}.`);
      this.store.untrack(c.id);
      this.refresh();
    } catch (e) {
      setText($('#cs-error'), e.code === 404 ? `${to} is not an agent.` : e.message);
    }
  }

  // ---- the visitor's history --------------------------------------------------------

  toggleHistory() {
    const c = this.activeConv();
    const panel = $('#cs-history');
    const open = panel.hidden && !!c;
    show(panel, open);
    $('#cs-history-btn').setAttribute('aria-expanded', String(open));
    if (open && (!this.history || this.history.visitor !== c.name)) {
      this.history = { visitor: c.name, next: null, messages: [], convs: [] };
      this.loadHistory(false);
    }
  }

  // loadHistory reads the newest page of the visitor's messages over all
  // their conversations, or (older) the page before the ones shown.
  async loadHistory(older) {
    const h = this.history;
    if (!h || this.busy) return;
    const q = { visitor: h.visitor, limit: HISTORY_PAGE };
    if (older) {
      if (!h.next) return;
      q.conv = h.next.conv;
      q.before = h.next.before || 0;
    }
    this.busy = true;
    $('#cs-older').disabled = true;
    try {
      const r = await this.client.request('supportHistory', q);
      if (this.history !== h) return; // another visitor meanwhile
      h.convs = r.convs || [];
      const named = h.convs.find((sc) => sc.name);
      if (named) this.store.names.set(h.visitor, named.name);
      h.messages = [...(r.messages || []), ...(older ? h.messages : [])];
      h.next = r.next || null;
      this.renderHistory();
    } catch (e) {
      setText($('#cs-error'), e.message);
    } finally {
      this.busy = false;
      $('#cs-older').disabled = false;
    }
  }

  renderHistory() {
    const h = this.history;
    if (!h) return;
    const n = h.convs.length;
    const states = h.convs.map((sc) => (sc.state === 'closed' ? 'closed' : sc.state)).join(', ');
    setText($('#cs-history-convs'), `${n} conversation${n === 1 ? '' : 's'}${n ? ` (newest first: ${states})` : ''}`);
    show($('#cs-older'), !!h.next);
    const items = [];
    let conv = '';
    for (const m of h.messages) {
      if (m.conv !== conv) {
        conv = m.conv;
        const sc = h.convs.find((x) => x.conv === conv) || {};
        const agents = (sc.agents || []).join(', ');
        items.push(el('li', { class: 'conv-sep muted small', dataset: { conv } },
          `Conversation ${conv.slice(conv.lastIndexOf(':') + 1)} · opened ${shortTime(sc.opened || m.ts)}${agents ? ` · with ${agents}` : ''}${sc.state === 'closed' ? ' · closed' : ''}`));
      }
      const own = m.from === this.store.me;
      items.push(el('li', { class: own ? 'msg own' : 'msg', dataset: { id: m.id, seq: m.seq, conv: m.conv } },
        el('div', { class: 'meta' },
          el('span', { class: 'from', text: own ? 'You' : this.store.displayName(m.from) }),
          el('time', { datetime: new Date(m.ts).toISOString(), title: fullTime(m.ts), text: shortTime(m.ts) })),
        el('p', { class: 'text', text: m.text })));
    }
    if (!h.messages.length) items.push(el('li', { class: 'muted small', text: 'No messages yet.' }));
    $('#cs-history-list').replaceChildren(...items);
  }
}
