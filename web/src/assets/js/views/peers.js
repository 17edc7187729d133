// The peers table: live rows, search, sortable columns, connect / disconnect / pin, and the
// "add a peer by multiaddr" form. Agent strings and addresses come from peers: text only.

import { api } from '../api.js';
import { $, el, keepFocus, replace } from '../dom.js';
import { ago, rtt, shortId } from '../format.js';

const COLUMNS = [
  { key: 'peer', label: 'Peer', value: (p) => p.agent || p.peer_id },
  { key: 'status', label: 'Status', value: (p) => (p.connected ? 0 : 1) },
  { key: 'rtt', label: 'RTT', value: (p) => p.last_rtt_us ?? Number.MAX_SAFE_INTEGER },
  { key: 'addrs', label: 'Addresses', value: (p) => p.addrs.length },
  { key: 'source', label: 'Found via', value: (p) => sources(p).join(',') },
  { key: 'seen', label: 'Last seen', value: (p) => -p.last_seen_ms },
  { key: 'pinned', label: 'Pinned', value: (p) => (p.pinned ? 0 : 1) },
  { key: 'trust', label: 'Trust', value: (p) => ({ trusted: 0, known: 1, unknown: 2 })[p.trust] ?? 3 },
  { key: 'actions', label: 'Actions' },
];

const view = { sort: 'status', dir: 1, query: '' };

function sources(p) {
  return [...new Set(p.addrs.map((a) => a.source))];
}

function matches(p, q) {
  if (!q) return true;
  const hay = [p.peer_id, p.agent || '', ...p.addrs.map((a) => a.addr), p.trust].join(' ').toLowerCase();
  return q.split(/\s+/).every((w) => hay.includes(w));
}

async function act(button, status, fn) {
  button.disabled = true;
  try {
    await fn();
    status.textContent = '';
  } catch (e) {
    status.textContent = e.message;
    status.className = 'form-status error';
  } finally {
    button.disabled = false;
  }
}

function header(model) {
  const row = document.querySelector('#peer-table thead tr');
  replace(row, COLUMNS.map((c) => {
    if (!c.value) return el('th', { scope: 'col' }, c.label);
    const sorted = view.sort === c.key;
    const th = el('th', { scope: 'col', 'aria-sort': sorted ? (view.dir > 0 ? 'ascending' : 'descending') : 'none' });
    th.appendChild(el('button', {
      type: 'button', dataset: { key: `sort-${c.key}` },
      onclick: () => {
        if (view.sort === c.key) view.dir = -view.dir;
        else { view.sort = c.key; view.dir = 1; }
        renderPeers(model);
      },
    }, c.label));
    return th;
  }));
}

function row(model, p) {
  const status = $('add-peer-status');
  const id = p.peer_id;
  const enc = encodeURIComponent(id);
  const live = model.live;
  const connectBtn = p.connected
    ? el('button', { type: 'button', class: 'small needs-daemon', disabled: !live, dataset: { key: `disc-${id}` } }, 'Disconnect')
    : el('button', { type: 'button', class: 'small needs-daemon', disabled: !live, dataset: { key: `conn-${id}` } }, 'Connect');
  connectBtn.addEventListener('click', () => act(connectBtn, status, () => (p.connected
    ? api(`/api/peers/${enc}/disconnect`, { method: 'POST', body: {} })
    : api('/api/peers/connect', { method: 'POST', body: { target: id } }))));
  const pinBtn = el('button', { type: 'button', class: 'small needs-daemon', disabled: !live, 'aria-pressed': String(p.pinned), dataset: { key: `pin-${id}` } },
    p.pinned ? 'Unpin' : 'Pin');
  pinBtn.addEventListener('click', () => act(pinBtn, status, async () => {
    model.setPeer(await api(`/api/peers/${enc}/pin`, { method: 'POST', body: { pinned: !p.pinned } }));
  }));
  // Each cell's content sits in one box, so the narrow layout (label | value) keeps it together.
  const cell = (label, cls, ...children) => el('td', { 'data-label': label, class: cls }, el('div', { class: 'cell' }, children));
  return el('tr', { dataset: { peer: id }, class: p.connected ? 'connected' : 'offline' },
    cell('Peer', 'peer-cell',
      el('code', { class: 'peer-id', title: id, text: shortId(id) }),
      el('div', { class: 'agent', text: p.agent || 'agent unknown' })),
    cell('Status', '',
      el('span', { class: `chip ${p.connected ? 'ok' : ''}` }, p.connected ? 'connected' : 'offline'),
      p.banned ? el('span', { class: 'chip bad' }, 'banned') : null),
    cell('RTT', 'live-value', rtt(p.last_rtt_us)),
    cell('Addresses', '',
      el('ul', { class: 'addr-list' }, p.addrs.slice(0, 4).map((a) => el('li', { title: `via ${a.source}`, text: a.addr })),
        p.addrs.length > 4 ? el('li', {}, `+${p.addrs.length - 4} more`) : null)),
    cell('Found via', '', sources(p).map((s) => el('span', { class: 'chip' }, s))),
    cell('Last seen', 'live-value', p.connected ? 'now' : ago(p.last_seen_ms)),
    cell('Pinned', '', p.pinned ? 'yes' : 'no'),
    cell('Trust', '', el('span', { class: `chip ${p.trust === 'trusted' ? 'ok' : ''}` }, p.trust)),
    cell('Actions', 'actions', connectBtn, ' ', pinBtn),
  );
}

export function renderPeers(model) {
  const table = $('peer-table');
  keepFocus(table, () => {
    header(model);
    const col = COLUMNS.find((c) => c.key === view.sort) || COLUMNS[1];
    const q = view.query.trim().toLowerCase();
    const list = [...model.peers.values()].filter((p) => matches(p, q));
    list.sort((a, b) => {
      const x = col.value(a);
      const y = col.value(b);
      const d = x < y ? -1 : x > y ? 1 : a.peer_id.localeCompare(b.peer_id);
      return d * view.dir;
    });
    replace(table.tBodies[0], list.map((p) => row(model, p)));
    const total = model.peers.size;
    const connected = [...model.peers.values()].filter((p) => p.connected).length;
    $('peers-count').textContent = `${connected} connected · ${total} known${list.length !== total ? ` · ${list.length} shown` : ''}`;
    $('peers-empty').hidden = list.length > 0;
  });
}

export function setupPeers(model) {
  $('peer-search').addEventListener('input', (e) => {
    view.query = e.target.value;
    renderPeers(model);
  });
  $('add-peer').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('add-peer-addr');
    const status = $('add-peer-status');
    const target = input.value.trim();
    if (!target) return;
    status.className = 'form-status';
    status.textContent = 'Dialling…';
    try {
      const out = await api('/api/peers/connect', { method: 'POST', body: { target } });
      status.className = 'form-status ok';
      status.textContent = out.already_connected ? `Already connected to ${shortId(out.peer_id)}` : `Connected to ${shortId(out.peer_id)}`;
      input.value = '';
    } catch (err) {
      status.className = 'form-status error';
      status.textContent = err.message;
    }
  });
}
