// The event log: the live stream as it arrives (daemon events with their seq, and the page's own
// connection notes), filterable by kind and text. Rows are appended as they come rather than
// re-rendered, so scrolling and reading are not disturbed; a filter change re-renders.

import { $, el, replace } from '../dom.js';
import { clock } from '../format.js';

/** Rows shown at most (the model keeps the same bound). */
const MAX_ROWS = 1000;
let shown = 0; // how many model.log entries have been considered for display
let lastFirst = null; // the first entry at the last render, to notice entries falling off

function filters() {
  return { kind: $('log-kind').value, text: $('log-filter').value.trim().toLowerCase() };
}

function visible(entry, f) {
  if (f.kind && entry.kind !== f.kind) return false;
  if (f.text && !`${entry.type} ${entry.text}`.toLowerCase().includes(f.text)) return false;
  return true;
}

function row(e) {
  return el('li', { class: e.seq == null ? 'meta' : '', dataset: { seq: e.seq ?? '', kind: e.kind, type: e.type } },
    el('span', { class: 'seq' }, e.seq == null ? '·' : String(e.seq)),
    el('span', { class: 'time' }, clock(e.at)),
    el('span', { class: 'type' }, e.type),
    el('span', { class: 'text', text: e.text }));
}

export function renderLog(model, full = false) {
  if ($('log-pause').checked && !full) return;
  const list = $('log-list');
  const f = filters();
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 30;
  if (full || model.log[0] !== lastFirst || shown > model.log.length) {
    replace(list, model.log.filter((e) => visible(e, f)).slice(-MAX_ROWS).map(row));
  } else {
    for (const e of model.log.slice(shown)) if (visible(e, f)) list.appendChild(row(e));
    while (list.children.length > MAX_ROWS) list.firstChild.remove();
  }
  shown = model.log.length;
  lastFirst = model.log[0] ?? null;
  const daemonEvents = model.log.filter((e) => e.seq != null).length;
  $('log-count').textContent = `${daemonEvents} event(s)${model.seq != null ? ` · last seq ${model.seq}` : ''}${model.gaps ? ` · ${model.gaps} gap(s)` : ''}`;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

export function setupLog(model) {
  for (const id of ['log-kind', 'log-filter', 'log-pause']) {
    $(id).addEventListener(id === 'log-filter' ? 'input' : 'change', () => renderLog(model, true));
  }
}
