// The header: connection state at a glance, this node's id (copyable), listen addresses, uptime;
// and the stale banner shown while the page is not live.

import { $, el, keepFocus, replace } from '../dom.js';
import { ago, duration } from '../format.js';

export function renderConn(model) {
  const c = model.conn;
  const box = $('conn');
  box.dataset.state = c.state;
  let text;
  switch (c.state) {
    case 'live': text = 'Live'; break;
    case 'connecting': text = 'Connecting…'; break;
    case 'unavailable': text = 'Transport unavailable'; break;
    case 'signed-out': text = 'Signed out'; break;
    case 'reconnecting': {
      const next = Math.max(0, c.nextRetryAt - Date.now());
      text = `Reconnecting (attempt ${c.attempt}, last contact ${ago(c.lastContact)}`
        + `${next > 900 ? `, next try in ${duration(next)}` : ''})`;
      break;
    }
    default: text = c.state;
  }
  $('conn-text').textContent = text;
  $('retry-now').hidden = c.state !== 'reconnecting';
  $('sign-out').hidden = c.state === 'signed-out';
  document.body.classList.toggle('stale', !model.live && model.seq !== null);
  const banner = $('stale');
  if (!model.live && model.status && c.staleSince) {
    banner.hidden = false;
    const what = c.state === 'unavailable' ? 'The transport daemon is unavailable' : 'The connection to the web server is down';
    banner.textContent = `${what}: showing the last known state, from ${ago(c.staleSince)}. Actions are disabled until it is back.`;
  } else {
    banner.hidden = true;
  }
  $('signin').hidden = c.state !== 'signed-out';
  $('main').hidden = c.state === 'signed-out';
  // Everything that needs the daemon waits for it.
  for (const b of document.querySelectorAll('.needs-daemon')) b.disabled = !model.live;
}

function copyButton(text) {
  const b = el('button', { type: 'button', class: 'small', 'aria-label': 'Copy peer id', dataset: { key: 'copy-id' } }, 'Copy');
  b.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = 'Copied';
    } catch {
      // No clipboard permission: select the text so the person can copy it by hand.
      const range = document.createRange();
      range.selectNodeContents(document.getElementById('own-peer-id'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      b.textContent = 'Selected';
    }
    setTimeout(() => { b.textContent = 'Copy'; }, 1500);
  });
  return b;
}

export function renderNode(model) {
  const s = model.status;
  const node = $('node');
  if (!s) {
    replace(node);
    return;
  }
  const uptime = s.uptime_ms + (model.live ? Date.now() - model.statusAt : 0);
  keepFocus(node, () => replace(node,
    el('div', {},
      el('dt', {}, 'Peer id'),
      el('dd', {}, el('code', { id: 'own-peer-id', class: 'peer-id', text: s.peer_id }), copyButton(s.peer_id))),
    el('div', {},
      el('dt', {}, 'Listening on'),
      el('dd', {}, el('ul', { class: 'addr-list', id: 'listen-addrs' },
        s.listen_addrs.length ? s.listen_addrs.map((a) => el('li', { text: a })) : el('li', {}, 'nothing')))),
    el('div', {},
      el('dt', {}, 'Uptime'),
      el('dd', { class: 'live-value', id: 'uptime' }, duration(uptime))),
    el('div', {},
      el('dt', {}, 'Peers'),
      el('dd', { class: 'live-value' }, `${s.connected_peers} connected · ${s.known_peers} known`)),
    el('div', {},
      el('dt', {}, 'Version'),
      el('dd', {}, `${s.version}${s.store.health === 'healthy' ? '' : ' · store unhealthy'}`)),
  ));
}

/** Counts shown in the header follow the peer map between status refreshes. */
export function syncCounts(model) {
  if (!model.status) return;
  let connected = 0;
  for (const p of model.peers.values()) if (p.connected) connected += 1;
  model.status.connected_peers = connected;
  model.status.known_peers = model.peers.size;
}
