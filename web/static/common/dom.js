// Small DOM helpers shared by the pages.
//
// Text from the server (names, messages, node ids) only ever reaches the
// page as text nodes or attribute values: nothing here parses HTML, so a
// message like "<img src=x onerror=...>" shows as those characters.

const SVG_NS = 'http://www.w3.org/2000/svg';

// el builds an HTML element. props: "class", "text" (textContent),
// "dataset" (an object), "on<event>" (a listener), "style" (an object of
// CSS properties, set through the CSSOM so that the Content-Security-Policy
// allows it), and anything else as an attribute (true: present, false,
// null or undefined: absent). Children are nodes or strings (as text).
export function el(tag, props = {}, ...children) {
  return build(document.createElement(tag), props, children);
}

// svg builds an SVG element, with the same props as el.
export function svg(tag, props = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

function build(node, props, children) {
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') {
      node.setAttribute('class', v);
    } else if (k === 'text') {
      node.textContent = String(v);
    } else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv);
    } else if (k === 'style') {
      for (const [sk, sv] of Object.entries(v)) node.style.setProperty(sk, String(sv));
    } else if (k.startsWith('on') && typeof v === 'function') {
      node.addEventListener(k.slice(2), v);
    } else {
      node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(node, children);
  return node;
}

// append adds children (nodes, strings, arrays of them) to node.
export function append(node, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// $ finds one element by selector (in root, default the document).
export function $(selector, root = document) {
  return root.querySelector(selector);
}

// setText replaces an element's content with text, only when it changed
// (so that screen readers are not told about non-changes).
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

// show hides or shows an element with the hidden attribute.
export function show(node, visible) {
  node.hidden = !visible;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

// shortTime formats a unix-ms time: the time of day for today, the date
// and time otherwise.
export function shortTime(ms) {
  const d = new Date(ms);
  const now = new Date();
  return d.toDateString() === now.toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
}

// fullTime formats a unix-ms time for tooltips.
export function fullTime(ms) {
  return fullFmt.format(new Date(ms));
}

// duration formats seconds as "3d 4h", "5h 2m", "4m 10s" or "12s".
export function duration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}
