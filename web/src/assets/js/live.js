// The live connection to /ws: snapshot, then seq-numbered events. It reconnects by itself
// (1 s apart in development, forever; 3 s doubling to a cap in production), resumes with
// `?since=<last seq>&instance=<instance>` so nothing is missed or repeated (each attempt with a
// fresh single-use ticket: a browser cannot put a header on an upgrade), and takes a fresh
// snapshot when the server says `resync`. Heartbeat: a ping every 30 s; a socket silent for
// longer than two heartbeats is treated as dead and replaced.
//
// States (model.conn.state): connecting (first attempt), live (socket open, daemon online),
// unavailable (socket open, daemon offline: transport unavailable), reconnecting (socket down,
// waiting for the next attempt), signed-out (the server refused our session; a socket closed
// with 1008 is one whose session was revoked or expired).

import { api, ApiError, withTicket } from './api.js';

export class Live {
  /**
   * @param {import('./model.js').Model} model
   * @param {{mode: string, reconnect_ms: number, reconnect_max_ms: number, heartbeat_ms: number}} config
   * @param {{onSnapshot: Function, onResumed: Function, onEvent: Function}} hooks
   */
  constructor(model, config, hooks) {
    this.model = model;
    this.config = config;
    this.hooks = hooks;
    this.ws = null;
    this.retryTimer = 0;
    this.heartbeatTimer = 0;
    this.attempt = 0;
    this.everOpened = false;
    this.connecting = false;
  }

  start() {
    this.connect();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.config.heartbeat_ms);
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const m = this.model;
    let q = '';
    if (m.seq !== null) {
      q = `?since=${encodeURIComponent(m.seq)}`;
      if (m.instance) q += `&instance=${encodeURIComponent(m.instance)}`;
    }
    return `${proto}//${location.host}/ws${q}`;
  }

  async connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    if (this.connecting) return;
    const resuming = this.model.seq !== null;
    let url;
    this.connecting = true;
    try {
      url = await withTicket(this.url());
    } catch (e) {
      this.connecting = false;
      if (e instanceof ApiError && e.status === 401) {
        this.model.setConn({ state: 'signed-out', nextRetryAt: 0 });
        return;
      }
      this.scheduleRetry(`cannot get a WebSocket ticket: ${e.message}`);
      return;
    }
    this.connecting = false;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.scheduleRetry(`cannot open a WebSocket: ${e.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.everOpened = true;
      const wasAttempt = this.attempt;
      this.attempt = 0;
      this.model.conn.lastContact = Date.now();
      if (resuming) {
        // The server sends the missed events (or `resync` + snapshot); the socket being open
        // with a daemon behind it is what "live" means until it says otherwise.
        this.model.setConn({ state: 'live', attempt: 0, nextRetryAt: 0 });
        this.model.addLog({
          kind: 'connection', type: 'resumed',
          text: `reconnected after ${wasAttempt} attempt(s); resuming after seq ${this.model.seq}`,
        });
        this.hooks.onResumed();
      }
    };
    ws.onmessage = (e) => {
      if (ws !== this.ws) return;
      this.model.conn.lastContact = Date.now();
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        this.model.addLog({ kind: 'connection', type: 'error', text: 'a message that is not JSON' });
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.ws = null;
      const why = e.code === 1012 ? 'the web server restarted (1012)'
        : e.code === 1001 ? 'the web server stopped (1001)'
          : e.code === 1008 ? 'the session ended (1008)' : `closed (${e.code})`;
      if (this.everOpened && this.attempt === 0) {
        this.model.addLog({ kind: 'connection', type: 'disconnected', text: why });
      }
      this.scheduleRetry(why);
    };
  }

  onMessage(msg) {
    const m = this.model;
    switch (msg.type) {
      case 'snapshot':
        m.reset(msg);
        m.setConn({ state: 'live', attempt: 0, nextRetryAt: 0 });
        m.addLog({ kind: 'connection', type: 'snapshot', text: `snapshot at seq ${msg.seq}: ${msg.peers.length} peer(s)` });
        this.hooks.onSnapshot();
        break;
      case 'resync':
        // A snapshot follows; until then what we show is from before.
        m.addLog({ kind: 'connection', type: 'resync', text: `resync (${msg.reason}); taking a fresh snapshot` });
        break;
      case 'transport:status':
        if (msg.status === 'offline') {
          m.setConn({ state: 'unavailable' });
          m.addLog({ kind: 'connection', type: 'transport', text: 'the transport daemon is unavailable' });
        } else {
          m.setConn({ state: 'live' });
          m.addLog({ kind: 'connection', type: 'transport', text: 'the transport daemon is back' });
        }
        break;
      case 'pong':
        break;
      case 'error':
        m.addLog({ kind: 'connection', type: 'error', text: String(msg.error) });
        break;
      default:
        if (typeof msg.seq === 'number' && m.apply(msg)) this.hooks.onEvent(msg);
    }
  }

  delay() {
    const { mode, reconnect_ms, reconnect_max_ms } = this.config;
    if (mode === 'development') return reconnect_ms;
    return Math.min(reconnect_max_ms, reconnect_ms * 2 ** Math.max(0, this.attempt - 1));
  }

  async scheduleRetry(why) {
    this.attempt += 1;
    const wait = this.delay();
    this.model.setConn({ state: 'reconnecting', attempt: this.attempt, nextRetryAt: Date.now() + wait, why });
    // A refused upgrade looks like any close; ask the REST API whether the session is gone.
    if (this.attempt === 1 || this.attempt % 5 === 0 || why.includes('1008')) {
      try {
        await api('/api/info');
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          this.model.setConn({ state: 'signed-out', nextRetryAt: 0 });
          return;
        }
      }
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  /** "Retry now" from the header. */
  retryNow() {
    if (this.ws || this.connecting) return;
    this.connect();
  }

  heartbeat() {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.model.conn.lastContact > 2.5 * this.config.heartbeat_ms) {
      // Silent for over two heartbeats: the connection is dead even if TCP has not noticed.
      this.ws = null;
      ws.close();
      this.model.addLog({ kind: 'connection', type: 'disconnected', text: 'no answer to heartbeats' });
      this.scheduleRetry('no answer to heartbeats');
      return;
    }
    ws.send(JSON.stringify({ type: 'ping' }));
  }
}
