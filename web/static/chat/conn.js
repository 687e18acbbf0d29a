// The transport of the chat client: the gateway's HTTP API and one
// WebSocket connection to a chat node (docs/protocol.md, sections 2 and 3).

// RequestError is a failed request: code is the reply's code (400, 401,
// 403, 404, 413, 429, 500, 503) or one of the local codes below.
export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export const LOST = -1; // the connection ended before the reply came
export const TIMEOUT = -2; // no reply in time
export const NETWORK = -3; // the gateway could not be reached

// retryable reports whether a request that failed with err may succeed if
// sent again later (on this connection or the next).
export function retryable(err) {
  return err instanceof RequestError &&
    (err.code === 429 || err.code === 503 || err.code === LOST || err.code === TIMEOUT || err.code === NETWORK);
}

// gatewayCall sends a JSON request to the gateway and returns the decoded
// reply, or throws a RequestError with the reply's status and error text.
export async function gatewayCall(method, path, body) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 10000);
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
      cache: 'no-store',
      signal: ctl.signal,
    });
  } catch (e) {
    throw new RequestError(NETWORK, 'cannot reach the gateway');
  } finally {
    clearTimeout(timer);
  }
  let data = {};
  try {
    data = await resp.json();
  } catch (e) {
    // An empty or non-JSON body: the status says enough.
  }
  if (!resp.ok) {
    throw new RequestError(resp.status, (data && data.error) || `gateway answered ${resp.status}`);
  }
  return data;
}

// Connection is one WebSocket to a chat node. It matches replies to
// requests by id and hands pushes to onPush. onClose is called once, when
// the socket ends for any reason, with {code, reason}.
export class Connection {
  constructor(url, { onPush, onClose }) {
    this.url = url;
    this.onPush = onPush;
    this.onClose = onClose;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.closed = false;
  }

  // open connects and resolves once the socket is open; it rejects if the
  // socket fails or does not open within timeoutMs.
  open(timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (e) {
        reject(new RequestError(LOST, `bad node address ${this.url}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) {
          ws.close();
          reject(new RequestError(TIMEOUT, `no answer from ${this.url}`));
        }
      }, timeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve();
      };
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onclose = (ev) => {
        clearTimeout(timer);
        this.ended({ code: ev.code, reason: ev.reason });
        if (!opened) reject(new RequestError(LOST, `cannot connect to ${this.url}`));
      };
      // onerror is always followed by onclose, which does the work.
    });
  }

  receive(raw) {
    let f;
    try {
      f = JSON.parse(raw);
    } catch (e) {
      return;
    }
    if (!f || typeof f !== 'object') return;
    if (f.code === undefined) { // a push has no code (section 3.2)
      this.onPush(f.action, f.data || {});
      return;
    }
    const p = this.pending.get(f.id);
    if (!p) return;
    this.pending.delete(f.id);
    clearTimeout(p.timer);
    if (f.code === 0) p.resolve(f.data || {});
    else p.reject(new RequestError(f.code, f.error || `error ${f.code}`));
  }

  // request sends an action and resolves with the reply's data. A reply
  // that does not come within timeoutMs rejects with TIMEOUT and closes the
  // connection: a node that does not answer is treated as gone (every
  // action answers within 5 s on a healthy node).
  request(action, data = {}, timeoutMs = 10000) {
    if (this.closed || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RequestError(LOST, 'not connected'));
    }
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestError(TIMEOUT, `${action}: no reply in ${timeoutMs / 1000} s`));
        this.close();
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ action, id, data }));
    });
  }

  // close ends the connection; onClose follows.
  close() {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    this.ended({ code: 1000, reason: 'closed by the client' });
  }

  ended(how) {
    if (this.closed) return;
    this.closed = true;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new RequestError(LOST, 'connection lost'));
    }
    this.pending.clear();
    this.onClose(how);
  }
}
