// Transfers: the send form (drag and drop anywhere on the page, or the file picker), and the
// outgoing and incoming lists with per-document progress, rate, ETA, state, receipts, and the
// accept / reject / cancel / download actions. File names and messages come from peers: text only.

import { api, upload, withTicket } from '../api.js';
import { $, el, keepFocus, replace } from '../dom.js';
import { bytes, dateTime, duration, rate, shortId } from '../format.js';

const FINAL = new Set(['delivered', 'failed', 'cancelled', 'received', 'rejected']);
/** Files staged for the next send. */
let staged = [];
let sending = false;

function peerLabel(model, id) {
  const p = model.peers.get(id);
  return p && p.agent ? `${shortId(id)} (${p.agent})` : shortId(id);
}

function docView(t, d) {
  const active = t.state === 'sending' || t.state === 'receiving';
  const share = t.bytes_total ? d.size / t.bytes_total : 0;
  // Per-document bytes come with each fetch; between fetches the transfer's rate is shared out.
  const docRate = active ? t.rate_bps * share : 0;
  const left = d.size - d.bytes_done;
  const eta = active && docRate > 0 && left > 0 ? duration((left / docRate) * 1000) : null;
  const pct = d.size ? Math.floor((d.bytes_done / d.size) * 100) : 100;
  const canDownload = t.direction === 'incoming' ? d.complete && t.state === 'received' : true;
  return el('li', { class: 'doc', dataset: { doc: d.id } },
    el('span', { class: 'name', text: d.file_name }),
    canDownload
      ? el('a', {
        class: 'download',
        href: `/api/transfers/${encodeURIComponent(t.id)}/documents/${encodeURIComponent(d.id)}`,
        download: '',
        dataset: { key: `dl-${t.id}-${d.id}` },
        'aria-label': `Download ${d.file_name}`,
      }, 'Download')
      : el('span', {}, ''),
    el('progress', { max: String(d.size || 1), value: String(d.size ? d.bytes_done : 1), 'aria-label': `${d.file_name}: ${pct}%` }),
    el('span', { class: 'meta' },
      `${bytes(d.bytes_done)} of ${bytes(d.size)} · ${pct}%`,
      active ? ` · ${rate(docRate)}` : '',
      eta ? ` · ${eta} left` : '',
      d.complete ? ' · verified SHA-256' : ''),
  );
}

function receiptView(t) {
  const r = t.receipt;
  if (!r) {
    if (t.direction === 'outgoing' && t.state === 'sent') return el('p', { class: 'receipt' }, 'Waiting for the receipt…');
    return null;
  }
  if (r.verified) {
    return el('p', { class: 'receipt ok', dataset: { receipt: 'verified' } },
      `✓ Verified receipt: signed by ${shortId(r.signer)} at ${dateTime(r.at_ms)}`);
  }
  return el('p', { class: 'receipt bad', dataset: { receipt: 'unverified' } },
    `✗ Receipt signature did not verify (claimed signer ${shortId(r.signer)})`);
}

function actions(model, t) {
  const live = model.live;
  const out = [];
  const status = $('send-status');
  const run = (b, fn) => async () => {
    b.disabled = true;
    try {
      model.setTransfer(await fn());
    } catch (e) {
      status.className = 'form-status error';
      status.textContent = e.message;
      b.disabled = false;
    }
  };
  const id = encodeURIComponent(t.id);
  if (t.direction === 'incoming' && t.state === 'pending') {
    const accept = el('button', { type: 'button', class: 'small primary needs-daemon', disabled: !live, dataset: { key: `accept-${t.id}` } }, 'Accept');
    accept.addEventListener('click', run(accept, () => api(`/api/transfers/${id}/accept`, { method: 'POST', body: {} })));
    const reject = el('button', { type: 'button', class: 'small danger needs-daemon', disabled: !live, dataset: { key: `reject-${t.id}` } }, 'Reject');
    reject.addEventListener('click', run(reject, () => api(`/api/transfers/${id}/reject`, { method: 'POST', body: { reason: 'rejected from the Peer Explorer' } })));
    out.push(accept, reject);
  }
  if (t.direction === 'outgoing' && !FINAL.has(t.state)) {
    const cancel = el('button', { type: 'button', class: 'small danger needs-daemon', disabled: !live, dataset: { key: `cancel-${t.id}` } }, 'Cancel');
    cancel.addEventListener('click', run(cancel, () => api(`/api/transfers/${id}/cancel`, { method: 'POST', body: {} })));
    out.push(cancel);
  }
  return out.length ? el('div', { class: 'actions' }, out) : null;
}

function transferView(model, t) {
  const who = t.direction === 'outgoing' ? `To ${peerLabel(model, t.peer_id)}` : `From ${peerLabel(model, t.peer_id)}`;
  const active = t.state === 'sending' || t.state === 'receiving';
  const left = t.bytes_total - t.bytes_done;
  return el('li', { class: 'transfer', dataset: { transfer: t.id, state: t.state } },
    el('header', {},
      el('span', { class: 'who', title: t.peer_id, text: who }),
      el('span', { class: 'state', dataset: { state: t.state } }, t.state),
      el('span', { class: 'when' }, dateTime(t.created_ms))),
    t.message ? el('p', { class: 'message', text: `“${t.message}”` }) : null,
    el('ul', { class: 'docs' }, t.documents.map((d) => docView(t, d))),
    active ? el('p', { class: 'meta live-value' }, `${bytes(t.bytes_done)} of ${bytes(t.bytes_total)} · ${rate(t.rate_bps)}`,
      t.rate_bps > 0 && left > 0 ? ` · ETA ${duration((left / t.rate_bps) * 1000)}` : '') : null,
    receiptView(t),
    t.error ? el('p', { class: 'error', text: t.error }) : null,
    t.chunks_resent ? el('p', { class: 'meta' }, `${t.chunks_resent} chunk(s) resent after a resume`) : null,
    actions(model, t),
  );
}

