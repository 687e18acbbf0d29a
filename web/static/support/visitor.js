// The customer-service page for visitors (/support): a visitor made with
// POST /api/visitor, kept in localStorage so that a reload or a later visit
// resumes the same conversation, logs in on a chat node with its token (the
// chat client's connection loop: node choice, reconnects, sync from the
// offsets held, the outbox resent with its clientMsgId), asks for its open
// support conversation, and shows its place in the queue, then the agent
// and the conversation.
//
// URL parameters: node=<id> prefers that chat node (as the chat page does);
// channel=<name> is where the visitor comes from ("web" when left out).

import { $, el, setText, show, shortTime, fullTime } from '../common/dom.js';
import { gatewayCall, retryable, LOST, TIMEOUT } from '../chat/conn.js';
import { ChatClient } from '../chat/client.js';
import { Store } from '../chat/store.js';

// localStorage: {visitor, token, name, conv, closed, outbox: [{cid, conv,
// text, created, tried}]}. conv is the visitor's latest conversation and
// closed whether the page saw it closed; the outbox is what was typed and
// not yet acknowledged, resent with the same clientMsgId after a reload.
const SAVED_KEY = 'support.visitor';
const MAX_TEXT = 8192; // bytes (docs/protocol.md, 1.6)
const MAX_NAME = 64; // characters of a visitor's name

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const params = new URLSearchParams(location.search);
const channel = /^[a-z0-9_-]{1,16}$/.test(params.get('channel') || '') ? params.get('channel') : 'web';

const store = new Store();
const client = new ChatClient(store, {
  preferNode: params.get('node') || '',
  onState: connState,
  onNotice: notice,
  onPush: push,
});

let saved = load(); // the visitor, as kept in localStorage
let conv = null; // the id of the conversation shown
let info = null; // its state: {state, position, waiting, agent, closedBy}
let wantOpen = false; // the visitor asked for a conversation (the first, or a new one)
let opening = false; // a support request is out
let restoring = false; // the saved outbox is being put back
// early holds, by conversation, an assigned or closed push that came before
// the support reply naming the conversation (a push may overtake a reply,
// docs/protocol.md 3.5): opened applies it after the reply's state.
const early = new Map();

// ---- saved state ---------------------------------------------------------------

function load() {
  try {
    const s = JSON.parse(localStorage.getItem(SAVED_KEY) || 'null');
    if (s && typeof s.visitor === 'string' && s.visitor.startsWith('~') && typeof s.token === 'string' &&
        s.token.startsWith('vt_')) {
      return {
        visitor: s.visitor,
        token: s.token,
        name: typeof s.name === 'string' ? s.name : '',
        conv: typeof s.conv === 'string' ? s.conv : '',
        closed: s.closed === true,
        outbox: Array.isArray(s.outbox) ? s.outbox : [],
      };
    }
  } catch (e) {
    // Unreadable: start afresh.
  }
  return null;
}

// persist writes the saved state; without storage (a private window that
// refuses it) the page goes on, and only a reload forgets.
function persist() {
  if (!saved) return;
  try {
    localStorage.setItem(SAVED_KEY, JSON.stringify(saved));
  } catch (e) {
    // See above.
  }
}

store.addEventListener('outbox', () => {
  if (!saved || restoring) return;
  saved.outbox = store.outbox.filter((e) => e.conv === conv && e.state !== 'failed')
    .map((e) => ({ cid: e.cid, conv: e.conv, text: e.text, created: e.created, tried: e.tried }));
  persist();
  renderPending();
});

// restoreOutbox puts the saved outbox of the conversation shown back in
// the store, with the same clientMsgIds: what the server stored before the
// reload is not stored twice.
function restoreOutbox() {
  restoring = true;
  try {
    for (const o of saved.outbox) {
      if (!o || o.conv !== conv || typeof o.text !== 'string' || typeof o.cid !== 'string') continue;
      const e = store.enqueue(conv, o.text);
      if (!e) continue;
      e.cid = o.cid;
      e.created = Number(o.created) || Date.now();
      e.tried = o.tried === true;
    }
  } finally {
    restoring = false;
  }
}

// ---- connection -----------------------------------------------------------------

