// SVG drawings of the status page: line charts, sparklines and the
// cluster topology. Every label goes in as text (common/dom.js).

import { svg } from '../common/dom.js';

// niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten.
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) {
    if (v <= m * p) return m * p;
  }
  return 10 * p;
}

function fmt(v) {
  if (v >= 100) return String(Math.round(v));
  if (v >= 10) return v.toFixed(0);
  if (v === 0) return '0';
  return v.toFixed(v < 1 ? 2 : 1);
}

// lineChart draws series [{name, color, points: [[t, v], ...], area}] over
// the time window [t0, t1] (ms). label describes the chart for screen readers.
export function lineChart(series, { t0, t1, label, unit = '', width = 600, height = 200 }) {
  const W = width;
  const H = height;
  const L = 44; // left margin for the axis labels
  const B = 22; // bottom margin
  const T = 10;
  const R = 8;
  let max = 0;
  for (const s of series) for (const [, v] of s.points) max = Math.max(max, v);
  max = niceMax(max);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'linechart' });
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    root.append(
      svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
      svg('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis', text: fmt(v) + unit }));
  }
  const span = (t1 - t0) / 1000;
  for (const f of [0, 0.5, 1]) {
    const secs = Math.round(span * (1 - f));
    const txt = secs === 0 ? 'now' : secs % 60 === 0 ? `−${secs / 60} min` : `−${secs} s`;
    root.append(svg('text', { x: L + f * (W - L - R), y: H - 5, 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle', class: 'axis', text: txt }));
  }
  for (const s of series) {
    const pts = s.points.filter(([t]) => t >= t0);
    if (pts.length === 0) continue;
    const line = pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    if (s.area) {
      const first = x(pts[0][0]).toFixed(1);
      const last = x(pts[pts.length - 1][0]).toFixed(1);
      root.append(svg('polygon', { points: `${first},${y(0)} ${line} ${last},${y(0)}`, class: 'area', fill: s.color }));
    }
    root.append(svg('polyline', { points: line, class: 'series', stroke: s.color, dataset: { series: s.name } }));
    const [lt, lv] = pts[pts.length - 1];
    root.append(svg('circle', { cx: x(lt), cy: y(lv), r: 3, fill: s.color }));
  }
  return root;
}

// sparkline draws values as a small line with its area.
export function sparkline(values, color, label) {
  const W = 160;
  const H = 36;
  const max = niceMax(Math.max(0, ...values));
  const n = Math.max(values.length - 1, 1);
  const pts = values.map((v, i) => `${((i / n) * W).toFixed(1)},${(H - 2 - (v / max) * (H - 4)).toFixed(1)}`).join(' ');
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'spark', preserveAspectRatio: 'none' });
  if (values.length > 1) {
    root.append(
      svg('polygon', { points: `0,${H} ${pts} ${W},${H}`, fill: color, class: 'area' }),
      svg('polyline', { points: pts, stroke: color, class: 'series' }));
  } else {
    root.append(svg('line', { x1: 0, x2: W, y1: H - 2, y2: H - 2, class: 'series', stroke: color }));
  }
  return root;
}

// topology draws the leader in the middle and the other nodes around it,
// with a line for each peer link (dashed red when the leader has none to
// that node). nodes: [{id, color, leader, linked, gone, connections}].
export function topology(nodes, leader) {
  const W = 440;
  const cx = W / 2;
  const cy = 150;
  const center = nodes.find((n) => n.leader && !n.gone);
  const around = nodes.filter((n) => n !== center);
  const pos = new Map();
  if (center) pos.set(center.id, [cx, cy]);
  // The others on an ellipse around the middle, spread so that two sit
  // left and right of the leader, three make a triangle, and so on.
  const k = Math.max(around.length, 1);
  around.forEach((n, i) => {
    const a = -Math.PI / 2 + Math.PI / k + (2 * Math.PI * i) / k;
    pos.set(n.id, [cx + 150 * Math.cos(a), cy + 95 * Math.sin(a)]);
  });
  // As high as the drawing: from above the top circle to below the
  // lowest label.
  const ys = [...pos.values()].map(([, y]) => y);
  const top = Math.min(cy, ...ys) - 50;
  const bottom = Math.max(cy, ...ys) + 70;
  const root = svg('svg', {
    viewBox: `0 ${top} ${W} ${bottom - top}`, role: 'img', class: 'topology', 'aria-label': topologyLabel(nodes, leader),
  });
  if (center) {
    for (const n of around) {
      const [x, y] = pos.get(n.id);
      const ok = n.linked && !n.gone;
      root.append(svg('line', { x1: cx, y1: cy, x2: x, y2: y, class: ok ? 'link ok' : 'link broken', dataset: { node: n.id } }));
    }
  } else {
    root.append(svg('text', { x: cx, y: cy + 5, 'text-anchor': 'middle', class: 'no-leader', text: 'no leader' }));
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n.id);
    const g = svg('g', { class: `tnode${n.gone ? ' gone' : ''}${n.leader ? ' leader' : ''}`, dataset: { node: n.id } });
    const r = n.leader && !n.gone ? 34 : 27;
    if (n.leader && !n.gone) g.append(svg('circle', { cx: x, cy: y, r: r + 6, class: 'crown' }));
    g.append(
      svg('circle', { cx: x, cy: y, r, fill: n.gone ? 'none' : n.color, class: 'body', stroke: n.color }),
      svg('text', { x, y: y + 5, 'text-anchor': 'middle', class: 'id', text: n.id }),
      svg('text', { x, y: y + r + (n.leader && !n.gone ? 22 : 16), 'text-anchor': 'middle', class: 'sub', text: n.gone ? 'gone' : `${n.leader ? 'leader · ' : ''}${n.connections} conn` }));
    root.append(g);
  }
  return root;
}

function topologyLabel(nodes, leader) {
  const live = nodes.filter((n) => !n.gone);
  const parts = [`${live.length} live node${live.length === 1 ? '' : 's'}`];
  parts.push(leader ? `leader ${leader}` : 'no leader');
  const unlinked = live.filter((n) => !n.linked).map((n) => n.id);
  if (unlinked.length) parts.push(`not linked: ${unlinked.join(', ')}`);
  const gone = nodes.filter((n) => n.gone).map((n) => n.id);
  if (gone.length) parts.push(`gone: ${gone.join(', ')}`);
  return `Cluster topology: ${parts.join('; ')}`;
}
