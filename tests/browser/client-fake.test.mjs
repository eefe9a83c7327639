// NanoClient (examples/web/nano.js) against a scripted fake server: the behaviours a real
// server rarely shows on demand (split frames, kicks, silence, refusals, error responses).
import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";

import { NanoClient, NanoError, encodePacket, encodeMessage, decodeMessage, MessageType } from "../../examples/web/nano.js";
import { dec, enc, fakeServer } from "./fake-server.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const connect = (url, opts = {}) => NanoClient.connect(url, { WebSocket, timeout: 2000, ...opts });

test("handshake: sends sys.type/version and user, acks, exposes dict, serializer and heartbeat", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake({ heartbeat: 7, dict: { "room.join": 1, onMessage: 2 }, serializer: "json" });
  });
  const c = await connect(srv.url, { user: { name: "ann" } });
  try {
    assert.equal(c.connected, true);
    assert.equal(c.heartbeatInterval, 7000);
    assert.equal(c.serializer, "json");
    assert.deepEqual([...c.dict], [["room.join", 1], ["onMessage", 2]]);
    assert.equal(c.handshake.code, 200);
  } finally {
    c.close();
    await srv.close();
  }
});

test("handshake user data reaches the server", async () => {
  let seen;
  const srv = await fakeServer(async (peer) => {
    await peer.handshake();
    seen = peer.clientHandshake;
  });
  const c = await connect(srv.url, { user: { token: "t0k" } });
  await sleep(20);
  c.close();
  await srv.close();
  assert.equal(seen.sys.type, "js-websocket");
  assert.equal(typeof seen.sys.version, "string");
  assert.deepEqual(seen.user, { token: "t0k" });
});

test("requests: compressed route when in the dict, response resolves; error response rejects with code/msg/metadata", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake({ heartbeat: 30, dict: { "room.join": 5 } });
    const p1 = await peer.next();
    const m1 = decodeMessage(p1.body, new Map([[5, "room.join"]]));
    assert.equal(m1.type, MessageType.Request);
    assert.equal(m1.routeCode, 5, "the route went compressed");
    assert.deepEqual(dec(m1.payload), { x: 1 });
    const p2 = await peer.next();
    const m2 = decodeMessage(p2.body);
    assert.equal(m2.route, "room.nope", "not in the dict: a plain route");
    // answer out of order, both in one frame
    const err = encodePacket(4, encodeMessage({ type: MessageType.Response, id: m2.id, error: true, payload: enc({ code: "NANO-404", msg: "route not found: room.nope", metadata: { a: "b" } }) }));
    const ok = encodePacket(4, encodeMessage({ type: MessageType.Response, id: m1.id, payload: enc({ code: 0, result: "success" }) }));
    peer.send(Buffer.concat([err, ok]));
  });
  const c = await connect(srv.url);
  try {
    const r1 = c.request("room.join", { x: 1 });
    const r2 = c.request("room.nope", {});
    await assert.rejects(r2, (e) => e instanceof NanoError && e.code === "NANO-404" && e.msg === "route not found: room.nope" && e.metadata.a === "b");
    assert.deepEqual(await r1, { code: 0, result: "success" });
  } finally {
    c.close();
    await srv.close();
  }
});

