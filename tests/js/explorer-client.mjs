// A Peer Explorer client that behaves like upstream Firma-Sign's `useWebSocketConnection` hook
// (packages/frontend/src/components/PeerExplorer/hooks): the WHATWG WebSocket a browser has,
// JSON messages dispatched by `type`, a `{"type":"ping"}` heartbeat, reconnection only after a
// close that was not clean, and `close(1000, 'Manual disconnect')` to leave. Written for the
// suites, not taken from upstream.
//
// It connects to --url (with --origin and --token as the headers a page on another origin and
// its credential would give), runs one scripted session, and prints one JSON line per thing it
// saw, ending with {"event":"closed","code":..,"wasClean":..}. Needs Node 22, or Node 20 started
// with --experimental-websocket.

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
};
const url = arg('--url');
const origin = arg('--origin');
const token = arg('--token');
const group = arg('--group', 'signers');
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

if (typeof WebSocket !== 'function') {
  emit({ event: 'fatal', error: 'no global WebSocket (Node 22, or Node 20 with --experimental-websocket)' });
  process.exit(2);
}

// Give up on a server that never answers, so the parent never waits forever.
const watchdog = setTimeout(() => {
  emit({ event: 'fatal', error: 'timed out' });
  process.exit(3);
}, 20000);

const headers = {};
if (origin) headers.origin = origin;
if (token) headers.authorization = `Bearer ${token}`;

// The hook's own steps, each answered by the server before the next.
const steps = [
  { send: { type: 'ping' }, until: 'pong' },
  { send: { type: 'join_group', groupId: group }, until: 'joined_group' },
  { send: { type: 'message', groupId: group, content: 'hello from node' }, until: 'message:sent' },
  { send: { type: 'leave_group', groupId: group }, until: 'left_group' },
];

const ws = new WebSocket(url, { headers });
let step = -1;
let status = null;

function next() {
  step += 1;
  if (step < steps.length) {
    ws.send(JSON.stringify(steps[step].send));
  } else {
    // What the hook's disconnect() does.
    ws.close(1000, 'Manual disconnect');
  }
}

let opened = false;
ws.onopen = () => {
  opened = true;
  emit({ event: 'open' });
};
ws.onerror = (e) => {
  emit({ event: 'error', error: e.message || String(e) });
  // A refused upgrade: Node's WebSocket may not follow with a close event; the hook would retry.
  if (!opened) {
    clearTimeout(watchdog);
    emit({ event: 'refused' });
    process.exit(0);
  }
};
ws.onmessage = (m) => {
  let data;
  try {
    data = JSON.parse(m.data);
  } catch {
    emit({ event: 'unparsed', data: String(m.data) });
    return;
  }
  switch (data.type) {
    case 'connected':
      emit({ event: 'connected', clientId: data.clientId });
      break;
    case 'transport:status':
      // The hook hands this to TransportStatusBar, which reads `status` and details.connections.
      emit({ event: 'transport', status: data.status, connections: data.details?.connections });
      if (status === null) {
        status = data.status;
        next();
      }
      break;
    case 'error':
      emit({ event: 'server-error', error: data.error });
      break;
    default:
      emit({ event: 'message', type: data.type, data });
      if (step >= 0 && step < steps.length && data.type === steps[step].until) next();
  }
};
ws.onclose = (e) => {
  clearTimeout(watchdog);
  emit({ event: 'closed', code: e.code, reason: e.reason, wasClean: e.wasClean });
  // The hook would reconnect here when !wasClean; the suite wants to see that it would not.
  process.exit(0);
};
