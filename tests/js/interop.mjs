// A js-libp2p 2.x node driven over stdin/stdout, so the Rust suites can check that
// firma-transportd speaks the same TCP + Noise + Yamux + identify + ping as upstream Firma-Sign.
//
// Usage: node interop.mjs [--listen MULTIADDR] [--agent NAME/VERSION]
// Writes JSON lines on stdout:
//   {"event":"listening","peer_id":...,"addrs":[...]}           once, when ready
//   {"event":"connection_open","peer_id":...,"direction":...,"remote_addr":...}
//   {"event":"identify","peer_id":...,"agent":...,"protocol_version":...,"protocols":[...]}
//   {"id":N,"ok":true|false,...}                                 the answer to command N
// Reads JSON lines on stdin, one command each:
//   {"id":1,"cmd":"dial","addr":"/ip4/.../p2p/..."}
//   {"id":2,"cmd":"ping","addr":"..."}       or {"id":2,"cmd":"ping","peer_id":"..."}
//   {"id":3,"cmd":"peer","peer_id":"..."}    what identify told us about a peer
//   {"id":4,"cmd":"stop"}
// The process stops when stdin closes, so a parent that dies never leaves it behind.

import { arg, emit, serveCommands } from './driver.mjs';

const { createLibp2p } = await import('libp2p');
const { tcp } = await import('@libp2p/tcp');
const { noise } = await import('@chainsafe/libp2p-noise');
const { yamux } = await import('@chainsafe/libp2p-yamux');
const { identify } = await import('@libp2p/identify');
const { ping } = await import('@libp2p/ping');
const { multiaddr } = await import('@multiformats/multiaddr');
const { peerIdFromString } = await import('@libp2p/peer-id');

const listen = arg('--listen', '/ip4/127.0.0.1/tcp/0');
const [agentName, agentVersion] = arg('--agent', 'firma-js-interop/1.0.0').split('/');

const node = await createLibp2p({
  addresses: { listen: [listen] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  nodeInfo: { name: agentName, version: agentVersion ?? '0.0.0', userAgent: `${agentName}/${agentVersion}` },
  services: {
    identify: identify(),
    ping: ping(),
  },
});

node.addEventListener('connection:open', (evt) => {
  const c = evt.detail;
  emit({
    event: 'connection_open',
    peer_id: c.remotePeer.toString(),
    direction: c.direction,
    remote_addr: c.remoteAddr.toString(),
  });
});

node.addEventListener('peer:identify', (evt) => {
  const r = evt.detail;
  emit({
    event: 'identify',
    peer_id: r.peerId.toString(),
    agent: r.agentVersion ?? null,
    protocol_version: r.protocolVersion ?? null,
    protocols: r.protocols ?? [],
  });
});

async function target(cmd) {
  if (cmd.addr) return multiaddr(cmd.addr);
  if (cmd.peer_id) return peerIdFromString(cmd.peer_id);
  throw new Error('command needs "addr" or "peer_id"');
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case 'dial': {
      const conn = await node.dial(await target(cmd), { signal: AbortSignal.timeout(10_000) });
      return { peer_id: conn.remotePeer.toString(), remote_addr: conn.remoteAddr.toString() };
    }
    case 'ping': {
      const rtt = await node.services.ping.ping(await target(cmd), { signal: AbortSignal.timeout(10_000) });
      return { rtt_ms: rtt };
    }
    case 'peer': {
      const peer = await node.peerStore.get(peerIdFromString(cmd.peer_id));
      const agent = peer.metadata.get('AgentVersion');
      return {
        peer_id: cmd.peer_id,
        agent: agent ? new TextDecoder().decode(agent) : null,
        protocols: peer.protocols,
        connected: node.getConnections(peerIdFromString(cmd.peer_id)).length > 0,
      };
    }
    case 'stop':
      return {};
    default:
      throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
  }
}

serveCommands(node, handle);
