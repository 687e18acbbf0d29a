// The chat page: login, then the conversation list, the message view, the
// room browser and the hot words, wired to the store and the client.
//
// URL parameters: node=<id> makes the client prefer that chat node while
// the gateway lists it (see client.js).

import { $, setText, show } from '../common/dom.js';
import { ChatClient } from './client.js';
import { Store, validName, roomConv } from './store.js';
import { ConvList, MessageView, RoomList, renderHotWords } from './view.js';
import { AgentConsole } from './support.js';

const SESSION_KEY = 'chat.session'; // sessionStorage: {username, token} of this tab
const HOT_EVERY = 15000; // ms between hot-word refreshes
const HOT_SOON = 2000; // ms after new messages before the hot words are asked for
const MEMBERS_EVERY = 30000; // ms before a room's member list is asked for again
const MAX_TEXT = 8192; // bytes (docs/protocol.md, 1.6)

const params = new URLSearchParams(location.search);
const store = new Store();
const client = new ChatClient(store, {
  preferNode: params.get('node') || '',
  onState: connState,
  onNotice: notice,
  onPush: (action, data) => agent.push(action, data),
});
const narrow = window.matchMedia('(max-width: 720px)');

const convList = new ConvList(store, openConv);
const view = new MessageView(store, client, { onRetry: (e) => client.retry(e) });
const roomList = new RoomList(store, {
  onJoin: (name) => joinRoom(name),
  onLeave: (name) => leaveRoom(name),
  onOpen: (name) => openConv(roomConv(name), true),
});
// The customer-service console: shown only to users who are agents.
const agent = new AgentConsole(store, client, { onNotice: notice, onOpen: openConv });

// ---- store events ----------------------------------------------------------------

store.addEventListener('convs', () => {
  convList.render();
  roomList.render();
  const active = view.conv && store.conv(view.conv, false);
  if (active && active.kind === 'cs') view.refreshHeader(); // the visitor's name and channel may have come
  const n = store.totalUnread();
  document.title = `${n ? `(${n}) ` : ''}chat${store.me ? ` · ${store.me}` : ''}`;
});
store.addEventListener('messages', (ev) => {
  view.messages(ev.detail);
  if (ev.detail.added.length && !ev.detail.older) soonRefreshHot();
  if (ev.detail.conv === view.conv) markRead();
});
store.addEventListener('typing', (ev) => {
  if (ev.detail.conv === view.conv) view.typing();
});
store.addEventListener('read', (ev) => {
  const c = ev.detail.conv === view.conv && store.conv(view.conv, false);
  if (c) view.seen(c);
});
store.addEventListener('outbox', (ev) => {
  if (ev.detail.conv === view.conv) view.renderPending();
});
store.addEventListener('presence', () => view.refreshHeader());
store.addEventListener('active', (ev) => {
  view.open(ev.detail.conv);
  document.body.classList.toggle('in-conv', !!ev.detail.conv);
  markRead();
});
document.addEventListener('visibilitychange', () => {
  store.setVisible(document.visibilityState === 'visible');
  markRead();
});

// markRead tells the server how far the user has read the conversation on
// screen: everything it shows.
function markRead() {
  const c = view.conv && store.visible && store.conv(view.conv, false);
  if (c) client.markRead(c.id, c.lastSeq());
}
store.setVisible(document.visibilityState === 'visible');
window.addEventListener('online', () => client.reconnectNow()); // the network is back: no need to wait out the backoff

// ---- connection state ---------------------------------------------------------------

const PHASE_TEXT = {
  offline: 'Offline',
  connecting: 'Connecting…',
  syncing: 'Syncing…',
  online: 'Online',
  reconnecting: 'Reconnecting…',
  kicked: 'Disconnected',
  expired: 'Session expired',
};

let lastPhase = '';

function connState({ phase, node, detail }) {
  const box = $('#conn');
  box.dataset.state = phase;
  box.dataset.node = node || '';
  let text = PHASE_TEXT[phase] || phase;
  if (phase === 'online' && node) text = `Online · ${node}`;
  if (phase === 'syncing' && node) text = `Syncing with ${node}…`;
  if ((phase === 'reconnecting' || phase === 'connecting') && detail) text += ` (${detail})`;
  setText($('#conn-text'), text);
  view.renderPending(); // "sending" or "waiting for the connection"
  if (phase === 'online') {
    show($('#banner'), false);
    if (lastPhase !== 'online') onOnline();
  }
  if (phase === 'reconnecting' && lastPhase === 'online') notice('Connection to the chat node lost; reconnecting…');
  if (phase === 'kicked') {
    banner('You opened the chat in another window or device, so this one was disconnected.', 'Use chat here');
  }
  if (phase === 'expired') {
    sessionStorage.removeItem(SESSION_KEY);
    showLogin('Your session has expired: please log in again.');
  }
  lastPhase = phase;
}