const PHASE_TEXT = {
  offline: 'Offline',
  connecting: 'Connecting…',
  syncing: 'Connecting…',
  online: 'Online',
  reconnecting: 'Reconnecting…',
  kicked: 'Disconnected',
  expired: 'Session expired',
};

let lastPhase = '';

function connState({ phase, node }) {
  const box = $('#conn');
  box.dataset.state = phase;
  box.dataset.node = node || '';
  setText($('#conn-text'), PHASE_TEXT[phase] || phase);
  if (phase === 'online' && lastPhase !== 'online') onOnline();
  if (phase === 'reconnecting' && lastPhase === 'online') notice('Connection lost; reconnecting…');
  if (phase === 'kicked') {
    setText($('#banner-text'), 'This chat is open in another tab or window, so it was disconnected here.');
    show($('#banner'), true);
  }
  if (phase === 'expired') renew();
  lastPhase = phase;
  render();
}

let noticeTimer = 0;

function notice(text) {
  setText($('#notice'), text);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => setText($('#notice'), ''), 6000);
}

// asking reports whether the page asks for the open conversation when it
// gets online: the visitor asked for one, or the one shown is open (its
// state may have changed while the page was away). A closed one is not
// asked for: the visitor starts the next one with the button.
function asking() {
  return wantOpen || (!!conv && !(info && info.state === 'closed'));
}

function onOnline() {
  if (asking()) openConv();
}

// openConv asks for the visitor's open conversation (the server opens one
// if none is): retried while the connection holds, and on the next one.
async function openConv() {
  if (opening) return;
  opening = true;
  try {
    for (let delay = 500; asking() && client.phase === 'online'; delay = Math.min(delay * 2, 8000)) {
      try {
        // Resuming the one shown opens none: if it was closed meanwhile
        // the reply says so. Only the visitor's button asks for a new one.
        opened(await client.request('support', wantOpen || !conv ? {} : { conv }));
        return;
      } catch (e) {
        if (e.code === LOST || e.code === TIMEOUT) return; // the next connection asks again
        if (!retryable(e)) {
          notice(`Cannot open the conversation: ${e.message}`);
          return;
        }
        await sleep(delay);
      }
    }
  } finally {
    opening = false;
  }
}

// opened takes the reply of support: the visitor's open conversation.
function opened(sc) {
  if (!sc || typeof sc.conv !== 'string') return;
  if (sc.conv === conv && sc.state === 'closed' && !wantOpen) {
    closedHere({ conv, by: sc.closedBy || '' }); // closed while the page was away
    return;
  }
  if (conv && sc.conv !== conv && !wantOpen) {
    // The conversation shown was closed while the page was away (its closed
    // push went to no connection), and this request opened the next one,
    // which the visitor did not ask for: show the old one closed, as if
    // the push had come, and close the new one again.
    closedHere({ conv, by: '' });
    client.request('supportClose', { conv: sc.conv }).catch(() => {});
    return;
  }
  if (sc.conv === conv && !wantOpen && info && info.state === 'closed') return; // the closed push overtook the reply
  wantOpen = false;
  if (sc.conv !== conv) showConv(sc.conv);
  info = { state: sc.state, position: sc.position || 0, waiting: sc.waiting || 0, agent: sc.agent || '' };
  render();
  const c = store.conv(conv, false);
  if (c && (sc.latest || 0) > c.top) client.syncConv(conv);
  const e = early.get(conv);
  early.clear();
  if (e && !(e.action === 'assigned' && sc.state !== 'queued')) push(e.action, e.d);
}

// showConv makes id the conversation shown (the one before it goes).
function showConv(id) {
  if (conv && conv !== id) store.untrack(conv);
  conv = id;
  store.track(id);
  store.setActive(id);
  saved.conv = id;
  saved.closed = false;
  saved.outbox = saved.outbox.filter((o) => o && o.conv === id);
  persist();
  renderMessages();
}

// closedHere shows conversation d.conv closed (by d.by).
function closedHere(d) {
  info = { ...(info || {}), state: 'closed', closedBy: d.by || '' };
  wantOpen = false;
  saved.closed = true;
  saved.outbox = [];
  persist();
  render();
}

