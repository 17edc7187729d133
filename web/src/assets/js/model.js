// What the page knows: the daemon's status, peers, transfers, the event log and the state of
// the live connection. Views never change it; they subscribe and re-render the parts named in
// each change (batched into one animation frame).

/** Most log entries kept; older ones fall off the top. */
export const MAX_LOG = 1000;

export class Model {
  constructor() {
    this.status = null;
    /** peer_id -> PeerInfo (the daemon's shape, patched by events). */
    this.peers = new Map();
    /** id -> TransferInfo plus `rate_bps` and `progress_at` from progress events. */
    this.transfers = new Map();
    this.log = [];
    /** The newest daemon event seq applied, and the daemon instance it belongs to. */
    this.seq = null;
    this.snapshotSeq = null;
    this.instance = null;
    /** Gaps seen in the seq numbering inside one instance (should stay 0). */
    this.gaps = 0;
    /** When the status was taken, for a ticking uptime. */
    this.statusAt = 0;
    this.conn = {
      state: 'connecting', // connecting | live | reconnecting | unavailable | signed-out
      attempt: 0,
      lastContact: 0,
      nextRetryAt: 0,
      staleSince: 0,
    };
    this.mode = 'production';
    this.listeners = [];
    this.dirty = new Set();
    this.frame = 0;
  }

  /** `fn(parts)` is called with the set of changed parts: status, peers, transfers, log, conn. */
  subscribe(fn) {
    this.listeners.push(fn);
  }

  changed(...parts) {
    for (const p of parts) this.dirty.add(p);
    if (this.frame) return;
    const flush = () => {
      this.frame = 0;
      const parts = this.dirty;
      this.dirty = new Set();
      for (const fn of this.listeners) fn(parts);
    };
    // Background tabs get no animation frames; a timer keeps them current anyway.
    this.frame = document.hidden ? setTimeout(flush, 250) : requestAnimationFrame(flush);
  }

  get live() {
    return this.conn.state === 'live';
  }

  setConn(patch) {
    const wasLive = this.live;
    Object.assign(this.conn, patch);
    if (wasLive && !this.live && !this.conn.staleSince) this.conn.staleSince = Date.now();
    if (this.live) this.conn.staleSince = 0;
    this.changed('conn');
  }

  /** A fresh snapshot replaces everything it covers. */
  reset(snapshot) {
    this.status = snapshot.status;
    this.statusAt = Date.now();
    this.peers = new Map(snapshot.peers.map((p) => [p.peer_id, p]));
    this.seq = snapshot.seq;
    /** Where the current numbering began for this page: events follow from here without a gap. */
    this.snapshotSeq = snapshot.seq;
    this.instance = snapshot.instance;
    this.changed('status', 'peers');
  }

  setStatus(status) {
    this.status = status;
    this.statusAt = Date.now();
    this.changed('status');
  }

  setPeer(p) {
    this.peers.set(p.peer_id, p);
    this.changed('peers');
  }

  setTransfers(list) {
    const old = this.transfers;
    this.transfers = new Map(list.map((t) => [t.id, { ...t, rate_bps: old.get(t.id)?.rate_bps ?? 0 }]));
    this.changed('transfers');
  }

  setTransfer(t) {
    const old = this.transfers.get(t.id);
    this.transfers.set(t.id, { ...t, rate_bps: old?.rate_bps ?? 0, progress_at: old?.progress_at ?? 0 });
    this.changed('transfers');
  }

  /** A peer entry to patch, made up if the daemon has not listed it yet. */
  peer(id, atMs) {
    let p = this.peers.get(id);
    if (!p) {
      p = {
        peer_id: id, connected: false, addrs: [], protocols: [], agent: null, first_seen_ms: atMs,
        last_seen_ms: atMs, connect_count: 0, last_rtt_us: null, trust: 'unknown', pinned: false, banned: false,
      };
      this.peers.set(id, p);
    }
    return p;
  }

  addAddr(p, addr, source) {
    if (!p.addrs.some((a) => a.addr === addr)) p.addrs.push({ addr, source, last_success_ms: null });
  }

