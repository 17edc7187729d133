// Network: the topology picture and the discovery controls.
//
// The picture is this node in the middle, every known peer around it, and an edge for each live
// connection labelled with its RTT. It is the daemon's local view, built from the same peer map
// the table shows, so it moves with every event. A small force layout places new nodes; nodes
// can be dragged (mouse, touch) and moved with the arrow keys; the wheel or the buttons zoom.

import { api } from '../api.js';
import { $, svg, replace } from '../dom.js';
import { rtt, shortId } from '../format.js';

const BASE = { x: -300, y: -200, w: 600, h: 400 };
const MAX_NODES = 200; // beyond this the picture is noise; the table has them all
const pos = new Map(); // peer_id -> {x, y, vx, vy, fixed}
let zoom = 1;
let pan = { x: 0, y: 0 };
let drag = null;
let settleFrames = 0;
let lastModel = null;

function setViewBox() {
  const w = BASE.w / zoom;
  const h = BASE.h / zoom;
  $('topology').setAttribute('viewBox', `${-w / 2 + pan.x} ${-h / 2 + pan.y} ${w} ${h}`);
}

function place(id, i, n) {
  if (pos.has(id)) return pos.get(id);
  const a = (i / Math.max(1, n)) * Math.PI * 2;
  const p = { x: Math.cos(a) * 140, y: Math.sin(a) * 110, vx: 0, vy: 0, fixed: false };
  pos.set(id, p);
  return p;
}

/** A few steps of a plain force layout: repulsion between nodes, springs along edges, a pull home. */
function step(ids, local) {
  for (const a of ids) {
    const pa = pos.get(a);
    if (a === local || pa.fixed) continue;
    let fx = -pa.x * 0.01;
    let fy = -pa.y * 0.01;
    for (const b of ids) {
      if (a === b) continue;
      const pb = pos.get(b);
      const dx = pa.x - pb.x;
      const dy = pa.y - pb.y;
      const d2 = Math.max(100, dx * dx + dy * dy);
      fx += (dx / d2) * 900;
      fy += (dy / d2) * 900;
    }
    const d = Math.hypot(pa.x, pa.y) || 1;
    fx += ((140 - d) * pa.x) / d * 0.02;
    fy += ((140 - d) * pa.y) / d * 0.02;
    pa.vx = (pa.vx + fx) * 0.6;
    pa.vy = (pa.vy + fy) * 0.6;
    pa.x += pa.vx;
    pa.y += pa.vy;
  }
}

export function renderTopology(model) {
  lastModel = model;
  const s = model.status;
  const root = $('topology');
  if (!s) {
    replace(root);
    return;
  }
  const local = s.peer_id;
  const peers = [...model.peers.values()]
    .sort((a, b) => Number(b.connected) - Number(a.connected) || b.last_seen_ms - a.last_seen_ms)
    .slice(0, MAX_NODES);
  const ids = [local, ...peers.map((p) => p.peer_id)];
  pos.set(local, pos.get(local) || { x: 0, y: 0, vx: 0, vy: 0, fixed: true });
  peers.forEach((p, i) => place(p.peer_id, i, peers.length));
  for (const id of [...pos.keys()]) if (!ids.includes(id)) pos.delete(id);
  if (!drag) for (let i = 0; i < 3; i++) step(ids, local);
  const lp = pos.get(local);
  const edges = peers.map((p) => {
    const pp = pos.get(p.peer_id);
    const mx = (lp.x + pp.x) / 2;
    const my = (lp.y + pp.y) / 2;
    return svg('g', { class: 'edge-group' },
      svg('line', { class: `edge${p.connected ? '' : ' down'}`, x1: lp.x, y1: lp.y, x2: pp.x, y2: pp.y }),
      p.connected && p.last_rtt_us != null ? svg('text', { class: 'edge-label', x: mx, y: my - 4, 'text-anchor': 'middle' }, rtt(p.last_rtt_us)) : null);
  });
  const nodes = [
    node(local, true, true, 'this node'),
    ...peers.map((p) => node(p.peer_id, false, p.connected, p.agent)),
  ];
  replace(root, svg('g', {}, edges), svg('g', {}, nodes));
  if (settleFrames > 0 && !drag) {
    settleFrames -= 1;
    requestAnimationFrame(() => renderTopology(lastModel));
  }
}

