// What every js-libp2p test node shares: the Node 20 polyfill js-libp2p 2.x needs, flags, JSON
// lines out, and the loop that reads one JSON command per line on stdin and answers it.
// Import it before libp2p (the nodes load libp2p with dynamic imports after this module ran).

// Node 20 lacks Promise.withResolvers, which parts of js-libp2p 2.x call.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

import { createInterface } from 'node:readline';

export function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Announces the node, then answers each stdin line `{"id":N,"cmd":...}` with
// `{"id":N,"ok":true,...result}` or `{"id":N,"ok":false,"error":...}`. The process stops on
// `{"cmd":"stop"}`, SIGTERM/SIGINT, or when stdin closes, so a parent that dies never leaves
// it behind.
export function serveCommands(node, handle) {
  let stopping = false;
  async function stop(code) {
    if (stopping) return;
    stopping = true;
    await node.stop();
    process.exit(code);
  }
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));

  emit({
    event: 'listening',
    peer_id: node.peerId.toString(),
    addrs: node.getMultiaddrs().map((a) => a.toString()),
  });

  const lines = createInterface({ input: process.stdin });
  lines.on('line', async (line) => {
    if (line.trim() === '') return;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      emit({ id: null, ok: false, error: `not JSON: ${e.message}` });
      return;
    }
    try {
      const result = await handle(cmd);
      emit({ id: cmd.id ?? null, ok: true, ...result });
      if (cmd.cmd === 'stop') await stop(0);
    } catch (e) {
      emit({ id: cmd.id ?? null, ok: false, error: String(e?.message ?? e) });
    }
  });
  lines.on('close', () => stop(0));
}