function push(action, d) {
  if (d && typeof d.conv === 'string' && d.conv !== conv && opening && (action === 'assigned' || action === 'closed')) {
    early.set(d.conv, { action, d });
    return;
  }
  if (!d || d.conv !== conv || !conv) return;
  switch (action) {
    case 'queue':
      if (info && info.state === 'closed') return;
      info = { ...(info || {}), state: 'queued', position: d.position || 0, waiting: d.waiting || 0, agent: '' };
      break;
    case 'assigned': {
      if (info && info.state === 'closed') return;
      info = { ...(info || {}), state: 'assigned', agent: d.agent || '', position: 0, waiting: 0 };
      const c = store.conv(conv, false);
      if (c && (d.latest || 0) > c.top) client.syncConv(conv);
      break;
    }
    case 'closed':
      closedHere(d);
      return;
    default:
      return;
  }
  render();
}

// renew replaces a visitor whose token expired (30 days after its last
// login) with a new one of the same name: the old conversations are out
// of reach, so a new one starts.
async function renew() {
  const name = saved ? saved.name : '';
  for (let delay = 1000; ; delay = Math.min(delay * 2, 30000)) {
    try {
      const v = await gatewayCall('POST', '/api/visitor', { name, channel });
      begin(v);
      notice('Your chat session had expired, so a new conversation starts.');
      return;
    } catch (e) {
      if (!retryable(e)) {
        localStorage.removeItem(SAVED_KEY);
        saved = null;
        showStart(e.message);
        return;
      }
      await sleep(delay);
    }
  }
}

// begin runs the page for visitor v (the reply of POST /api/visitor), or
// for the saved visitor when v is null.
function begin(v) {
  if (v) {
    saved = { visitor: v.visitor, token: v.token, name: v.name || '', conv: '', closed: false, outbox: [] };
    persist();
  }
  conv = null;
  info = null;
  client.resume(saved.visitor, saved.token); // a new visitor resets the store
  if (saved.conv && store.track(saved.conv)) {
    // Held again, so that the catch-up after the login syncs it from the
    // start.
    conv = saved.conv;
    store.setActive(conv);
    if (saved.closed) info = { state: 'closed', closedBy: '' };
    restoreOutbox();
  }
  wantOpen = !saved.conv;
  show($('#start'), false);
  show($('#talk'), true);
  show($('#banner'), false);
  render();
  renderMessages();
  client.start();
}

// ---- start ------------------------------------------------------------------------

function showStart(error = '') {
  client.stop();
  show($('#talk'), false);
  show($('#start'), true);
  setText($('#start-error'), error);
  $('#name').focus();
}

$('#start-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('#name').value.trim();
  if ([...name].length > MAX_NAME) {
    setText($('#start-error'), `A name can be at most ${MAX_NAME} characters.`);
    return;
  }
  setText($('#start-error'), '');
  const btn = $('#start-btn');
  btn.disabled = true;
  try {
    begin(await gatewayCall('POST', '/api/visitor', { name, channel }));
  } catch (e) {
    setText($('#start-error'), e.code === 429 ? 'Too many new chats from your network just now: please try again in a minute.' : e.message);
  } finally {
    btn.disabled = false;
  }
});

$('#new-conv').addEventListener('click', () => {
  if (!saved) return;
  wantOpen = true;
  render();
  if (client.phase === 'online') openConv();
});

$('#end').addEventListener('click', async () => {
  if (!conv || !info || info.state === 'closed') return;
  const id = conv;
  try {
    await client.request('supportClose', { conv: id });
    if (conv === id) closedHere({ conv: id, by: saved.visitor });
  } catch (e) {
    notice(`Cannot end the chat: ${e.message}`);
  }
});

$('#banner-btn').addEventListener('click', () => {
  // Another tab may have moved on to another conversation: start from what
  // it saved.
  location.reload();
});

// ---- view ---------------------------------------------------------------------------

// stateText is the line over the conversation.
function stateText() {
  if (!info) return conv || wantOpen ? 'Connecting…' : '';
  switch (info.state) {
    case 'queued':
      return info.position > 0 ? `You are number ${info.position} in the queue (${info.waiting || info.position} waiting)` : 'Waiting for an agent…';
    case 'assigned':
      return info.agent ? `You are talking to ${info.agent}` : 'An agent has joined';
    case 'closed':
      return 'The conversation was closed';
    default:
      return '';
  }
}

