// Peer Explorer entry point: reads the page config, signs in when opened from a login link
// (`/#login=<nonce>`), checks the session, opens the live connection, and re-renders each view
// when the part of the model it shows changes.

import { api, ApiError, signIn, signOut } from './api.js';
import { $ } from './dom.js';
import { Live } from './live.js';
import { Model } from './model.js';
import { renderConn, renderNode, syncCounts } from './views/header.js';
import { renderLog, setupLog } from './views/log.js';
import { nudgeTopology, renderDiscovery, renderTopology, setupNetwork } from './views/network.js';
import { renderPeers, setupPeers } from './views/peers.js';
import { renderPeerChoices, renderTransfers, setupTransfers } from './views/transfers.js';

const DEFAULT_CONFIG = { mode: 'production', reconnect_ms: 3000, reconnect_max_ms: 30000, heartbeat_ms: 30000 };
/** Detail fetches after an event wait this long, so a burst of events costs one request. */
const REFRESH_DELAY_MS = 250;
/** Progress events come several times a second; per-document numbers are refetched at most this often. */
const PROGRESS_REFRESH_MS = 1000;

const model = new Model();
// For the browser tests and for people poking at the page from the console.
window.explorer = model;

const timers = new Map();
function later(key, delay, fn) {
  if (timers.has(key)) return;
  timers.set(key, setTimeout(async () => {
    timers.delete(key);
    try {
      await fn();
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 503) console.warn(key, e);
    }
  }, delay));
}

async function refreshTransfers() {
  model.setTransfers(await api('/api/transfers'));
}

async function refreshStatus() {
  model.setStatus(await api('/api/status'));
}

function onEvent(ev) {
  switch (ev.type) {
    case 'transfer_updated':
      later(`t-${ev.id}`, REFRESH_DELAY_MS, async () => model.setTransfer(await api(`/api/transfers/${encodeURIComponent(ev.id)}`)));
      break;
    case 'transfer_progress':
      later(`t-${ev.id}`, PROGRESS_REFRESH_MS, async () => model.setTransfer(await api(`/api/transfers/${encodeURIComponent(ev.id)}`)));
      break;
    case 'peer_connected':
    case 'peer_disconnected':
    case 'peer_discovered':
    case 'peer_identified':
      // Events carry the change; the daemon's record has the rest (trust, sources, counts).
      later(`p-${ev.peer_id}`, REFRESH_DELAY_MS, async () => model.setPeer(await api(`/api/peers/${encodeURIComponent(ev.peer_id)}`)));
      nudgeTopology();
      break;
    default:
      break;
  }
}

function render(parts) {
  if (parts.has('peers')) {
    syncCounts(model);
    renderPeers(model);
    renderPeerChoices(model);
  }
  if (parts.has('status') || parts.has('peers') || parts.has('conn')) renderNode(model);
  if (parts.has('status') || parts.has('peers')) renderTopology(model);
  if (parts.has('transfers') || parts.has('peers') || parts.has('conn')) renderTransfers(model);
  if (parts.has('log')) renderLog(model);
  if (parts.has('conn')) {
    renderPeers(model);
    renderConn(model);
  }
  if (parts.has('status') || parts.has('conn')) renderDiscovery(model);
}

async function loadConfig() {
  try {
    const r = await fetch('/assets/config.json', { credentials: 'same-origin' });
    if (r.ok) return { ...DEFAULT_CONFIG, ...(await r.json()) };
  } catch {
    // Keep the defaults: production pacing is the careful choice.
  }
  return DEFAULT_CONFIG;
}

async function main() {
  const config = await loadConfig();
  model.mode = config.mode;
  model.subscribe(render);
  setupPeers(model);
  setupTransfers(model);
  setupNetwork(model);
  setupLog(model);
  $('sign-out').addEventListener('click', async () => {
    try {
      await signOut();
    } catch (e) {
      console.warn('sign out', e);
    }
    model.setConn({ state: 'signed-out', nextRetryAt: 0 });
  });
  const login = /^#login=([0-9a-fA-F]{64})$/.exec(location.hash);
  if (login) {
    // The nonce is spent either way: keep it out of the address bar and the history.
    history.replaceState(null, '', location.pathname + location.search);
    try {
      await signIn(login[1]);
    } catch (e) {
      $('signin-error').textContent = e.message;
      $('signin-error').hidden = false;
      model.setConn({ state: 'signed-out' });
      return;
    }
  }
  try {
    await api('/api/info');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      model.setConn({ state: 'signed-out' });
      return;
    }
  }
  const live = new Live(model, config, {
    onSnapshot: () => {
      nudgeTopology();
      later('transfers', 0, refreshTransfers);
    },
    onResumed: () => {
      later('status', 0, refreshStatus);
      later('transfers', 0, refreshTransfers);
    },
    onEvent,
  });
  $('retry-now').addEventListener('click', () => live.retryNow());
  live.start();
  // Clocks: uptime, "last contact", "stale since", "last seen".
  let ticks = 0;
  setInterval(() => {
    ticks += 1;
    renderConn(model);
    renderDiscovery(model);
    renderNode(model);
    if (ticks % 5 === 0) renderPeers(model);
  }, 1000);
}

main();
