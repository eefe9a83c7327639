// A scripted fake nano server for the nano.js tests: the behaviours a real server rarely shows
// on demand (split frames, kicks, silence, refusals, resume answers).
import assert from "node:assert/strict";
import { WebSocketServer } from "ws";

import { PacketDecoder, encodePacket, encodeMessage, decodeMessage, MessageType } from "../../examples/web/nano.js";

export const enc = (v) => new TextEncoder().encode(typeof v === "string" ? v : JSON.stringify(v));
export const dec = (b) => JSON.parse(new TextDecoder().decode(b));

/** The `sys` a fake handshake answers with unless told otherwise. */
export const DEFAULT_SYS = Object.freeze({ heartbeat: 30, dict: {}, serializer: "json" });

/**
 * Starts a fake server; `script(peer, n)` runs for the n-th connection (0, 1, ...).
 * `peer.next()` resolves with the next packet from the client, `peer.message(codes)` with the
 * next Data packet decoded (heartbeats skipped), `peer.send(bytes)` sends one WS frame,
 * `peer.packet(type, body)`, `peer.push(route, value)`, `peer.respond(id, value)` send
 * packets, and `peer.handshake(sys)` reads the client's handshake (returned, and kept in
 * `peer.clientHandshake` and the server's `handshakes[n]`), answers with `sys` and reads the
 * ack. The server counts `connections`; `close()` rethrows the first error of a script.
 */
export async function fakeServer(script) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.once("listening", r));
  const errors = [];
  const handshakes = [];
  let connections = 0;
  wss.on("connection", (sock) => {
    const n = connections++;
    const decoder = new PacketDecoder();
    const queue = [];
    const waiters = [];
    sock.on("message", (data) => {
      for (const p of decoder.push(new Uint8Array(data))) {
        const w = waiters.shift();
        if (w) w(p);
        else queue.push(p);
      }
    });
    const peer = {
      sock,
      next: (timeout = 3000) =>
        new Promise((resolve, reject) => {
          if (queue.length) return resolve(queue.shift());
          const t = setTimeout(() => reject(new Error(`fake server, connection ${n}: no packet from the client`)), timeout);
          waiters.push((p) => {
            clearTimeout(t);
            resolve(p);
          });
        }),
      async message(codes) {
        for (;;) {
          const p = await peer.next();
          if (p.type === 4) return decodeMessage(p.body, codes);
          assert.equal(p.type, 3, `a data packet or a heartbeat, got type ${p.type}`);
        }
      },
      send: (bytes) => sock.send(bytes),
      packet: (type, body) => sock.send(encodePacket(type, body)),
      push: (route, value) => peer.packet(4, encodeMessage({ type: MessageType.Push, route, payload: enc(value) })),
      respond: (id, value) => peer.packet(4, encodeMessage({ type: MessageType.Response, id, payload: enc(value) })),
      async handshake(sys = DEFAULT_SYS) {
        const hs = await peer.next();
        assert.equal(hs.type, 1, "a handshake first");
        peer.clientHandshake = dec(hs.body);
        handshakes[n] = peer.clientHandshake;
        peer.packet(1, enc({ code: 200, sys }));
        const ack = await peer.next();
        assert.equal(ack.type, 2, "handshake ack");
        assert.equal(ack.body.length, 0);
        return peer.clientHandshake;
      },
    };
    Promise.resolve(script(peer, n)).catch((err) => errors.push(err));
  });
  const { port } = wss.address();
  return {
    url: `ws://127.0.0.1:${port}/nano`,
    errors,
    handshakes,
    get connections() {
      return connections;
    },
    async close() {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
      if (errors.length) throw errors[0];
    },
  };
}
