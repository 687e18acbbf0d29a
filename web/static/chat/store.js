// The chat client's state: conversations and their messages, presence, and
// the outbox of messages not yet acknowledged. Pure data, no network and no
// DOM: the client (client.js) feeds it, the view (view.js) listens to its
// events.
//
// Every conversation keeps its messages in seq order, each once (by id).
// Its "top" is the highest seq up to which it holds everything from where
// it started: that is the offset it syncs from after a reconnect
// (docs/protocol.md, section 7), so nothing is lost, and whatever arrives
// twice (push and sync, reply and push) is dropped by id.
//
// Support conversations (cs:<visitor>:<n>, customer service) are held only
// while tracked: the visitor's page tracks its open one, an agent's console
// those assigned to the agent. A sync or push of any other is dropped, so
// the closed conversations an agent once held never fill the store.

const encoder = new TextEncoder();

// compareBytes orders two strings by their UTF-8 bytes, as the server
// orders the two names of a direct conversation.
function compareBytes(a, b) {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

// validName is protocol.ValidName: 1 to 32 letters, digits, '_', '-', '.'.
export function validName(s) {
  return typeof s === 'string' && /^[\p{L}\p{Nd}_.-]{1,32}$/u.test(s);
}

// dmConv is the id of the direct conversation of users a and b.
export function dmConv(a, b) {
  return compareBytes(a, b) <= 0 ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

export function roomConv(name) {
  return `room:${name}`;
}

// isSupportConv reports whether id is a support conversation's.
export function isSupportConv(id) {
  return typeof id === 'string' && id.startsWith('cs:');
}

// parseConv splits a conversation id as seen by user me: {kind: 'dm',
// peer}, {kind: 'room', name} or {kind: 'cs', visitor}; null when
// malformed.
export function parseConv(id, me) {
  if (id.startsWith('dm:')) {
    const [a, b] = id.slice(3).split(':');
    if (!a || !b) return null;
    return { kind: 'dm', peer: a === me ? b : a };
  }
  if (id.startsWith('room:')) return { kind: 'room', name: id.slice(5) };
  if (isSupportConv(id)) {
    const rest = id.slice(3);
    const i = rest.lastIndexOf(':');
    if (i <= 0 || !/^[1-9][0-9]*$/.test(rest.slice(i + 1))) return null;
    return { kind: 'cs', visitor: rest.slice(0, i) };
  }
  return null;
}

// Conversation is one direct conversation, room or support conversation.
export class Conversation {
  constructor(id, me) {
    const p = parseConv(id, me);
    this.id = id;
    this.kind = p.kind;
    this.name = p.kind === 'dm' ? p.peer : p.kind === 'cs' ? p.visitor : p.name; // the other user, the room, or the visitor
    this.msgs = []; // held messages, ascending by seq (then id)
    this.byId = new Map();
    this.seqs = new Set();
    this.top = 0; // everything from the start of what is held up to top is held
    this.low = Infinity; // lowest seq held
    this.complete = false; // holds everything from seq 1 (nothing older to load)
    this.unread = 0;
    this.lastTs = 0;
    this.members = null; // room members, when known
    this.membersAt = 0; // when members were fetched (ms)
    this.support = null; // a support conversation: its SupportConv, when known
    this.readMine = 0; // how far this user has read it (on any device)
    this.readPeer = 0; // in a direct conversation, how far the other user has
    this.typing = new Map(); // user -> until when (ms) they show as typing
    this.changed = []; // messages an insert changed by an event (see insert)
  }

  // hasOlder reports whether older messages than those held exist.
  hasOlder() {
    return !this.complete && this.low > 1 && (this.msgs.length > 0 || this.top > 0);
  }

  // hasGap reports whether it holds messages above top: something between
  // is missing and a sync from top fetches it.
  hasGap() {
    return this.msgs.length > 0 && this.msgs[this.msgs.length - 1].seq > this.top;
  }

  // insert adds m unless it is held. It returns 'added' (with this.lastIndex
  // the new position), 'updated' (held, but its text changed: the server's
  // stored text replaces one built from a reply) or '' (nothing to do).
  //
  // An edit or recall event changes the message it names (its ref) when
  // that message is held, and a message inserted takes the events held for
  // it, so the order they arrive in does not matter; the messages they
  // changed are in this.changed until the next insert.
  insert(m) {
    this.changed = [];
    const old = this.byId.get(m.id);
    if (old) {
      let changed = false;
      if (m.recalled && !old.recalled) {
        old.recalled = true;
        old.text = '';
        changed = true;
      } else if (!old.recalled && old.text !== m.text && m.text) {
        old.text = m.text;
        changed = true;
      }
      if (m.edited && m.edited !== old.edited) {
        old.edited = m.edited;
        changed = true;
      }
      return changed ? 'updated' : '';
    }
    let lo = 0;
    let hi = this.msgs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const x = this.msgs[mid];
      if (x.seq < m.seq || (x.seq === m.seq && x.id < m.id)) lo = mid + 1;
      else hi = mid;
    }
    this.msgs.splice(lo, 0, m);
    this.lastIndex = lo;
    this.byId.set(m.id, m);
    this.seqs.add(m.seq);
    if (m.seq < this.low) this.low = m.seq;
    if (m.seq === 1) this.complete = true;
    if (m.seq === this.top + 1) {
      this.top = m.seq;
      while (this.seqs.has(this.top + 1)) this.top++;
    }
    if (m.ts > this.lastTs) this.lastTs = m.ts;
    if (m.kind === 'edit' || m.kind === 'recall') {
      const target = this.msgs.find((x) => x.seq === m.ref && !x.kind);
      if (target && applyEvent(target, m)) this.changed.push(target);
    } else if (!m.kind) {
      for (const e of this.msgs) {
        if ((e.kind === 'edit' || e.kind === 'recall') && e.ref === m.seq) applyEvent(m, e);
      }
    }
    return 'added';
  }

  // lastSeq is the highest seq held.
  lastSeq() {
    return this.msgs.length ? this.msgs[this.msgs.length - 1].seq : 0;
  }
}

// applyEvent applies an edit or recall event e to message m and reports
// whether it changed m. A recall is final; an edit later than the one
// applied wins (by the event's seq).
function applyEvent(m, e) {
  if (m.recalled) return false;
  if (e.kind === 'recall') {
    m.recalled = true;
    m.text = '';
    return true;
  }
  if (m.editSeq && m.editSeq > e.seq) return false;
  m.editSeq = e.seq;
  m.text = e.text;
  m.edited = e.ts;
  return true;
}

// Store holds the state. It is an EventTarget with these events (detail
// in brackets): "convs" (the list changed: a conversation came or went,
// unread counts, order, presence), "messages" ({conv, added: [messages],
// updated: [messages], older: bool}), "outbox" ({conv}), "active" ({conv}).
// TYPING_SHOWN is how long a typing push shows (ms): no push says that
// someone stopped.
export const TYPING_SHOWN = 3000;

export class Store extends EventTarget {
  constructor() {
    super();
    this.reset('');
  }

  reset(me) {
    this.me = me;
    this.convs = new Map();
    this.presence = new Map(); // username -> online
    this.outbox = []; // entries in send order: see enqueue
    this.acked = new Set(); // ids of own messages acknowledged lately
    this.left = new Set(); // rooms left in this session: late pushes of them are dropped
    this.tracked = new Set(); // the support conversations held (see track)
    this.names = new Map(); // visitor id -> display name
    this.active = null;
    this.visible = true; // whether the page is on screen
    this.nextLocal = 1;
    this.emit('convs');
    this.emit('active', { conv: null });
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  conv(id, create = true) {
    let c = this.convs.get(id);
    if (!c && create && parseConv(id, this.me) && (!isSupportConv(id) || this.tracked.has(id))) {
      c = new Conversation(id, this.me);
      this.convs.set(id, c);
      this.emit('convs');
    }
    return c;
  }

  removeConv(id) {
    if (id.startsWith('room:')) this.left.add(id);
    if (!this.convs.delete(id)) return;
    this.outbox = this.outbox.filter((e) => e.conv !== id || e.state !== 'failed');
    if (this.active === id) this.setActive(null);
    this.emit('convs');
  }

  // displayName is how user is shown: a visitor by its name, when known.
  displayName(user) {
    return this.names.get(user) || user;
  }

  // track holds support conversation id from now on and returns it.
  track(id) {
    if (!isSupportConv(id) || !parseConv(id, this.me)) return undefined;
    this.tracked.add(id);
    return this.conv(id);
  }

  // untrack forgets support conversation id, with what waits to be sent
  // to it (it is closed or no longer the user's: a send would fail).
  untrack(id) {
    this.tracked.delete(id);
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((e) => e.conv !== id);
    if (this.outbox.length !== before) this.emit('outbox', { conv: id });
    this.removeConv(id);
  }

  hasLeft(id) {
    return this.left.has(id);
  }

  // rejoined forgets that room id was left.
  rejoined(id) {
    this.left.delete(id);
  }

  // offsets maps every conversation to its top: what a reconnect syncs.
  offsets() {
    const out = {};
    for (const c of this.convs.values()) out[c.id] = c.top;
    return out;
  }

  // sortedConvs lists the direct conversations and rooms, latest activity
  // first.
  sortedConvs() {
    return [...this.convs.values()].filter((c) => c.kind !== 'cs')
      .sort((a, b) => (b.lastTs - a.lastTs) || a.id.localeCompare(b.id));
  }

  // supportConvs lists the support conversations held, the longest held
  // first.
  supportConvs() {
    const since = (c) => (c.support && (c.support.assigned || c.support.opened)) || 0;
    return [...this.convs.values()].filter((c) => c.kind === 'cs')
      .sort((a, b) => (since(a) - since(b)) || a.id.localeCompare(b.id));
  }

  // setRead records that user read conversation conv up to seq (positions
  // only rise). This user's own position, from any device, clears what it
  // covers of the unread count.
  setRead(conv, user, seq) {
    const c = this.convs.get(conv);
    if (!c || typeof seq !== 'number') return;
    if (user === this.me) {
      if (seq <= c.readMine) return;
      c.readMine = seq;
      const unread = c.msgs.filter((m) => !m.kind && m.from !== this.me && m.seq > seq).length;
      if (unread < c.unread) c.unread = unread;
      this.emit('convs');
    } else {
      if (seq <= c.readPeer) return;
      c.readPeer = seq;
    }
    this.emit('read', { conv });
  }

  // setTyping shows user as typing in conv for a few seconds.
  setTyping(conv, user) {
    const c = this.convs.get(conv);
    if (!c || user === this.me) return;
    c.typing.set(user, Date.now() + TYPING_SHOWN);
    this.emit('typing', { conv });
  }

  // typists returns who is typing in c now.
  typists(c) {
    const now = Date.now();
    const out = [];
    for (const [u, until] of c.typing) {
      if (until > now) out.push(u);
      else c.typing.delete(u);
    }
    return out.sort();
  }

  totalUnread() {
    let n = 0;
    for (const c of this.convs.values()) n += c.unread;
    return n;
  }

  setActive(id) {
    this.active = id;
    const c = id && this.convs.get(id);
    if (c && c.unread && this.visible) c.unread = 0;
    this.emit('active', { conv: id });
    this.emit('convs');
  }

  setVisible(visible) {
    this.visible = visible;
    const c = this.active && this.convs.get(this.active);
    if (visible && c && c.unread) {
      c.unread = 0;
      this.emit('convs');
    }
  }

  // add stores messages (of any conversations). countUnread: messages from
  // others that are new count as unread unless their conversation is on
  // screen. older: they come from scrolling back. It returns the ids of
  // the conversations that now have a gap.
  add(msgs, { countUnread = false, older = false } = {}) {
    const byConv = new Map();
    for (const m of msgs) {
      if (!m || typeof m.conv !== 'string' || typeof m.seq !== 'number' || this.left.has(m.conv)) continue;
      const c = this.conv(m.conv);
      if (!c) continue;
      let d = byConv.get(c);
      if (!d) byConv.set(c, (d = { conv: c.id, added: [], updated: [], older }));
      const r = c.insert(m);
      if (r === 'added') {
        d.added.push(m);
        if (m.kind) {
          // An event (an edit, a recall, a member joining or leaving): held
          // for its seq, neither unread nor a copy of an own message.
        } else if (m.from !== this.me) {
          if (countUnread && m.seq > c.readMine && !(this.active === c.id && this.visible)) c.unread++;
          if (c.typing.delete(m.from)) this.emit('typing', { conv: c.id }); // they sent what they typed
        } else if (!older) {
          this.claim(m);
        }
      } else if (r === 'updated') {
        d.updated.push(c.byId.get(m.id));
      }
      for (const x of c.changed) d.updated.push(x);
    }
    const gaps = [];
    for (const [c, d] of byConv) {
      if (d.added.length || d.updated.length) this.emit('messages', d);
      if (c.hasGap()) gaps.push(c.id);
    }
    if (byConv.size) this.emit('convs');
    return gaps;
  }

  // ---- outbox ------------------------------------------------------------
  //
  // A message the user sends waits in the outbox until its chat reply
  // comes, and is shown as pending meanwhile. Its clientMsgId makes a
  // resend after a reconnect safe (the server stores it once). If its
  // stored copy arrives before the reply (a room push, or a sync after a
  // reconnect when the reply was lost), the entry is "shadowed" by that
  // copy: hidden, so the message never shows twice. Entries are sent one
  // at a time in order, and the server gives them seqs in that order, so a
  // copy of an own message that no reply claimed yet belongs to the oldest
  // entry of its conversation that was sent and is not shadowed.

  // enqueue adds a message to send to conversation conv.
  enqueue(conv, text) {
    const c = this.conv(conv);
    if (!c) return null; // a support conversation no longer held
    const e = {
      local: this.nextLocal++,
      cid: clientMsgId(),
      conv,
      target: c.kind === 'dm' ? { to: c.name } : c.kind === 'cs' ? { conv: c.id } : { room: c.name },
      text,
      created: Date.now(),
      state: 'queued', // 'queued' | 'sending' | 'failed'
      tried: false, // sent at least once: the server may hold it
      shadow: null, // id of the stored copy that hides this entry
      error: '',
    };
    this.outbox.push(e);
    this.emit('outbox', { conv });
    return e;
  }

  nextQueued() {
    return this.outbox.find((e) => e.state === 'queued');
  }

  // pending lists the entries of conv to show.
  pending(conv) {
    return this.outbox.filter((e) => e.conv === conv && !e.shadow);
  }

  setState(e, state, error = '') {
    e.state = state;
    e.error = error;
    if (state === 'sending') e.tried = true;
    this.emit('outbox', { conv: e.conv });
  }

  // claim gives an own stored message that no reply claimed to the entry
  // it most likely is.
  claim(m) {
    if (this.acked.has(m.id) || this.outbox.some((e) => e.shadow === m.id)) return;
    // Not a message from before the entry was written (a minute of slack
    // for the difference between this clock and the server's).
    const e = this.outbox.find((x) => x.conv === m.conv && x.tried && !x.shadow && x.state !== 'failed' &&
      m.ts >= x.created - 60000);
    if (e) {
      e.shadow = m.id;
      this.emit('outbox', { conv: e.conv });
    }
  }

  // ack takes the chat reply r of entry e: the entry leaves the outbox and
  // its message is stored (if its copy did not arrive yet).
  ack(e, r, me) {
    this.acked.add(r.id);
    if (this.acked.size > 500) this.acked.delete(this.acked.values().next().value);
    this.outbox = this.outbox.filter((x) => x !== e);
    const other = this.outbox.find((x) => x.shadow === r.id);
    if (other) {
      other.shadow = e.shadow; // they were swapped
    } else if (e.shadow && e.shadow !== r.id) {
      const held = this.convs.get(e.conv)?.byId.get(e.shadow);
      if (held) this.claim(held);
    }
    this.emit('outbox', { conv: e.conv });
    const m = { id: r.id, conv: r.conv, seq: r.seq, from: me, text: e.text, ts: r.ts, ...e.target };
    return this.add([m]);
  }

  discard(e) {
    this.outbox = this.outbox.filter((x) => x !== e);
    this.emit('outbox', { conv: e.conv });
  }

  retry(e) {
    this.setState(e, 'queued');
  }

  // ---- presence ----------------------------------------------------------

  setPresence(user, online) {
    if (this.presence.get(user) === online) return;
    this.presence.set(user, online);
    this.emit('convs');
    this.emit('presence', { user });
  }
}

// clientMsgId is a random id for a message's idempotent resend.
function clientMsgId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return 'w-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
