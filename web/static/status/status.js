// The cluster status page: polls GET /api/cluster every second and draws
// the cluster: health, leader with its term and epoch, every node with its connections
// and message rate, the peer links, and the history backlog.
//
// Message rates come from the nodes' cumulative message counters: the
// difference between two readings over the time between them, over the
// last few seconds (nodes report their counters once a second).

import { el, $, setText, show, duration, fullTime } from '../common/dom.js';
import { lineChart, sparkline, topology } from './charts.js';

const POLL_MS = 1000;
const POLL_HIDDEN_MS = 5000; // while the page is not on screen
const WINDOW_MS = 120000; // what the charts show at most
const MIN_SPAN_MS = 30000; // and at least
const RATE_SPAN_MS = 5000; // a rate is measured over this much time
const GONE_KEEP_MS = 120000; // a node that left stays on the page this long
const BACKLOG_WARN = 10000;
const PALETTE = ['#2857d6', '#1e9e5a', '#c2410c', '#8b3fd6', '#0e8f9e', '#b8336a', '#6b7d12', '#996515'];

const samples = []; // {t, nodes: Map(id -> messages), backlog}
const colors = new Map(); // node id -> color, in order of first sight
const seen = new Map(); // node id -> {node, lastSeen, goneAt}
let last = null; // the last reply
let lastOk = 0; // when the last reply came (ms)
let failure = ''; // why the last poll failed

function colorOf(id) {
  if (!colors.has(id)) colors.set(id, PALETTE[colors.size % PALETTE.length]);
  return colors.get(id);
}

async function poll() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 3000);
  try {
    const resp = await fetch('/api/cluster', { cache: 'no-store', signal: ctl.signal });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.error || `gateway answered ${resp.status}`);
    take(body);
    failure = '';
  } catch (e) {
    failure = e.name === 'AbortError' ? 'the gateway did not answer in 3 s' : `the gateway cannot be reached (${e.message})`;
  } finally {
    clearTimeout(timer);
  }
  render();
  setTimeout(poll, document.visibilityState === 'visible' ? POLL_MS : POLL_HIDDEN_MS);
}

// take records a reply.
function take(c) {
  const now = Date.now();
  last = c;
  lastOk = now;
  const nodes = new Map();
  for (const n of c.nodes || []) {
    nodes.set(n.id, n.messages || 0);
    colorOf(n.id);
    seen.set(n.id, { node: n, lastSeen: now, goneAt: 0 });
  }
  for (const [id, s] of seen) {
    if (!nodes.has(id) && !s.goneAt) s.goneAt = now;
    if (s.goneAt && now - s.goneAt > GONE_KEEP_MS) seen.delete(id);
  }
  samples.push({ t: now, nodes, backlog: c.historyBacklog || 0 });
  while (samples.length && samples[0].t < now - WINDOW_MS - RATE_SPAN_MS) samples.shift();
}

// rateAt is node id's messages per second at sample k, or null when
// there is no earlier reading to compare with (a counter that went down
// means the node restarted: it starts over).
function rateAt(id, k) {
  const s = samples[k];
  if (!s.nodes.has(id)) return null;
  let j = k;
  while (j > 0 && samples[j - 1].nodes.has(id) && s.t - samples[j - 1].t <= RATE_SPAN_MS &&
    samples[j - 1].nodes.get(id) <= samples[j].nodes.get(id)) j--;
  if (j === k) return null;
  const dt = (s.t - samples[j].t) / 1000;
  return dt > 0 ? Math.max(0, (s.nodes.get(id) - samples[j].nodes.get(id)) / dt) : null;
}

function rateSeries(id) {
  const pts = [];
  for (let k = 0; k < samples.length; k++) {
    const r = rateAt(id, k);
    if (r !== null) pts.push([samples[k].t, r]);
  }
  return pts;
}

// ---- rendering ---------------------------------------------------------------------