function node(id, isLocal, connected, label) {
  const p = pos.get(id);
  const g = svg('g', {
    class: `node${isLocal ? ' local' : ''}${connected ? '' : ' offline'}`,
    transform: `translate(${p.x} ${p.y})`,
    tabindex: '0',
    role: 'img',
    'aria-label': `${isLocal ? 'This node' : 'Peer'} ${id}${connected ? '' : ' (offline)'}`,
    dataset: { peer: id },
  },
  svg('title', {}, `${id}${label ? `\n${label}` : ''}`),
  svg('circle', { r: isLocal ? 16 : 12 }),
  svg('text', { y: isLocal ? 32 : 27 }, isLocal ? 'this node' : shortId(id)));
  g.addEventListener('pointerdown', (e) => {
    e.stopPropagation();
    drag = { id, sx: e.clientX, sy: e.clientY, ox: p.x, oy: p.y };
    $('topology').setPointerCapture(e.pointerId);
  });
  g.addEventListener('keydown', (e) => {
    const d = { ArrowLeft: [-10, 0], ArrowRight: [10, 0], ArrowUp: [0, -10], ArrowDown: [0, 10] }[e.key];
    if (!d) return;
    e.preventDefault();
    p.x += d[0];
    p.y += d[1];
    p.fixed = true;
    renderTopology(lastModel);
    $('topology').querySelector(`[data-peer="${CSS.escape(id)}"]`)?.focus();
  });
  return g;
}

function scale() {
  const r = $('topology').getBoundingClientRect();
  return (BASE.w / zoom) / Math.max(1, r.width);
}

export function setupNetwork(model) {
  const root = $('topology');
  let panning = null;
  root.addEventListener('pointerdown', (e) => {
    panning = { sx: e.clientX, sy: e.clientY, px: pan.x, py: pan.y };
    root.setPointerCapture(e.pointerId);
  });
  root.addEventListener('pointermove', (e) => {
    const k = scale();
    if (drag) {
      const p = pos.get(drag.id);
      if (!p) return;
      p.x = drag.ox + (e.clientX - drag.sx) * k;
      p.y = drag.oy + (e.clientY - drag.sy) * k;
      p.fixed = true;
      renderTopology(model);
    } else if (panning) {
      pan = { x: panning.px - (e.clientX - panning.sx) * k, y: panning.py - (e.clientY - panning.sy) * k };
      setViewBox();
    }
  });
  const end = () => { drag = null; panning = null; };
  root.addEventListener('pointerup', end);
  root.addEventListener('pointercancel', end);
  root.addEventListener('wheel', (e) => {
    e.preventDefault();
    zoom = Math.min(4, Math.max(0.25, zoom * (e.deltaY < 0 ? 1.15 : 1 / 1.15)));
    setViewBox();
  }, { passive: false });
  $('zoom-in').addEventListener('click', () => { zoom = Math.min(4, zoom * 1.25); setViewBox(); });
  $('zoom-out').addEventListener('click', () => { zoom = Math.max(0.25, zoom / 1.25); setViewBox(); });
  $('zoom-reset').addEventListener('click', () => {
    zoom = 1;
    pan = { x: 0, y: 0 };
    for (const p of pos.values()) p.fixed = false;
    settleFrames = 60;
    setViewBox();
    renderTopology(model);
  });

  const status = $('discovery-status');
  const report = (p) => p.then(() => { status.className = 'form-status ok'; status.textContent = 'Done'; })
    .catch((e) => { status.className = 'form-status error'; status.textContent = e.message; });
  $('mdns-toggle').addEventListener('change', (e) => {
    report(api('/api/discovery', { method: 'POST', body: { mdns: e.target.checked } }).then((d) => {
      if (model.status) model.setStatus({ ...model.status, discovery: d });
    }));
  });
  $('dht-bootstrap').addEventListener('click', () => {
    status.className = 'form-status';
    status.textContent = 'Bootstrapping…';
    report(api('/api/discovery', { method: 'POST', body: { bootstrap_now: true } }));
  });
}

/** Layout settles over a few frames after peers come or go. */
export function nudgeTopology() {
  settleFrames = Math.max(settleFrames, 30);
}

export function renderDiscovery(model) {
  const d = model.status?.discovery;
  const toggle = $('mdns-toggle');
  toggle.checked = !!d?.mdns_enabled;
  $('dht-state').textContent = d ? `DHT ${d.dht_enabled ? 'on' : 'off'}` : '';
  $('dht-bootstrap').disabled = !model.live || !d?.dht_enabled;
}