function banner(text, button) {
  setText($('#banner-text'), text);
  setText($('#banner-btn'), button);
  show($('#banner'), true);
}

let noticeTimer = 0;

function notice(text) {
  setText($('#notice'), text);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => setText($('#notice'), ''), 6000);
}

// onOnline refreshes what is not pushed: hot words, the open room's
// members, and whether the user is an agent (and what it holds).
function onOnline() {
  refreshHot();
  markRead();
  agent.online();
  const c = view.conv && store.conv(view.conv, false);
  if (c && c.kind === 'room') refreshMembers(c, true);
  if (roomList.rooms) refreshRooms();
}

// ---- login ------------------------------------------------------------------------------

function showLogin(message = '') {
  agent.reset();
  show($('#app'), false);
  show($('#login'), true);
  setText($('#login-error'), message);
  $('#username').focus();
}

function showApp() {
  show($('#login'), false);
  show($('#app'), true);
  setText($('#me'), store.me);
  store.emit('convs');
}

async function submitLogin(register) {
  const username = $('#username').value.trim();
  const password = $('#password').value;
  const err = $('#login-error');
  if (!validName(username)) {
    setText(err, "The username must be 1 to 32 letters, digits, '_', '-' or '.'.");
    $('#username').focus();
    return;
  }
  if (!password) {
    setText(err, 'Enter a password.');
    $('#password').focus();
    return;
  }
  setText(err, '');
  for (const b of [$('#login-btn'), $('#register-btn')]) b.disabled = true;
  try {
    if (register) await client.register(username, password);
    await client.login(username, password);
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ username: store.me, token: client.token }));
    $('#password').value = '';
    showApp();
    client.start();
    $('#newchat-input').focus();
  } catch (e) {
    setText(err, e.code === 409 ? 'That username is taken.' : e.message);
  } finally {
    for (const b of [$('#login-btn'), $('#register-btn')]) b.disabled = false;
  }
}

$('#login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  submitLogin(false);
});
$('#register-btn').addEventListener('click', () => submitLogin(true));

$('#logout').addEventListener('click', () => {
  client.stop();
  sessionStorage.removeItem(SESSION_KEY);
  store.reset('');
  roomList.rooms = null;
  $('#roomlist').replaceChildren();
  lastPhase = '';
  showLogin('');
});

$('#banner-btn').addEventListener('click', () => {
  show($('#banner'), false);
  client.start();
});

// ---- conversations ---------------------------------------------------------------------

// openConv makes conversation id the active one; focusComposer moves the
// keyboard focus to the message box.
function openConv(id, focusComposer) {
  if (!store.conv(id, false)) return;
  store.setActive(id);
  const c = store.conv(id, false);
  if (c.kind === 'room') refreshMembers(c, false);
  if (focusComposer) $('#text').focus();
}

// refreshMembers asks for a room's members (joining again changes nothing
// and answers with the member list) unless they were asked for lately.
function refreshMembers(c, force) {
  if (client.phase !== 'online' || (!force && c.members && Date.now() - c.membersAt < MEMBERS_EVERY)) return;
  c.membersAt = Date.now();
  client.joinRoom(c.name).then(() => view.refreshHeader()).catch(() => {});
}

function backToList() {
  if (narrow.matches) store.setActive(null);
  convList.focus();
}

$('#back').addEventListener('click', backToList);

$('#newchat').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('#newchat-input');
  const err = $('#newchat-error');
  const user = input.value.trim();
  if (!validName(user)) {
    setText(err, "Usernames are 1 to 32 letters, digits, '_', '-' or '.'.");
    return;
  }
  setText(err, '');
  try {
    const c = await client.openDM(user);
    input.value = '';
    openConv(c.id, true);
  } catch (e) {
    setText(err, e.code === 404 ? `There is no user called ${user}.` : e.message);
  }
});

$('#room-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('#room-input');
  const name = input.value.trim();
  if (!validName(name)) {
    setText($('#room-error'), "Room names are 1 to 32 letters, digits, '_', '-' or '.'.");
    return;
  }
  if (await joinRoom(name)) input.value = '';
});

async function joinRoom(name) {
  setText($('#room-error'), '');
  try {
    const c = await client.joinRoom(name);
    openConv(c.id, true);
    if (roomList.rooms) refreshRooms();
    return true;
  } catch (e) {
    setText($('#room-error'), e.message);
    return false;
  }
}

