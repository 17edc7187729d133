// Numbers and times as people read them.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
}

export function rate(bps) {
  return bps ? `${bytes(bps)}/s` : '—';
}

/** "3 h 12 min", "42 s": the two largest units. */
export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  let s = Math.max(0, Math.round(ms / 1000));
  const parts = [];
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) parts.push(`${d} d`);
  if (h) parts.push(`${h} h`);
  if (m) parts.push(`${m} min`);
  if (s || parts.length === 0) parts.push(`${s} s`);
  return parts.slice(0, 2).join(' ');
}

export function ago(atMs, now = Date.now()) {
  if (!atMs) return 'never';
  const d = now - atMs;
  if (d < 1500) return 'just now';
  return `${duration(d)} ago`;
}

export function clock(atMs) {
  if (!atMs) return '—';
  return new Date(atMs).toLocaleTimeString([], { hour12: false });
}

export function dateTime(atMs) {
  if (!atMs) return '—';
  return new Date(atMs).toLocaleString([], { hour12: false });
}

export function rtt(us) {
  if (us === null || us === undefined) return '—';
  return us < 10000 ? `${(us / 1000).toFixed(1)} ms` : `${Math.round(us / 1000)} ms`;
}

/** `12D3KooWAbCd…x9Yz`: enough to tell peers apart; the full id is in the title and copy button. */
export function shortId(id) {
  if (!id) return '';
  return id.length > 18 ? `${id.slice(0, 10)}…${id.slice(-6)}` : id;
}
