// An upstream-style Firma-Sign peer: js-libp2p 2.x that speaks ONLY the legacy
// /firma-sign/transfer/1.0.0 (one JSON object with base64 documents per stream, as upstream's
// P2PTransport does), driven over stdin/stdout like interop.mjs, so the Rust suites can check
// that firma-transportd receives from and sends to upstream peers.
//
// Usage: node v1-peer.mjs [--listen MULTIADDR] [--agent NAME/VERSION]
// Writes JSON lines on stdout:
//   {"event":"listening","peer_id":...,"addrs":[...]}                   once, when ready
//   {"event":"identify","peer_id":...,"agent":...,"protocols":[...]}
//   {"event":"v1_received","peer_id":<remote>,"transfer_id":...,"sender":{...},"options":{...},
//    "recipients":[...],"documents":[{"id","file_name","mime_type","size","hash","data_len","data_sha256"}]}
//   {"id":N,"ok":true|false,...}                                         the answer to command N
// Reads JSON lines on stdin, one command each:
//   {"id":1,"cmd":"dial","addr":"/ip4/.../p2p/..."}
//   {"id":2,"cmd":"send_v1","addr"|"peer_id":...,"transfer":{...upstream JSON...}}
//        answers {"response": <the receiver's JSON answer>}; a document may give "text" instead
//        of "data", which is then base64-encoded here as upstream would have done
//   {"id":5,"cmd":"received"}        every v1 transfer received so far (as in the events)
//   {"id":3,"cmd":"send_raw_v1","addr"|"peer_id":...,"text":"..."}   any bytes, for hostile tests
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
const { createHash } = await import('node:crypto');

const PROTOCOL_V1 = '/firma-sign/transfer/1.0.0';
// Upstream caps transfers at 500 MB; a test never needs more than this.
const MAX_MESSAGE = 64 * 1024 * 1024;

const listen = arg('--listen', '/ip4/127.0.0.1/tcp/0');
const [agentName, agentVersion] = arg('--agent', 'firma-sign-upstream/1.0.0').split('/');

const node = await createLibp2p({
  addresses: { listen: [listen] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  nodeInfo: { name: agentName, version: agentVersion ?? '0.0.0', userAgent: `${agentName}/${agentVersion}` },
  services: { identify: identify(), ping: ping() },
});

node.addEventListener('peer:identify', (evt) => {
  const r = evt.detail;
  emit({
    event: 'identify',
    peer_id: r.peerId.toString(),
    agent: r.agentVersion ?? null,
    protocols: r.protocols ?? [],
  });
});

// What arrived, for the `received` command (bounded: a test sends a handful).
const received = [];

async function readAll(source, limit) {
  const parts = [];
  let total = 0;
  for await (const chunk of source) {
    const bytes = chunk.subarray();
    total += bytes.length;
    if (total > limit) throw new Error(`message over ${limit} bytes`);
    parts.push(bytes);
  }
  return Buffer.concat(parts);
}

// Receiving, as upstream does: read to the end of the stream, parse, answer, close.
await node.handle(
  PROTOCOL_V1,
  async ({ stream, connection }) => {
    let answer;
    try {
      const msg = JSON.parse((await readAll(stream.source, MAX_MESSAGE)).toString('utf8'));
      const documents = (msg.documents ?? []).map((d) => {
        const data = Buffer.from(d.data ?? '', 'base64');
        return {
          id: d.id,
          file_name: d.fileName,
          mime_type: d.mimeType,
          size: d.size ?? d.fileSize,
          hash: d.hash ?? null,
          data_len: data.length,
          data_sha256: createHash('sha256').update(data).digest('hex'),
        };
      });
      const got = {
        peer_id: connection.remotePeer.toString(),
        transfer_id: msg.transferId,
        sender: msg.sender ?? null,
        options: msg.options ?? null,
        recipients: msg.recipients ?? null,
        documents,
      };
      if (received.length < 100) received.push(got);
      emit({ event: 'v1_received', ...got });
      answer = { success: true };
    } catch (e) {
      answer = { success: false, error: String(e?.message ?? e) };
    }
    await stream.sink([new TextEncoder().encode(JSON.stringify(answer))]);
  },
  { runOnLimitedConnection: false },
);

async function target(cmd) {
  if (cmd.addr) return multiaddr(cmd.addr);
  if (cmd.peer_id) return peerIdFromString(cmd.peer_id);
  throw new Error('command needs "addr" or "peer_id"');
}

// Sending, as upstream does: one JSON object, close the write side, read the answer to the end.
async function sendV1(cmd, text) {
  const stream = await node.dialProtocol(await target(cmd), PROTOCOL_V1, { signal: AbortSignal.timeout(30_000) });
  await stream.sink([new TextEncoder().encode(text)]);
  const answer = (await readAll(stream.source, 1024 * 1024)).toString('utf8');
  try {
    return { response: JSON.parse(answer) };
  } catch {
    return { response: null, raw: answer };
  }
}

async function handle(cmd) {
  switch (cmd.cmd) {
    case 'dial': {
      const conn = await node.dial(await target(cmd), { signal: AbortSignal.timeout(10_000) });
      return { peer_id: conn.remotePeer.toString() };
    }
    case 'send_v1': {
      const transfer = { ...cmd.transfer };
      transfer.documents = (transfer.documents ?? []).map((d) => {
        if (d.text === undefined) return d;
        const { text, ...rest } = d;
        return { ...rest, data: Buffer.from(text, 'utf8').toString('base64') };
      });
      return sendV1(cmd, JSON.stringify(transfer));
    }
    case 'received':
      return { transfers: received };
    case 'send_raw_v1':
      return sendV1(cmd, cmd.text);
    case 'stop':
      return {};
    default:
      throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
  }
}

serveCommands(node, handle);