  /**
   * Apply one daemon event (`{seq, at_ms, type, ...}`). Returns false when its seq was already
   * applied (a repeat), true otherwise.
   */
  apply(ev) {
    if (this.seq !== null && ev.seq <= this.seq) return false;
    if (this.seq !== null && ev.seq !== this.seq + 1) {
      this.gaps += 1;
      this.addLog({ kind: 'connection', type: 'gap', text: `events ${this.seq + 1}–${ev.seq - 1} were missed` });
    }
    this.seq = ev.seq;
    const at = ev.at_ms;
    switch (ev.type) {
      case 'peer_discovered': {
        const p = this.peer(ev.peer_id, at);
        for (const a of ev.addrs || []) this.addAddr(p, a, ev.source);
        this.changed('peers');
        break;
      }
      case 'peer_connected': {
        const p = this.peer(ev.peer_id, at);
        p.connected = true;
        p.last_seen_ms = at;
        p.connect_count += 1;
        this.addAddr(p, ev.addr, 'connection');
        this.changed('peers');
        break;
      }
      case 'peer_disconnected': {
        const p = this.peer(ev.peer_id, at);
        p.connected = false;
        p.last_seen_ms = at;
        this.changed('peers');
        break;
      }
      case 'peer_identified': {
        const p = this.peer(ev.peer_id, at);
        p.agent = ev.agent;
        p.protocols = ev.protocols || [];
        this.changed('peers');
        break;
      }
      case 'peer_rtt': {
        const p = this.peer(ev.peer_id, at);
        p.last_rtt_us = ev.rtt_us;
        p.last_seen_ms = at;
        this.changed('peers');
        break;
      }
      case 'peer_updated': {
        const p = this.peer(ev.peer_id, at);
        p.pinned = ev.pinned;
        p.banned = ev.banned;
        this.changed('peers');
        break;
      }
      case 'listen_addr_added':
        if (this.status && !this.status.listen_addrs.includes(ev.addr)) this.status.listen_addrs.push(ev.addr);
        this.changed('status');
        break;
      case 'listen_addr_removed':
        if (this.status) this.status.listen_addrs = this.status.listen_addrs.filter((a) => a !== ev.addr);
        this.changed('status');
        break;
      case 'discovery_changed':
        if (this.status) this.status.discovery = ev.state;
        this.changed('status');
        break;
      case 'transfer_updated': {
        const t = this.transfers.get(ev.id);
        if (t) {
          t.state = ev.state;
          if (ev.state !== 'sending' && ev.state !== 'receiving') t.rate_bps = 0;
        }
        this.changed('transfers');
        break;
      }
      case 'transfer_progress': {
        const t = this.transfers.get(ev.id);
        if (t) {
          t.bytes_done = ev.bytes_done;
          t.bytes_total = ev.bytes_total;
          t.rate_bps = ev.rate_bps;
          t.progress_at = at;
        }
        this.changed('transfers');
        break;
      }
      default:
        break;
    }
    this.addLog({ seq: ev.seq, at, kind: kindOf(ev.type), type: ev.type, text: describe(ev) });
    return true;
  }

  /** Entries of the page's own (no seq): connection changes, resyncs, errors. */
  addLog(entry) {
    this.log.push({ at: Date.now(), ...entry });
    if (this.log.length > MAX_LOG) this.log.splice(0, this.log.length - MAX_LOG);
    this.changed('log');
  }
}

export function kindOf(type) {
  if (type.startsWith('peer_')) return 'peer';
  if (type.startsWith('transfer_')) return 'transfer';
  return 'network';
}

/** One line for the log. Peer-supplied strings stay plain text: the log renders with textContent. */
export function describe(ev) {
  switch (ev.type) {
    case 'peer_discovered': return `${ev.peer_id} via ${ev.source}: ${(ev.addrs || []).join(', ')}`;
    case 'peer_connected': return `${ev.peer_id} ${ev.direction} over ${ev.addr}`;
    case 'peer_disconnected': return `${ev.peer_id}${ev.reason ? ` (${ev.reason})` : ''}`;
    case 'peer_identified': return `${ev.peer_id} is ${ev.agent}`;
    case 'peer_rtt': return `${ev.peer_id} ${(ev.rtt_us / 1000).toFixed(1)} ms`;
    case 'peer_updated': return `${ev.peer_id} pinned=${ev.pinned} banned=${ev.banned}`;
    case 'listen_addr_added':
    case 'listen_addr_removed': return ev.addr;
    case 'discovery_changed': return `mDNS ${ev.state.mdns_enabled ? 'on' : 'off'}, DHT ${ev.state.dht_enabled ? 'on' : 'off'}`;
    case 'transfer_updated': return `${ev.id} ${ev.direction} ${ev.state} (${ev.peer_id})`;
    case 'transfer_progress': return `${ev.id} ${ev.bytes_done}/${ev.bytes_total} bytes`;
    default: return JSON.stringify(ev);
  }
}