function render() {
  const stateEl = $('#state');
  const state = info ? info.state : 'connecting';
  stateEl.dataset.state = wantOpen && state === 'closed' ? 'connecting' : state;
  setText(stateEl, wantOpen && state === 'closed' ? 'Starting a new conversation…' : stateText());
  const open = !!conv && !!info && info.state !== 'closed';
  show($('#closed'), !!info && info.state === 'closed' && !wantOpen);
  show($('#end'), open);
  // Messages may be written while queued: the agent gets them with the
  // conversation.
  const canWrite = !!conv && (!info || info.state !== 'closed');
  $('#text').disabled = !canWrite;
  $('#send').disabled = !canWrite;
  $('#text').placeholder = info && info.state === 'queued' ? 'Write a message: the agent sees it on joining' : 'Write a message';
  $('#new-conv').disabled = wantOpen;
  const c = conv && store.conv(conv, false);
  const n = c ? c.unread : 0;
  document.title = `${n ? `(${n}) ` : ''}Customer support`;
  renderPending();
}

function atBottom() {
  const s = $('#scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 40;
}

function toBottom() {
  const s = $('#scroller');
  s.scrollTop = s.scrollHeight;
}

function item(m) {
  const own = m.from === store.me;
  return el('li', { class: own ? 'msg own' : 'msg', dataset: { id: m.id, seq: m.seq, from: m.from } },
    el('div', { class: 'meta' },
      el('span', { class: 'from', text: own ? 'You' : m.from }),
      el('time', { datetime: new Date(m.ts).toISOString(), title: fullTime(m.ts), text: shortTime(m.ts) })),
    el('p', { class: 'text', text: m.text }));
}

function renderMessages() {
  const bottom = atBottom();
  const c = conv && store.conv(conv, false);
  $('#messages').replaceChildren(...(c ? c.msgs.map(item) : []));
  if (bottom) toBottom();
}

function renderPending() {
  const bottom = atBottom();
  const items = conv ? store.pending(conv) : [];
  $('#pending').replaceChildren(...items.map((e) => {
    const status = e.state === 'failed' ? `not sent: ${e.error}`
      : client.phase === 'online' ? 'sending…' : 'waiting for the connection…';
    const actions = e.state === 'failed' ? el('span', { class: 'actions' },
      el('button', { type: 'button', class: 'small', text: 'Retry', onclick: () => client.retry(e) }),
      el('button', { type: 'button', class: 'small', text: 'Discard', onclick: () => store.discard(e) })) : null;
    return el('li', { class: `msg own pending ${e.state}`, dataset: { local: e.local, state: e.state } },
      el('div', { class: 'meta' }, el('span', { class: 'from', text: 'You' }), el('span', { class: 'status', text: status })),
      el('p', { class: 'text', text: e.text }), actions);
  }));
  if (bottom) toBottom();
}

store.addEventListener('messages', (ev) => {
  if (ev.detail.conv === conv) renderMessages();
});
store.addEventListener('convs', () => {
  if (conv && !$('#talk').hidden) render();
});
document.addEventListener('visibilitychange', () => store.setVisible(document.visibilityState === 'visible'));
store.setVisible(document.visibilityState === 'visible');
window.addEventListener('online', () => client.reconnectNow());

// ---- composer ----------------------------------------------------------------------

const text = $('#text');

function grow() {
  text.style.height = 'auto';
  text.style.height = `${Math.min(text.scrollHeight, 160)}px`;
}

text.addEventListener('input', grow);
text.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('#composer').requestSubmit();
  }
});

$('#composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const value = text.value;
  if (!conv || text.disabled || value.trim() === '') return;
  if (new TextEncoder().encode(value).length > MAX_TEXT) {
    notice(`A message can be at most ${MAX_TEXT} bytes.`);
    return;
  }
  client.send(conv, value);
  text.value = '';
  grow();
  toBottom();
  text.focus();
});

// ---- start ------------------------------------------------------------------------

if (saved) begin(null);
else showStart();