async function leaveRoom(name) {
  setText($('#room-error'), '');
  try {
    await client.leaveRoom(name);
    notice(`You left #${name}.`);
    if (roomList.rooms) refreshRooms();
    convList.focus();
  } catch (e) {
    setText($('#room-error'), e.message);
  }
}

$('#leave-room').addEventListener('click', () => {
  const c = view.conv && store.conv(view.conv, false);
  if (c && c.kind === 'room') leaveRoom(c.name);
});

async function refreshRooms() {
  const btn = $('#rooms-refresh');
  try {
    roomList.render(await client.rooms());
    setText(btn, 'Refresh rooms');
  } catch (e) {
    setText($('#room-error'), e.message);
  }
}

$('#rooms-refresh').addEventListener('click', refreshRooms);

async function refreshHot() {
  if (client.phase !== 'online') return;
  try {
    renderHotWords(await client.popular(10));
  } catch (e) {
    // Shown again on the next refresh.
  }
}

setInterval(refreshHot, HOT_EVERY);

// soonRefreshHot refreshes the hot words a moment after new messages (the
// server counts them off the request path), at most once per HOT_SOON.
let hotTimer = 0;
function soonRefreshHot() {
  if (hotTimer) return;
  hotTimer = setTimeout(() => {
    hotTimer = 0;
    refreshHot();
  }, HOT_SOON);
}

// ---- composer --------------------------------------------------------------------------

const text = $('#text');

function grow() {
  text.style.height = 'auto';
  text.style.height = `${Math.min(text.scrollHeight, 200)}px`;
}

text.addEventListener('input', () => {
  grow();
  if (text.value.trim() !== '') client.typing(view.conv);
});

// ---- edit and recall ---------------------------------------------------------------------

// Own messages carry Edit and Recall buttons. Edit turns the text into a
// field: Enter saves, Escape cancels. The server judges the windows
// (docs/protocol.md, 4.15 and 4.16); its refusal is shown as it words it.
$('#messages').addEventListener('click', (ev) => {
  const btn = ev.target.closest('button');
  const li = btn && btn.closest('li.msg');
  const c = li && view.conv && store.conv(view.conv, false);
  if (!c) return;
  const seq = Number(li.dataset.seq);
  if (btn.classList.contains('recall-btn')) {
    client.recall(c.id, seq).catch((e) => notice(`Could not recall the message: ${e.message}`));
  } else if (btn.classList.contains('edit-btn')) {
    startEdit(c, li, seq);
  }
});

function startEdit(c, li, seq) {
  const m = c.msgs.find((x) => x.seq === seq && !x.kind);
  const p = li.querySelector('.text');
  if (!m || !p || li.classList.contains('editing')) return;
  li.classList.add('editing');
  const input = document.createElement('input');
  input.className = 'edit-input';
  input.value = m.text;
  input.setAttribute('aria-label', 'New text of the message; Enter saves, Escape cancels');
  p.replaceWith(input);
  input.focus();
  const done = () => {
    li.classList.remove('editing');
    view.messages({ conv: c.id, added: [], updated: [m], older: false });
  };
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      done();
    } else if (ev.key === 'Enter') {
      ev.preventDefault();
      const value = input.value;
      if (value.trim() === '' || value === m.text) {
        done();
        return;
      }
      client.edit(c.id, seq, value).then(done, (e) => {
        notice(`Could not edit the message: ${e.message}`);
        done();
      });
    }
  });
}
text.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('#composer').requestSubmit();
  }
});

$('#composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const conv = view.conv;
  const value = text.value;
  if (!conv || value.trim() === '') return;
  if (new TextEncoder().encode(value).length > MAX_TEXT) {
    notice(`A message can be at most ${MAX_TEXT} bytes.`);
    return;
  }
  client.send(conv, value);
  text.value = '';
  grow();
  view.toBottom();
});

// ---- keyboard --------------------------------------------------------------------------

document.addEventListener('keydown', (ev) => {
  if ($('#app').hidden) return;
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === 'k') {
    ev.preventDefault();
    $('#newchat-input').focus();
    return;
  }
  if (ev.key === 'Escape' && !ev.defaultPrevented) {
    const inChat = $('#chat').contains(document.activeElement);
    if (inChat || document.activeElement === document.body) {
      ev.preventDefault();
      backToList();
    }
  }
});

// ---- start -------------------------------------------------------------------------------

function boot() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  } catch (e) {
    saved = null;
  }
  if (saved && validName(saved.username) && typeof saved.token === 'string') {
    client.resume(saved.username, saved.token);
    showApp();
    client.start();
    return;
  }
  showLogin('');
}

boot();