function render() {
  const now = Date.now();
  const c = last || { nodes: [], leader: '', epoch: 0, term: 0 };
  const live = failure ? [] : c.nodes || [];
  const rates = new Map(live.map((n) => [n.id, rateAt(n.id, samples.length - 1) || 0]));
  const total = [...rates.values()].reduce((a, b) => a + b, 0);

  // Health and problems.
  const issues = [];
  let health = 'ok';
  if (failure) {
    issues.push(`No data: ${failure}.`);
    health = 'bad';
  } else if (!c.leader || live.length === 0) {
    issues.push('No leader: no node has published the cluster state in the last 3 s. Nodes may be down or electing.');
    health = 'bad';
  }
  for (const n of live) {
    if (!n.linked) {
      issues.push(`${n.id} is live but has no peer link from the leader: it cannot receive messages from other nodes.`);
      if (health === 'ok') health = 'warn';
    }
  }
  for (const [id, s] of seen) {
    if (s.goneAt) {
      issues.push(`${id} left the cluster ${duration((now - s.goneAt) / 1000)} ago; its users reconnect to other nodes.`);
      if (health === 'ok') health = 'warn';
    }
  }
  if ((c.historyBacklog || 0) > BACKLOG_WARN) {
    issues.push(`The history writer is behind: ${c.historyBacklog} messages wait for MongoDB.`);
    if (health === 'ok') health = 'warn';
  }
  const hb = $('#health');
  hb.dataset.health = health;
  setText($('#health-text'), { ok: 'Healthy', warn: 'Degraded', bad: failure ? 'Unreachable' : 'Down' }[health]);
  setText($('#updated'), lastOk ? `updated ${new Date(lastOk).toLocaleTimeString()}` : '');
  $('#updated').title = lastOk ? fullTime(lastOk) : '';
  const ul = $('#issues');
  ul.replaceChildren(...issues.map((t) => el('li', { text: t })));
  show(ul, issues.length > 0);
  ul.dataset.health = health;

  // Summary tiles.
  const leaderFor = c.leaderSince ? duration((now - c.leaderSince) / 1000) : '';
  tile('#t-leader', c.leader || '—', c.leader ? [leaderTerm(c), leaderFor && `for ${leaderFor}`].filter(Boolean).join(' · ') : 'none');
  const linked = live.filter((n) => n.linked).length;
  tile('#t-nodes', String(live.length), `${linked} linked`);
  tile('#t-conns', String(failure ? '—' : c.connections || 0), 'logged-in users');
  tile('#t-rate', failure ? '—' : total.toFixed(total < 10 ? 1 : 0), `${sumMessages(live)} since the nodes started`);
  tile('#t-backlog', failure ? '—' : String(c.historyBacklog || 0), 'messages not yet in MongoDB');
  tile('#t-gateway', c.gatewayUptimeSeconds ? duration(c.gatewayUptimeSeconds) : '—', '');
  $('#t-backlog').dataset.level = (c.historyBacklog || 0) > BACKLOG_WARN ? 'warn' : 'ok';

  // Customer service, once the leader has published it.
  const sup = !failure && c.support;
  show($('#support'), !!sup);
  if (sup) {
    tile('#t-queue', String(sup.queue), sup.queue ? `oldest waiting ${waitText(sup.oldestWait)}` : 'nobody waiting');
    tile('#t-wait', sup.assignments ? waitText(sup.waitP50) : '—',
      sup.assignments ? `median; p99 ${waitText(sup.waitP99)} over the last ${Math.min(sup.assignments, 1000)}` : 'no assignment yet');
    tile('#t-agents', `${sup.agentsReady} of ${sup.agents}`, `${Math.round(100 * sup.utilisation)}% of their capacity in use`);
    tile('#t-held', String(sup.assigned), `${sup.assignments} assigned by this leader`);
    $('#t-queue').dataset.level = sup.queue > 0 && sup.agentsReady === 0 ? 'warn' : 'ok';
  }

  // Topology.
  const drawn = [...seen.values()]
    .map((s) => ({
      id: s.node.id, color: colorOf(s.node.id), leader: !s.goneAt && s.node.id === c.leader,
      linked: s.node.linked, gone: !!s.goneAt || !!failure, connections: s.node.connections || 0,
    }))
    .sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
  $('#topology').replaceChildren(topology(drawn, failure ? '' : c.leader));

  // Charts.
  // The time axis grows with the data, from 30 s up to WINDOW_MS.
  const t1 = now;
  const first = samples.length ? samples[0].t : now;
  const t0 = Math.max(now - WINDOW_MS, Math.min(first, now - MIN_SPAN_MS));
  const ids = [...colors.keys()].filter((id) => seen.has(id));
  $('#rate-chart').replaceChildren(lineChart(
    ids.map((id) => ({ name: id, color: colorOf(id), points: rateSeries(id) })),
    { t0, t1, label: `Messages per second by node over the last minutes; now ${total.toFixed(1)} in total` }));
  $('#legend').replaceChildren(...ids.map((id) => el('li', {},
    el('span', { class: 'swatch', style: { background: colorOf(id) }, 'aria-hidden': 'true' }),
    el('span', { text: `${id} ${(rates.get(id) || 0).toFixed(1)}/s` }))));
  $('#backlog-chart').replaceChildren(lineChart(
    [{ name: 'backlog', color: '#c98a06', area: true, points: samples.map((s) => [s.t, s.backlog]) }],
    { t0, t1, width: 1200, height: 180, label: `History backlog over the last two minutes; now ${c.historyBacklog || 0}` }));

  renderNodes(c, rates, now);
}