export function renderTransfers(model) {
  const all = [...model.transfers.values()].sort((a, b) => b.created_ms - a.created_ms);
  for (const dir of ['outgoing', 'incoming']) {
    const list = $(dir);
    const items = all.filter((t) => t.direction === dir);
    keepFocus(list, () => replace(list, items.map((t) => transferView(model, t))));
    $(`${dir}-empty`).hidden = items.length > 0;
  }
  const active = all.filter((t) => !FINAL.has(t.state)).length;
  $('transfers-count').textContent = `${all.length} total · ${active} active`;
}

/** The recipient choices: connected peers first, then the others the daemon knows. */
export function renderPeerChoices(model) {
  const select = $('send-peer');
  const chosen = select.value;
  const peers = [...model.peers.values()].filter((p) => !p.banned)
    .sort((a, b) => Number(b.connected) - Number(a.connected) || a.peer_id.localeCompare(b.peer_id));
  replace(select,
    el('option', { value: '' }, peers.length ? 'Choose a peer' : 'No peers known'),
    peers.map((p) => el('option', { value: p.peer_id, title: p.peer_id },
      `${shortId(p.peer_id)}${p.agent ? ` — ${p.agent}` : ''}${p.connected ? '' : ' (offline)'}`)));
  if (chosen && model.peers.has(chosen)) select.value = chosen;
  else if (!chosen && peers.length === 1) select.value = peers[0].peer_id;
}

function renderStaged() {
  replace($('staged'), staged.map((f, i) => el('li', {},
    el('span', { class: 'name', text: f.name }),
    el('span', { class: 'meta' }, bytes(f.size)),
    el('button', {
      type: 'button', class: 'small', 'aria-label': `Remove ${f.name}`,
      onclick: () => { staged.splice(i, 1); renderStaged(); },
    }, 'Remove'))));
}

function addFiles(files) {
  for (const f of files) if (!staged.some((s) => s.name === f.name && s.size === f.size)) staged.push(f);
  renderStaged();
  const status = $('send-status');
  status.className = 'form-status';
  status.textContent = staged.length ? `${staged.length} document(s) ready${$('send-peer').value ? '' : ': choose a peer'}` : '';
}

async function send(model) {
  const status = $('send-status');
  const peer = $('send-peer').value;
  if (!peer) {
    status.className = 'form-status error';
    status.textContent = 'Choose the peer to send to.';
    return;
  }
  if (!staged.length) {
    status.className = 'form-status error';
    status.textContent = 'Drop documents here or choose them first.';
    return;
  }
  // Field order matters to the server: each file's size comes right before it.
  const form = new FormData();
  form.append('peer', peer);
  const message = $('send-message').value.trim();
  if (message) form.append('message', message);
  for (const f of staged) {
    form.append('size', String(f.size));
    if (f.type) form.append('mime', f.type);
    form.append('file', f, f.name);
  }
  sending = true;
  $('send-button').disabled = true;
  status.className = 'form-status';
  status.textContent = 'Uploading…';
  try {
    const t = await upload('/api/transfers', form, (sent, total) => {
      status.textContent = `Uploading… ${Math.floor((sent / total) * 100)}%`;
    });
    model.setTransfer(t);
    staged = [];
    renderStaged();
    $('send-message').value = '';
    status.className = 'form-status ok';
    status.textContent = `Transfer ${shortId(t.id)} created`;
  } catch (e) {
    status.className = 'form-status error';
    status.textContent = e.message;
  } finally {
    sending = false;
    $('send-button').disabled = !model.live;
  }
}

function hasFiles(e) {
  return e.dataTransfer && [...e.dataTransfer.types].includes('Files');
}

/**
 * A download link cannot carry the session header: on click, trade the session for a
 * single-use ticket and follow the link with it (the browser streams the file to disk).
 */
async function download(link) {
  try {
    const href = await withTicket(link.getAttribute('href'));
    const once = el('a', { href, download: '', hidden: true });
    document.body.append(once);
    once.click();
    once.remove();
  } catch (e) {
    console.warn('download', e);
  }
}

export function setupTransfers(model) {
  $('transfers').addEventListener('click', (e) => {
    const link = e.target instanceof Element ? e.target.closest('a.download') : null;
    if (!link) return;
    e.preventDefault();
    download(link);
  });
  const zone = $('drop-zone');
  const input = $('file-input');
  const overlay = $('page-drop');
  zone.addEventListener('click', () => input.click());
  zone.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      input.click();
    }
  });
  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = '';
  });
  // A drop anywhere on the page stages the files (the browser would otherwise open them).
  let depth = 0;
  document.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    depth += 1;
    overlay.hidden = false;
    zone.classList.add('over');
  });
  document.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) { overlay.hidden = true; zone.classList.remove('over'); }
  });
  document.addEventListener('dragover', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  document.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    zone.classList.remove('over');
    addFiles(e.dataTransfer.files);
    zone.scrollIntoView({ block: 'nearest' });
  });
  $('send-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (!sending) send(model);
  });
}