test("pushes: packets split across frames and several per frame, compressed and plain routes; on/off/once/waitFor", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake({ heartbeat: 30, dict: { onMessage: 3 } });
    const pushes = [];
    for (let i = 0; i < 5; i++) {
      pushes.push(encodePacket(4, encodeMessage({ type: MessageType.Push, route: "onMessage", dict: new Map([["onMessage", 3]]), payload: enc({ n: i }) })));
    }
    pushes.push(encodePacket(4, encodeMessage({ type: MessageType.Push, route: "raw", payload: Uint8Array.of(0xff, 0x00) })));
    pushes.push(encodePacket(3));
    pushes.push(encodePacket(4, encodeMessage({ type: MessageType.Push, route: "onDone", payload: enc({ done: true }) })));
    const all = Buffer.concat(pushes);
    // odd cuts: mid-header, mid-body, several packets at once
    const cuts = [0, 2, 5, 17, 18, 40, 41, 90, all.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      peer.send(all.subarray(cuts[i], cuts[i + 1]));
      await sleep(5);
    }
  });
  const c = await connect(srv.url);
  try {
    const got = [];
    const raw = [];
    let onceCount = 0;
    c.on("onMessage", (m) => got.push(m.n));
    const offMe = c.on("onMessage", () => got.push("removed"));
    offMe();
    c.once("onMessage", () => onceCount++);
    c.on("raw", (b) => raw.push(b));
    await c.waitFor("onDone", { timeout: 2000 });
    assert.deepEqual(got, [0, 1, 2, 3, 4]);
    assert.equal(onceCount, 1);
    assert.equal(raw.length, 1);
    assert.ok(raw[0] instanceof Uint8Array, "non-JSON payloads come as bytes");
    assert.deepEqual([...raw[0]], [0xff, 0x00]);
  } finally {
    c.close();
    await srv.close();
  }
});

test("notify and notifyRaw: no id, payload verbatim; returns false once closed", async () => {
  const seen = [];
  const srv = await fakeServer(async (peer) => {
    await peer.handshake();
    for (let i = 0; i < 2; i++) seen.push(decodeMessage((await peer.next()).body));
  });
  const c = await connect(srv.url);
  assert.equal(c.notify("room.message", { name: "a", content: "b" }), true);
  assert.equal(c.notifyRaw("World.Update", enc('{"id":1,"x":2}')), true);
  await sleep(100);
  c.close();
  assert.equal(c.notify("room.message", {}), false);
  await assert.rejects(c.request("x.y", {}), (e) => e.code === "NANO-410");
  await srv.close();
  assert.equal(seen[0].type, MessageType.Notify);
  assert.equal(seen[0].id, undefined);
  assert.deepEqual(dec(seen[0].payload), { name: "a", content: "b" });
  assert.equal(new TextDecoder().decode(seen[1].payload), '{"id":1,"x":2}');
});

test("a request with no response rejects with NANO-408 after its timeout", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake();
  });
  const c = await connect(srv.url);
  try {
    const t0 = Date.now();
    await assert.rejects(c.request("room.slow", {}, { timeout: 150 }), (e) => e instanceof NanoError && e.code === "NANO-408");
    assert.ok(Date.now() - t0 >= 140);
  } finally {
    c.close();
    await srv.close();
  }
});

test("kick with a reason: onkick, kick and close events, pending requests rejected", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake();
    await peer.next(); // the request
    peer.packet(5, enc({ reason: "kicked by server" }));
  });
  const c = await connect(srv.url);
  const kicks = [];
  const closes = [];
  let kickEvent;
  c.onkick = (r) => kicks.push(r);
  c.onclose = (info) => closes.push(info);
  c.addEventListener("kick", (ev) => (kickEvent = ev.reason));
  await assert.rejects(c.request("room.join", {}), (e) => e.code === "NANO-410");
  assert.deepEqual(kicks, ["kicked by server"]);
  assert.equal(kickEvent, "kicked by server");
  assert.equal(closes.length, 1);
  assert.equal(closes[0].kicked, true);
  assert.equal(c.connected, false);
  await srv.close();
});

test("kick with an empty body (nano style) still kicks", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake();
    peer.packet(5);
  });
  const c = await connect(srv.url);
  const closed = new Promise((r) => (c.onclose = r));
  const reason = await new Promise((r) => (c.onkick = r));
  assert.equal(reason, "kicked");
  assert.equal((await closed).kicked, true);
  await srv.close();
});