// leaderTerm is "term 3 · epoch 395": the leader's place among the
// cluster's leaders (counted in ZooKeeper; 0 for a moment after an
// election) and its raw epoch, the ZooKeeper id fencing goes by.
function leaderTerm(c) {
  return c.term ? `term ${c.term} · epoch ${c.epoch}` : `epoch ${c.epoch}`;
}

// wrappable is a URL as text with a line-break opportunity after the
// scheme and before every ".", ":" and "/" after it, so that a URL too
// wide for its box wraps between its parts, never inside a number or name.
function wrappable(url) {
  const parts = [];
  const m = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url);
  const head = m ? m[0] : '';
  if (head) parts.push(head, el('wbr'));
  for (const piece of url.slice(head.length).split(/(?=[.:/])/)) parts.push(piece, el('wbr'));
  parts.pop();
  return parts;
}

function sumMessages(nodes) {
  return nodes.reduce((a, n) => a + (n.messages || 0), 0).toLocaleString();
}

// waitText formats a wait in milliseconds: "350 ms" below a second.
function waitText(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : duration(ms / 1000);
}

function tile(sel, value, sub) {
  const t = $(sel);
  setText($('.value', t), value);
  setText($('.sub', t), sub);
}

function renderNodes(c, rates, now) {
  const box = $('#nodes');
  const maxConn = Math.max(1, ...[...seen.values()].map((s) => s.node.connections || 0));
  const cards = [...seen.values()]
    .sort((a, b) => a.node.id.localeCompare(b.node.id, undefined, { numeric: true }))
    .map((s) => nodeCard(s, c, rates, maxConn, now));
  box.replaceChildren(...cards);
  show($('#no-nodes'), cards.length === 0);
}

function nodeCard(s, c, rates, maxConn, now) {
  const n = s.node;
  const gone = !!s.goneAt || !!failure;
  const leader = !gone && n.id === c.leader;
  const state = gone ? 'gone' : n.linked ? 'live' : 'unlinked';
  const color = colorOf(n.id);
  const rate = gone ? 0 : rates.get(n.id) || 0;
  const tags = [];
  if (leader) {
    tags.push(el('span', {
      class: 'badge-leader', text: c.term ? `Leader · term ${c.term}` : 'Leader',
      title: leaderTerm(c), dataset: { term: c.term || 0, epoch: c.epoch },
    }));
  }
  tags.push(el('span', { class: `tag ${state}`, text: { live: 'linked', unlinked: 'not linked', gone: 'gone' }[state] }));
  const series = rateSeries(n.id).slice(-60).map(([, v]) => v);
  const rows = [
    ['Total messages', (n.messages || 0).toLocaleString()],
    ['Uptime', gone ? `left ${duration((now - (s.goneAt || now)) / 1000)} ago` : n.uptimeSeconds ? duration(n.uptimeSeconds) : '—'],
  ];
  return el('article', { class: `node-card ${state}${leader ? ' is-leader' : ''}`, dataset: { node: n.id, state }, 'aria-label': `node ${n.id}` },
    el('header', {},
      el('span', { class: 'swatch', style: { background: color }, 'aria-hidden': 'true' }),
      el('h3', { text: n.id, title: n.id }),
      el('span', { class: 'tags' }, tags)),
    el('div', { class: 'metrics' },
      el('div', { class: 'metric' },
        el('span', { class: 'big', text: gone ? '—' : String(n.connections || 0), dataset: { metric: 'connections' } }),
        el('span', { class: 'label', text: 'connections' }),
        el('span', { class: 'meter', 'aria-hidden': 'true' },
          el('span', { style: { width: `${gone ? 0 : (100 * (n.connections || 0)) / maxConn}%`, background: color } }))),
      el('div', { class: 'metric' },
        el('span', { class: 'big', text: rate.toFixed(rate < 10 ? 1 : 0), dataset: { metric: 'rate' } }),
        el('span', { class: 'label', text: 'messages / s' }),
        sparkline(series, color, `${n.id} message rate, last minute`))),
    el('dl', {},
      el('dt', { class: 'wide', text: 'WebSocket' }),
      el('dd', { class: 'wide url', title: n.ws }, wrappable(n.ws || '')),
      rows.map(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })])));
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') render();
});

poll();
