// The chat client's connection logic: log in at the gateway, pick a node,
// hold a WebSocket to it, and when the node goes away, get a fresh node list
// from the gateway, reconnect, and sync from the offsets the store holds,
// so that the conversation continues with nothing lost and nothing twice.
//
// Node choice: the gateway lists nodes least loaded first, and the client
// takes the first it can reach. A "node" URL parameter (/?node=n2) makes
// it prefer the node with that id while the gateway lists it: for tests,
// and for an operator who wants to watch one node.

import { Connection, gatewayCall, RequestError, retryable, LOST, TIMEOUT } from './conn.js';
import { dmConv, roomConv } from './store.js';

const PING_EVERY = 20000; // ms; a node that does not answer in 10 s is treated as gone
const SYNC_BATCH = 1000; // conversations per sync request (the server's limit)
const HISTORY_PAGE = 50;
const TYPING_EVERY = 1000; // ms: the server passes on one typing per conversation a second
const DEVICE_KEY = 'chat.device'; // sessionStorage: this tab's device name (docs/protocol.md, 1.11)

// deviceName returns this tab's device name, made once and kept while the
// tab lives: a reload logs in again as the same device (replacing its own
// connection), and two tabs are two devices.
function deviceName() {
  try {
    let d = sessionStorage.getItem(DEVICE_KEY);
    if (!d || !/^[A-Za-z0-9_.-]{1,64}$/.test(d)) {
      const b = new Uint8Array(6);
      crypto.getRandomValues(b);
      d = `web-${[...b].map((x) => x.toString(16).padStart(2, '0')).join('')}`;
      sessionStorage.setItem(DEVICE_KEY, d);
    }
    return d;
  } catch (e) {
    return ''; // no storage: a device of its own per connection
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Phases of the connection, shown to the user and set as data-state on
// the status element: 'offline' (not logged in), 'connecting' (first
// connection), 'syncing', 'online', 'reconnecting', 'kicked' (logged in
// elsewhere; no automatic reconnect), 'expired' (the token is no longer
// valid: log in again).
//
// onPush gets the pushes the client does not handle itself (customer
// service's queue, assigned, unassigned and closed), from the connection
// in use only.
//
// A visitor's token (vt_..., POST /api/visitor) logs in the same way: the
// client then holds the visitor's support conversation that the page
// tracks in the store.
export class ChatClient {
  constructor(store, { preferNode = '', onState = () => {}, onNotice = () => {}, onPush = () => {} } = {}) {
    this.store = store;
    this.preferNode = preferNode;
    this.onState = onState;
    this.onNotice = onNotice;
    this.onPush = onPush;
    this.token = '';
    this.nodes = null; // node list of the login reply, used once
    this.conn = null; // the connection in use, once logged in on it
    this.node = '';
    this.phase = 'offline';
    this.gen = 0; // bumped by start and stop; a loop of an older generation ends
    this.wake = null; // resolves the backoff sleep early
    this.everOnline = false;
    this.syncQueue = new Set(); // conversations with a gap to sync
    this.syncing = false;
    this.flushing = false;
    this.typingSent = new Map(); // conv -> when a typing was last sent (ms)
    this.readSent = new Map(); // conv -> the highest seq a read was sent for
  }

  setPhase(phase, detail = '') {
    this.phase = phase;
    this.onState({ phase, node: this.node, detail });
  }

  // ---- gateway -----------------------------------------------------------

  async register(username, password) {
    await gatewayCall('POST', '/api/register', { username, password });
  }

  async login(username, password) {
    const r = await gatewayCall('POST', '/api/login', { username, password });
    this.resume(r.username, r.token, r.nodes);
  }

  // resume takes a token from an earlier login (of this browser tab).
  resume(username, token, nodes = null) {
    this.token = token;
    this.nodes = nodes;
    if (this.store.me !== username) this.store.reset(username);
  }

  // ---- the connection loop ------------------------------------------------

  // start runs the connection loop until stop, a kick or an expired token.
  // Starting again ends the loop that runs.
  start() {
    const gen = ++this.gen;
    if (this.conn) this.conn.close();
    if (this.wake) this.wake();
    this.loop(gen);
  }

  // stop ends the connection (logout).
  stop() {
    this.gen++;
    if (this.conn) this.conn.close();
    if (this.wake) this.wake();
    this.everOnline = false;
    this.setPhase('offline');
  }

  stopped(gen) {
    return gen !== this.gen;
  }

  // reconnectNow cuts the backoff short (the user asked, or the network
  // came back).
  reconnectNow() {
    if (this.wake) this.wake();
  }

  async loop(gen) {
    let failures = 0;
    let avoid = '';
    while (!this.stopped(gen)) {
      this.setPhase(this.everOnline ? 'reconnecting' : 'connecting', failures ? 'trying again' : '');
      let nodes = this.nodes;
      this.nodes = null;
      if (!nodes || nodes.length === 0) {
        try {
          nodes = (await gatewayCall('GET', '/api/nodes')).nodes || [];
        } catch (e) {
          nodes = [];
          this.setPhase(this.phase, e.message);
        }
      }
      if (this.stopped(gen)) return;
      let result = { ended: 'failed' };
      for (const n of this.order(nodes, avoid)) {
        if (this.stopped(gen)) return;
        result = await this.session(n, gen);
        if (result.ended !== 'failed') break;
      }
      avoid = '';
      if (this.stopped(gen)) return;
      switch (result.ended) {
        case 'kicked':
          this.setPhase('kicked');
          return;
        case 'expired':
          this.setPhase('expired');
          return;
        case 'drain':
          // The node is shutting down: move at once, elsewhere.
          avoid = result.node;
          failures = 0;
          continue;
        case 'lost':
          failures = 0;
          break;
        default:
          break;
      }
      failures++;
      // The first retry comes soon, spread over half a second so that the
      // clients of a node that died do not all come back at once; then
      // exponential backoff up to 10 s.
      const base = failures === 1 ? 100 : Math.min(10000, 500 * 2 ** (failures - 2));
      const delay = failures === 1 ? base + Math.random() * 500 : base * (0.5 + Math.random() / 2);
      this.setPhase(this.everOnline ? 'reconnecting' : 'connecting',
        failures > 1 ? `no node reachable; retrying in ${Math.round(delay / 1000)} s` : '');
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, delay);
      });
      this.wake = null;
    }
  }

  // order puts the preferred node first and the node to avoid last.
  order(nodes, avoid) {
    const list = nodes.filter((n) => n && typeof n.ws === 'string');
    const rank = (n) => (n.id === this.preferNode ? 0 : n.id === avoid ? 2 : 1);
    return list.map((n, i) => [n, i]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]).map((x) => x[0]);
  }

  // session connects to node n, logs in, syncs, and serves until the
  // connection ends. It returns {ended}: 'failed' (never got online: try
  // the next node), 'lost', 'drain' (with node), 'kicked', 'expired' or
  // 'stopped'.
  async session(n, gen) {
    let closedResolve;
    const closed = new Promise((r) => {
      closedResolve = r;
    });
    const flags = { kicked: false, drain: false };
    const conn = new Connection(n.ws, {
      onPush: (action, data) => this.push(conn, flags, action, data),
      onClose: (how) => closedResolve(how),
    });
    try {
      await conn.open();
    } catch (e) {
      return { ended: 'failed' };
    }
    if (this.stopped(gen)) {
      conn.close();
      return { ended: 'stopped' };
    }
    let login;
    try {
      const device = deviceName();
      login = await conn.request('login', device ? { token: this.token, device } : { token: this.token });
    } catch (e) {
      conn.close();
      if (e instanceof RequestError && e.code === 401) return { ended: 'expired' };
      return { ended: 'failed' };
    }
    if (this.stopped(gen)) {
      conn.close();
      return { ended: 'stopped' };
    }
    this.conn = conn;
    this.node = login.node;
    this.setPhase('syncing');
    try {
      await this.catchUp(conn);
    } catch (e) {
      conn.close();
      this.conn = null;
      return { ended: flags.kicked ? 'kicked' : 'failed' };
    }
    if (conn.closed) {
      this.conn = null;
      return { ended: flags.kicked ? 'kicked' : flags.drain ? 'drain' : 'lost', node: login.node };
    }
    const first = !this.everOnline;
    this.everOnline = true;
    this.setPhase('online');
    if (!first) this.onNotice(`Reconnected to ${login.node}; up to date.`);
    for (const c of this.store.convs.values()) {
      if (c.hasGap()) this.syncConv(c.id); // a push skipped seqs during the catch-up
    }
    this.flushOutbox(conn);
    this.refreshPresence(conn);
    const ping = setInterval(() => {
      conn.request('ping', {}).catch(() => {});
    }, PING_EVERY);
    await closed;
    clearInterval(ping);
    if (this.conn === conn) this.conn = null;
    if (this.stopped(gen)) return { ended: 'stopped' };
    if (flags.kicked) return { ended: 'kicked' };
    if (flags.drain) return { ended: 'drain', node: login.node };
    return { ended: 'lost' };
  }

  push(conn, flags, action, data) {
    switch (action) {
      case 'message': {
        if (conn !== this.conn) return; // not logged in yet, or replaced
        if (typeof data.conv === 'string' && data.conv.startsWith('room:') && !this.store.conv(data.conv, false) &&
            !this.store.hasLeft(data.conv)) {
          // A room new to this client (joined a moment ago, the reply is on
          // its way): it starts here, like a join does; older messages load
          // on scrolling back.
          const c = this.store.conv(data.conv);
          if (c) c.top = Math.max(0, (data.seq || 1) - 1);
        }
        const gaps = this.store.add([data], { countUnread: true });
        for (const g of gaps) this.syncConv(g);
        break;
      }
      case 'member':
        // A member joined or left a room: an event of the room's
        // conversation, held like a message for its seq.
        if (typeof data.conv !== 'string') return;
        this.push(conn, flags, 'message', { id: data.id, conv: data.conv, seq: data.seq, from: data.username, room: data.room,
          kind: data.joined ? 'join' : 'leave', text: '', ts: data.ts });
        break;
      case 'presence':
        if (typeof data.username === 'string') this.store.setPresence(data.username, !!data.online);
        break;
      case 'typing':
        if (conn === this.conn && typeof data.conv === 'string') this.store.setTyping(data.conv, data.from);
        break;
      case 'read':
        if (conn === this.conn && typeof data.conv === 'string') this.store.setRead(data.conv, data.user, data.seq);
        break;
      case 'roomDeleted':
        if (conn !== this.conn || typeof data.room !== 'string') return;
        this.store.removeConv(roomConv(data.room));
        this.onNotice(`Room ${data.room} was deleted${data.reason ? `: ${data.reason}` : ''}.`);
        break;
      case 'kicked':
        flags.kicked = true;
        break;
      case 'node':
        if (data.reconnect) {
          flags.drain = true;
          this.onNotice(`Node ${this.node || ''} is shutting down; moving to another node.`);
          conn.close();
        }
        break;
      default:
        if (conn === this.conn) this.onPush(action, data);
        break;
    }
  }

  // ---- sync ----------------------------------------------------------------

  // catchUp brings the store up to date after a login: every known
  // conversation from its top, then an empty sync to learn of
  // conversations that began meanwhile (a direct message from someone new,
  // a room joined elsewhere) and of rooms left elsewhere.
  async catchUp(conn) {
    const known = this.store.offsets();
    const fresh = !this.everOnline && Object.keys(known).length === 0;
    if (!fresh) await this.syncFrom(conn, known, true);
    const all = await conn.request('sync', {});
    const listed = Object.keys(all.convs || {});
    for (const [cv, sc] of Object.entries(all.convs || {})) {
      if (cv in known) {
        this.readPositions(cv, sc);
        continue;
      }
      this.store.rejoined(cv); // a member again (joined in another session)
      const c = this.store.conv(cv);
      if (!c) continue;
      this.readPositions(cv, sc);
      if (sc.more) {
        // A long conversation: show its newest page; older ones load when
        // the user scrolls back.
        await this.loadNewest(conn, c, sc.latest, !fresh);
      } else {
        const gaps = this.store.add(sc.messages || [], { countUnread: !fresh });
        c.top = Math.max(c.top, sc.latest || 0);
        if (gaps.length) this.syncConv(cv);
      }
    }
    if (listed.length < SYNC_BATCH) {
      // Rooms the user is no longer a member of (left in another session).
      for (const cv of Object.keys(known)) {
        if (cv.startsWith('room:') && !listed.includes(cv)) this.store.removeConv(cv);
      }
    }
  }

  async loadNewest(conn, c, latest, countUnread) {
    const r = await conn.request('history', { conv: c.id, limit: HISTORY_PAGE });
    c.top = Math.max(c.top, latest || 0);
    this.store.add(r.messages || [], { countUnread });
  }

  // syncFrom syncs conversations from the given offsets until nothing is
  // missing ("more" absent), batching at the server's limit.
  async syncFrom(conn, offsets, countUnread) {
    let todo = Object.entries(offsets);
    while (todo.length) {
      const batch = Object.fromEntries(todo.slice(0, SYNC_BATCH));
      todo = todo.slice(SYNC_BATCH);
      const r = await conn.request('sync', { convs: batch });
      const convs = r.convs || {};
      for (const cv of Object.keys(batch)) {
        const sc = convs[cv];
        if (!sc) {
          // Skipped: a room the user is no longer a member of.
          if (cv.startsWith('room:')) this.store.removeConv(cv);
          continue;
        }
        const c = this.store.conv(cv);
        if (sc.rebuild) {
          await this.rebuild(conn, c, sc.floor || 0, sc.latest || 0);
          continue;
        }
        this.readPositions(cv, sc);
        this.store.add(sc.messages || [], { countUnread });
        const msgs = sc.messages || [];
        if (sc.more) {
          // More to come; none at all means the server ran out of time
          // before reading this one: again from the same offset.
          todo.push([cv, msgs.length ? msgs[msgs.length - 1].seq : batch[cv]]);
        } else if (sc.settling) {
          // Messages lost with Redis are still being given back below
          // the server's latest (docs/protocol.md, section 4.5): keep the
          // top where it is and ask again in a moment.
          setTimeout(() => this.syncConv(cv), 1000);
        } else {
          c.top = Math.max(c.top, sc.latest || 0);
        }
      }
    }
  }

  // rebuild uploads what the client holds above the floor, below which
  // the server lost nothing: the server lost recent state
  // (docs/protocol.md, section 4.5). If it cannot take them, the client
  // goes on from the server's latest and keeps what it holds (messages
  // are told apart by id).
  async rebuild(conn, c, floor, latest) {
    const held = c.msgs.filter((m) => m.seq > floor);
    if (held.length) {
      try {
        // In requests of at most 1000 messages and well under the 64 KiB
        // frame limit (a larger frame closes the connection).
        const enc = new TextEncoder();
        for (let i = 0; i < held.length;) {
          const batch = [];
          let size = 0;
          while (i < held.length && batch.length < 1000) {
            const n = enc.encode(JSON.stringify(held[i])).length + 1;
            if (batch.length && size + n > 60000) break;
            batch.push(held[i++]);
            size += n;
          }
          await conn.request('rebuild', { conv: c.id, messages: batch });
        }
        return;
      } catch (e) {
        if (e.code === LOST || e.code === TIMEOUT) throw e;
      }
    }
    c.top = latest;
  }

  // syncTracked fetches, on the connection in use, what the store misses
  // of conversations ids from their tops (support conversations just
  // tracked: an agent's on a new connection, a visitor's resumed one).
  async syncTracked(ids, countUnread) {
    if (!this.conn || this.phase !== 'online') throw new RequestError(LOST, 'not connected; reconnecting');
    const offsets = {};
    for (const id of ids) {
      const c = this.store.conv(id, false);
      if (c) offsets[id] = c.top;
    }
    if (Object.keys(offsets).length) await this.syncFrom(this.conn, offsets, countUnread);
  }

  // syncConv fetches what a conversation misses (a push skipped seqs).
  syncConv(cv) {
    this.syncQueue.add(cv);
    if (this.syncing) return;
    this.syncing = true;
    (async () => {
      try {
        while (this.syncQueue.size && this.conn && this.phase === 'online') {
          const conn = this.conn;
          const offsets = {};
          for (const id of this.syncQueue) {
            const c = this.store.conv(id, false);
            if (c) offsets[id] = c.top;
          }
          this.syncQueue.clear();
          try {
            await this.syncFrom(conn, offsets, true);
          } catch (e) {
            if (!retryable(e) || e.code === LOST || e.code === TIMEOUT) break; // the reconnect syncs
            for (const id of Object.keys(offsets)) this.syncQueue.add(id);
            await sleep(1000);
          }
        }
      } finally {
        this.syncing = false;
      }
    })();
  }

  // readPositions takes the read positions of a sync reply's conversation.
  readPositions(cv, sc) {
    const c = this.store.conv(cv, false);
    if (!c) return;
    if (typeof sc.read === 'number') this.store.setRead(cv, this.store.me, sc.read);
    if (typeof sc.peerRead === 'number' && c.kind === 'dm') this.store.setRead(cv, c.name, sc.peerRead);
  }

  // ---- typing, read marks, edits and recalls ---------------------------------

  // typing tells the others in conv that the user types, at most once a
  // second; best-effort.
  typing(conv) {
    if (!this.conn || this.phase !== 'online' || !conv || conv.startsWith('cs:')) return;
    const now = Date.now();
    if (now - (this.typingSent.get(conv) || 0) < TYPING_EVERY) return;
    this.typingSent.set(conv, now);
    this.conn.request('typing', { conv }).catch(() => {});
  }

  // markRead records that the user has read conv up to seq, when that is
  // further than sent before.
  markRead(conv, seq) {
    if (!this.conn || this.phase !== 'online' || !conv || conv.startsWith('cs:') || !(seq > 0)) return;
    const c = this.store.conv(conv, false);
    if (!c || seq <= Math.max(c.readMine, this.readSent.get(conv) || 0)) return;
    this.readSent.set(conv, seq);
    this.conn.request('read', { conv, seq }).then((r) => this.store.setRead(conv, this.store.me, r.seq)).catch(() => {
      this.readSent.delete(conv); // sent again with the next message shown
    });
  }

  // edit replaces the text of the user's message seq of conv; recall takes
  // it back. They resolve with the event's reply; a RequestError says why
  // not (its message is the server's).
  edit(conv, seq, text) {
    if (!this.conn || this.phase !== 'online') return Promise.reject(new RequestError(LOST, 'not connected; try again in a moment'));
    return this.conn.request('edit', { conv, seq, text }).then((r) => this.applyOwn(r, 'edit', seq, text));
  }

  recall(conv, seq) {
    if (!this.conn || this.phase !== 'online') return Promise.reject(new RequestError(LOST, 'not connected; try again in a moment'));
    return this.conn.request('recall', { conv, seq }).then((r) => this.applyOwn(r, 'recall', seq, ''));
  }

  // applyOwn holds the event an edit or recall reply names: the connection
  // that made it gets the reply, not a push.
  applyOwn(r, kind, ref, text) {
    const c = this.store.conv(r.conv, false);
    const m = { id: r.id, conv: r.conv, seq: r.seq, from: this.store.me, kind, ref, text, ts: r.ts };
    if (c && c.kind === 'dm') m.to = c.name;
    if (c && c.kind === 'room') m.room = c.name;
    const gaps = this.store.add([m]);
    for (const g of gaps) this.syncConv(g);
    return r;
  }

  // ---- sending -------------------------------------------------------------

  // send queues text for conversation conv and sends it when connected.
  send(conv, text) {
    if (!this.store.enqueue(conv, text)) return;
    if (this.conn && this.phase === 'online') this.flushOutbox(this.conn);
  }

  retry(e) {
    this.store.retry(e);
    if (this.conn && this.phase === 'online') this.flushOutbox(this.conn);
  }

  // flushOutbox sends the queued messages one at a time, in order, over
  // conn. A lost connection leaves the rest queued for the next one; 429
  // and 503 are retried with backoff; any other error marks the message
  // failed (the user can retry or discard it).
  async flushOutbox(conn) {
    if (this.flushing) return;
    this.flushing = true;
    let backoff = 500;
    try {
      while (conn === this.conn && !conn.closed) {
        const e = this.store.nextQueued();
        if (!e) break;
        this.store.setState(e, 'sending');
        try {
          const r = await conn.request('chat', { ...e.target, text: e.text, clientMsgId: e.cid });
          backoff = 500;
          const gaps = this.store.ack(e, r, this.store.me);
          for (const g of gaps) this.syncConv(g);
        } catch (err) {
          if (err.code === LOST || err.code === TIMEOUT) {
            this.store.setState(e, 'queued');
            break;
          }
          if (retryable(err)) {
            this.store.setState(e, 'queued', err.message);
            await sleep(backoff);
            backoff = Math.min(backoff * 2, 8000);
            continue;
          }
          this.store.setState(e, 'failed', err.message);
        }
      }
    } finally {
      this.flushing = false;
    }
    // Something may have been queued while the last request was out.
    if (conn === this.conn && !conn.closed && this.store.nextQueued()) this.flushOutbox(conn);
  }

  // ---- requests of the view ---------------------------------------------------

  // request runs an action on the current connection.
  request(action, data, timeoutMs) {
    if (!this.conn || this.phase !== 'online') {
      return Promise.reject(new RequestError(LOST, 'not connected; reconnecting'));
    }
    return this.conn.request(action, data, timeoutMs);
  }

  // loadOlder fetches the page before the oldest held message of c.
  async loadOlder(c) {
    const before = c.msgs.length ? c.low : c.top + 1;
    const r = await this.request('history', { conv: c.id, before, limit: HISTORY_PAGE });
    const msgs = r.messages || [];
    if (msgs.length < HISTORY_PAGE) c.complete = true;
    this.store.add(msgs, { older: true });
    if (msgs.length === 0) this.store.emit('messages', { conv: c.id, added: [], updated: [], older: true });
  }

  // openDM checks that the user exists and makes the conversation.
  async openDM(user) {
    const info = await this.request('userInfo', { username: user });
    this.store.setPresence(user, !!info.online);
    return this.store.conv(dmConv(this.store.me, user));
  }

  async joinRoom(name) {
    const r = await this.request('joinRoom', { room: name });
    const cv = roomConv(r.room || name);
    this.store.rejoined(cv);
    const known = this.store.conv(cv, false);
    const c = this.store.conv(cv);
    const recent = r.recent || [];
    if (!known) {
      // A room new to this client: it starts at the room's newest
      // messages; older ones load when the user scrolls back.
      c.top = recent.length ? recent[recent.length - 1].seq : 0;
      if (recent.length === 0) c.complete = true;
    }
    c.members = r.members || [];
    c.membersAt = Date.now();
    const gaps = this.store.add(recent);
    for (const g of gaps) this.syncConv(g);
    this.store.emit('convs');
    this.refreshMembers(c);
    return c;
  }

  async leaveRoom(name) {
    await this.request('leaveRoom', { room: name });
    this.store.removeConv(roomConv(name));
  }

  async rooms() {
    return (await this.request('rooms', {})).rooms || [];
  }

  async popular(n = 10) {
    return (await this.request('popular', { n })).words || [];
  }

  // refreshMembers asks for the presence of a room's members.
  refreshMembers(c) {
    if (!c.members) return;
    for (const u of c.members.slice(0, 50)) {
      if (u === this.store.me) continue;
      this.request('userInfo', { username: u })
        .then((r) => this.store.setPresence(u, !!r.online))
        .catch(() => {});
    }
  }

  // refreshPresence asks for the presence of the peers of the direct
  // conversations (pushes only come from users who share a room).
  refreshPresence(conn) {
    const peers = [...this.store.convs.values()].filter((c) => c.kind === 'dm').map((c) => c.name);
    for (const u of [...new Set(peers)].slice(0, 100)) {
      if (u === this.store.me) continue;
      conn.request('userInfo', { username: u })
        .then((r) => this.store.setPresence(u, !!r.online))
        .catch(() => {});
    }
  }
}