test("heartbeats: the client sends them every interval; a silent server is dropped after 2 × interval", async () => {
  let beats = 0;
  const srv = await fakeServer(async (peer) => {
    await peer.handshake({ heartbeat: 0.1 });
    for (;;) {
      const p = await peer.next(2000).catch(() => null);
      if (!p) return;
      if (p.type === 3) beats++;
    }
  });
  const c = await connect(srv.url);
  const t0 = Date.now();
  const info = await new Promise((r) => (c.onclose = r));
  const elapsed = Date.now() - t0;
  assert.match(info.reason, /heartbeat timeout/);
  assert.equal(info.kicked, false);
  assert.ok(elapsed >= 190 && elapsed < 1500, `closed after ${elapsed} ms`);
  assert.ok(beats >= 1, `sent ${beats} heartbeats`);
  await srv.close();
});

test("server heartbeats keep the connection alive", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake({ heartbeat: 0.1 });
    for (let i = 0; i < 8; i++) {
      peer.packet(3);
      await sleep(80);
    }
  });
  const c = await connect(srv.url);
  await sleep(600);
  assert.equal(c.connected, true);
  c.close();
  await srv.close();
});

test("a refused handshake rejects connect with the server's code", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.next();
    peer.packet(1, enc({ code: 501 }));
  });
  await assert.rejects(connect(srv.url), (e) => e instanceof NanoError && e.code === "501");
  await srv.close();
});

test("no handshake answer: connect rejects with NANO-408 after the timeout", async () => {
  const srv = await fakeServer(async () => {});
  const t0 = Date.now();
  await assert.rejects(connect(srv.url, { timeout: 200 }), (e) => e.code === "NANO-408");
  assert.ok(Date.now() - t0 < 1500);
  await srv.close();
});

test("nothing listening: connect rejects with NANO-410", async () => {
  const srv = await fakeServer(async () => {});
  const url = srv.url;
  await srv.close();
  await assert.rejects(connect(url), (e) => e.code === "NANO-410");
});

test("protocol errors from the server close the connection with an error event", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake();
    peer.send(Uint8Array.of(9, 0, 0, 0)); // bad packet type
  });
  const c = await connect(srv.url);
  const closed = new Promise((r) => (c.onclose = r));
  const err = await new Promise((r) => c.addEventListener("error", (ev) => r(ev.error)));
  assert.equal(err.code, "NANO-400");
  await closed;
  assert.equal(c.connected, false);
  await srv.close();
});

test("a compressed payload (flag 0x10) is treated as an error, not misread", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake();
    peer.packet(4, Uint8Array.of(0x06 | 0x10, 3, 0x61, 0x62, 0x63, 1, 2, 3));
  });
  const c = await connect(srv.url);
  let pushed = false;
  c.on("abc", () => (pushed = true));
  const err = await new Promise((r) => (c.onerror = r));
  assert.equal(err.code, "NANO-415");
  assert.equal(pushed, false);
  await srv.close();
});

test("a protobuf server: payloads travel as bytes both ways; objects are refused", async () => {
  let got;
  const srv = await fakeServer(async (peer) => {
    await peer.handshake({ heartbeat: 30, serializer: "protobuf" });
    got = decodeMessage((await peer.next()).body);
    peer.packet(4, encodeMessage({ type: MessageType.Response, id: got.id, payload: Uint8Array.of(0x08, 0x96, 0x01) }));
    peer.packet(4, encodeMessage({ type: MessageType.Push, route: "pong", payload: enc("1") }));
  });
  const c = await connect(srv.url);
  try {
    assert.equal(c.serializer, "protobuf");
    const pong = c.waitFor("pong");
    const res = await c.request("Test.Ping", Uint8Array.of(0x0a, 0x01, 0x41));
    assert.deepEqual([...got.payload], [0x0a, 0x01, 0x41]);
    assert.ok(res instanceof Uint8Array);
    assert.deepEqual([...res], [0x08, 0x96, 0x01]);
    const p = await pong;
    assert.ok(p instanceof Uint8Array, "bytes that happen to be JSON stay bytes");
    assert.throws(() => c.notify("Test.Ping", { a: 1 }), (e) => e.code === "NANO-415");
    await assert.rejects(c.request("Test.Ping", { a: 1 }), (e) => e.code === "NANO-415");
  } finally {
    c.close();
    await srv.close();
  }
});
