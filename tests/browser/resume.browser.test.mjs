// Session resume in nano.js: a dropped connection reconnects by itself and carries on in the
// same session.
//
// - Against a scripted fake server: what goes on the wire (the handshake's sys.resume, the
//   requests sent again, the queue), a new session instead of the old one, kicks, close(),
//   a grace that runs out, a server without resume.
// - Against the chat example (NANO_CHAT_URL, started by run.sh; its sessions resume) through a
//   TCP proxy written here, which can drop bytes one way or both and cut every socket it
//   carries: a node client and the chat page in chromium lose their socket while others talk,
//   and get every message once, in order, with nobody told they left.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { WebSocket } from "ws";

import { NanoClient, NanoError, MessageType } from "../../examples/web/nano.js";
import { pageUrl, wsUrlOf, token, withBrowser } from "./helpers.mjs";
import { DEFAULT_SYS, dec, enc, fakeServer } from "./fake-server.mjs";


/** Resolves with the next `name` event's detail from `target`; rejects after `timeout` ms. */
function nextEvent(target, name, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      target.removeEventListener(name, on);
      reject(new Error(`no "${name}" event within ${timeout} ms`));
    }, timeout);
    const on = (ev) => {
      clearTimeout(timer);
      target.removeEventListener(name, on);
      resolve(ev.detail);
    };
    target.addEventListener(name, on);
  });
}

/** Waits until `cond()` is true, checking every 5 ms; rejects with `what` after `timeout` ms. */
async function until(cond, what, timeout = 10000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const fakeConnect = (url, opts = {}) => NanoClient.connect(url, { WebSocket, timeout: 2000, reconnectDelay: 20, ...opts });

test("fake server: a dropped socket reconnects with {token, received}; the replay is read; requests over last_request go again, then the queue", async () => {
  const seen = []; // what the second connection got from the client, in order
  const srv = await fakeServer(async (peer, n) => {
    if (n === 0) {
      const hs = await peer.handshake({ ...DEFAULT_SYS, dict: { "a.b": 1 }, resume: { token: "tok-1", grace: 5, resumed: false } });
      assert.equal(hs.sys.resume, undefined, "a first connect carries no resume");
      peer.push("p", { n: 1 });
      peer.push("p", { n: 2 });
      const r1 = await peer.message(new Map([[1, "a.b"]]));
      const r2 = await peer.message();
      assert.deepEqual([r1.id, r1.route, r1.routeCode], [1, "a.b", 1]);
      assert.deepEqual([r2.id, r2.route, dec(r2.payload)], [2, "c.d", { n: 2 }]);
      peer.sock.terminate(); // neither is answered here
      return;
    }
    assert.equal(n, 1, "one reconnect");
    // a new dictionary on this connection
    const codes = new Map([[7, "a.b"], [9, "c.d"]]);
    await peer.handshake({ ...DEFAULT_SYS, dict: { "a.b": 7, "c.d": 9 }, resume: { token: "tok-2", grace: 5, resumed: true, last_request: 1 } });
    // the replay: what the client did not read
    peer.respond(1, { answer: 1 });
    peer.push("p", { n: 3 });
    for (let i = 0; i < 3; i++) seen.push(await peer.message(codes));
    peer.respond(seen[0].id, { answer: 2 });
    peer.respond(seen[1].id, { answer: 3 });
    peer.push("p", { n: 4 });
  });
  const c = await fakeConnect(srv.url, { reconnectDelay: 400 });
  try {
    assert.equal(c.resumeToken, "tok-1");
    assert.equal(c.resumeGrace, 5000);
    const pushes = [];
    c.on("p", (m) => pushes.push(m.n));
    const disconnected = nextEvent(c, "disconnect");
    // short timeouts: the reconnect takes longer (the first attempt comes after 200-400 ms)
    // and must not time them out
    const r1 = c.request("a.b", { n: 1 }, { timeout: 150 });
    const r2 = c.request("c.d", { n: 2 }, { timeout: 150 });
    const drop = await disconnected;
    assert.equal(drop.grace, 5000);
    assert.equal(c.state, "reconnecting");
    assert.equal(c.connected, false);
    assert.equal(c.received, 2, "two pushes read before the drop");
    // while reconnecting: queued
    const resumed = nextEvent(c, "resume");
    const r3 = c.request("e.f", { n: 3 });
    assert.equal(c.notify("g.h", { n: 4 }), true, "a notify is queued while reconnecting");
    const info = await resumed;
    assert.equal(info.resumed, true);
    assert.equal(info.resent, 1);
    assert.ok(info.attempts >= 1 && info.downtime >= 0, JSON.stringify(info));
    assert.equal(c.state, "open");
    assert.deepEqual(srv.handshakes[1].sys.resume, { token: "tok-1", received: 2 });
    assert.equal(srv.handshakes[1].sys.type, "js-websocket");
    assert.deepEqual(await r1, { answer: 1 });
    assert.deepEqual(await r2, { answer: 2 });
    assert.deepEqual(await r3, { answer: 3 });
    await until(() => pushes.length >= 4, "the last push");
    assert.deepEqual(pushes, [1, 2, 3, 4]);
    // r2 again (same id, route, body; its route now compressed with the new dict), then the queue
    assert.deepEqual(
      seen.map((m) => [m.type, m.id, m.route, m.routeCode, dec(m.payload)]),
      [
        [MessageType.Request, 2, "c.d", 9, { n: 2 }],
        [MessageType.Request, 3, "e.f", undefined, { n: 3 }],
        [MessageType.Notify, undefined, "g.h", undefined, { n: 4 }],
      ],
    );
    assert.equal(c.received, 7, "2 + the replay (2) + 3 live");
    assert.equal(c.resumeToken, "tok-2", "each handshake brings a new token");
    assert.deepEqual([...c.dict], [["a.b", 7], ["c.d", 9]]);
  } finally {
    c.close();
    await srv.close();
  }
});

test("fake server: resumed:false is a new session: pending and queued requests reject with NANO-410, queued notifies are dropped, the count restarts", async () => {
  const afterAck = [];
  const srv = await fakeServer(async (peer, n) => {
    if (n === 0) {
      await peer.handshake({ ...DEFAULT_SYS, resume: { token: "old", grace: 5, resumed: false } });
      peer.push("p", { n: 1 });
      await peer.message(); // the request
      peer.sock.terminate();
      return;
    }
    const hs = await peer.handshake({ ...DEFAULT_SYS, resume: { token: "new", grace: 5, resumed: false } });
    assert.deepEqual(hs.sys.resume, { token: "old", received: 1 });
    peer.push("p", { n: 2 });
    const m = await peer.message();
    afterAck.push(m);
    peer.respond(m.id, { fresh: true });
  });
  const c = await fakeConnect(srv.url);
  try {
    const pushes = [];
    c.on("p", (m) => pushes.push(m.n));
    const disconnected = nextEvent(c, "disconnect");
    const inFlight = c.request("room.join", {});
    await disconnected;
    const resumed = nextEvent(c, "resume");
    const queued = c.request("room.message", {});
    c.notify("room.chat", { lost: true });
    const closes = [];
    c.onclose = (i) => closes.push(i);
    const info = await resumed;
    assert.equal(info.resumed, false);
    for (const p of [inFlight, queued]) {
      await assert.rejects(p, (e) => e instanceof NanoError && e.code === "NANO-410" && /session lost/.test(e.msg));
    }
    assert.equal(c.state, "open");
    assert.equal(c.resumeToken, "new");
    await until(() => pushes.length >= 2, "the new session's push");
    assert.deepEqual(pushes, [1, 2]);
    assert.equal(c.received, 1, "counted from zero in the new session");
    // the first thing the server gets on the new session is this, nothing queued before it
    assert.deepEqual(await c.request("room.join", { again: 1 }), { fresh: true });
    assert.equal(afterAck.length, 1);
    assert.equal(afterAck[0].route, "room.join");
    assert.deepEqual(dec(afterAck[0].payload), { again: 1 });
    assert.deepEqual(closes, []);
  } finally {
    c.close();
    await srv.close();
  }
});

test("fake server: a kick, close() and a server without sys.resume end the client, no reconnect", async (t) => {
  await t.test("kick", async () => {
    const srv = await fakeServer(async (peer) => {
      await peer.handshake({ ...DEFAULT_SYS, resume: { token: "k", grace: 5, resumed: false } });
      await peer.message();
      peer.packet(5, enc({ reason: "bye" }));
    });
    const c = await fakeConnect(srv.url);
    let disconnects = 0;
    c.ondisconnect = () => disconnects++;
    const closed = nextEvent(c, "close");
    await assert.rejects(c.request("x.y", {}), (e) => e.code === "NANO-410");
    const info = await closed;
    assert.equal(info.kicked, true);
    assert.equal(c.state, "closed");
    assert.equal(disconnects, 0);
    assert.equal(srv.connections, 1);
    await srv.close();
  });
  await t.test("close()", async () => {
    const srv = await fakeServer(async (peer) => {
      await peer.handshake({ ...DEFAULT_SYS, resume: { token: "c", grace: 5, resumed: false } });
    });
    const c = await fakeConnect(srv.url);
    let disconnects = 0;
    c.ondisconnect = () => disconnects++;
    const closed = nextEvent(c, "close");
    c.close();
    assert.equal((await closed).kicked, false);
    assert.equal(c.state, "closed");
    assert.equal(c.notify("a.b", {}), false);
    await assert.rejects(c.request("a.b", {}), (e) => e.code === "NANO-410");
    assert.equal(disconnects, 0);
    assert.equal(srv.connections, 1);
    await srv.close();
  });
  await t.test("close() while reconnecting", async () => {
    const srv = await fakeServer(async (peer, n) => {
      if (n === 0) {
        await peer.handshake({ ...DEFAULT_SYS, resume: { token: "r", grace: 5, resumed: false } });
        peer.sock.terminate();
      } else {
        peer.sock.terminate(); // attempts fail
      }
    });
    const c = await fakeConnect(srv.url);
    await nextEvent(c, "disconnect");
    const pending = c.request("a.b", {});
    const closed = nextEvent(c, "close");
    c.close();
    await closed;
    await assert.rejects(pending, (e) => e.code === "NANO-410");
    assert.equal(c.state, "closed");
    assert.equal(c.notify("a.b", {}), false, "nothing is queued once closed");
    await srv.close();
  });
  await t.test("no sys.resume", async () => {
    const srv = await fakeServer(async (peer) => {
      await peer.handshake({ ...DEFAULT_SYS });
      await peer.message();
      peer.sock.terminate();
    });
    const c = await fakeConnect(srv.url);
    assert.equal(c.resumeToken, null);
    let disconnects = 0;
    c.ondisconnect = () => disconnects++;
    const closed = nextEvent(c, "close");
    await assert.rejects(c.request("x.y", {}), (e) => e.code === "NANO-410");
    assert.equal((await closed).kicked, false);
    assert.equal(disconnects, 0);
    assert.equal(srv.connections, 1);
    await srv.close();
  });
});

test("fake server: attempts stop when the grace runs out: a close, pending requests rejected", async () => {
  const srv = await fakeServer(async (peer, n) => {
    if (n === 0) {
      await peer.handshake({ ...DEFAULT_SYS, resume: { token: "g", grace: 0.4, resumed: false } });
      await peer.message();
      peer.sock.terminate();
    } else {
      peer.sock.terminate(); // the server is "gone": every attempt fails
    }
  });
  const c = await fakeConnect(srv.url, { reconnectDelay: 20, reconnectMaxDelay: 100 });
  const disconnected = nextEvent(c, "disconnect");
  const closed = nextEvent(c, "close");
  const req = c.request("x.y", {}, { timeout: 100 }); // its clock stops while reconnecting
  await disconnected;
  const t0 = Date.now();
  const info = await closed;
  const elapsed = Date.now() - t0;
  assert.match(info.reason, /not resumed within its grace/);
  assert.equal(info.kicked, false);
  assert.ok(elapsed >= 300 && elapsed < 2500, `gave up after ${elapsed} ms`);
  await assert.rejects(req, (e) => e.code === "NANO-410");
  assert.ok(srv.connections >= 3, `several attempts (${srv.connections - 1})`);
  assert.equal(c.state, "closed");
  await srv.close();
});

test("fake server: a silent server (heartbeat timeout) is reconnected, not closed", async () => {
  const srv = await fakeServer(async (peer, n) => {
    if (n === 0) {
      await peer.handshake({ ...DEFAULT_SYS, heartbeat: 0.1, resume: { token: "h", grace: 5, resumed: false } });
      peer.push("p", { n: 1 });
      return; // then silence, the socket left open
    }
    const hs = await peer.handshake({ ...DEFAULT_SYS, heartbeat: 30, resume: { token: "h2", grace: 5, resumed: true, last_request: 0 } });
    assert.deepEqual(hs.sys.resume, { token: "h", received: 1 });
    peer.push("p", { n: 2 });
  });
  const c = await fakeConnect(srv.url);
  try {
    const pushes = [];
    c.on("p", (m) => pushes.push(m.n));
    const drop = await nextEvent(c, "disconnect", 3000);
    assert.match(drop.reason, /heartbeat timeout/);
    assert.equal((await nextEvent(c, "resume", 3000)).resumed, true);
    await until(() => pushes.length >= 2, "the push after the resume");
    assert.deepEqual(pushes, [1, 2]);
    assert.equal(c.received, 2);
    assert.equal(c.heartbeatInterval, 30000, "the heartbeat comes from the new handshake");
  } finally {
    c.close();
    await srv.close();
  }
});

test("fake server: reconnect: false keeps a drop a close", async () => {
  const srv = await fakeServer(async (peer) => {
    await peer.handshake({ ...DEFAULT_SYS, resume: { token: "x", grace: 5, resumed: false } });
    peer.sock.terminate();
  });
  const c = await fakeConnect(srv.url, { reconnect: false });
  const info = await nextEvent(c, "close");
  assert.equal(info.kicked, false);
  assert.equal(srv.connections, 1);
  await srv.close();
});

// ---------------------------------------------------------------------------------------------
// The chat example through a TCP proxy

/**
 * A TCP proxy on 127.0.0.1 to `target` ("host:port"). `drop("up" | "down" | "both")` makes the
 * connections it carries now discard bytes that way (counted in `stats`), and a close from
 * the other end does not get through either (a silent network); `kill(how)` cuts
 * every one of them, both sides, with a TCP reset (`"reset"`, the default) or a plain close
 * (`"fin"`), no WebSocket close frame either way; `refuse(true)` cuts new connections as they
 * come. Connections made later forward normally.
 */
async function tcpProxy(target) {
  const { hostname, port } = new URL(`tcp://${target}`);
  const conns = new Set();
  const stats = { accepted: 0, droppedUp: 0, droppedDown: 0 };
  let refusing = false;
  const cut = (s, how = "reset") => (how === "reset" && typeof s.resetAndDestroy === "function" ? s.resetAndDestroy() : s.destroy());
  const server = net.createServer((client) => {
    stats.accepted++;
    client.on("error", () => {});
    if (refusing) {
      cut(client);
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    upstream.on("error", () => {});
    const c = { client, upstream, up: true, down: true };
    conns.add(c);
    client.on("data", (d) => (c.up ? upstream.write(d) : (stats.droppedUp += d.length)));
    upstream.on("data", (d) => (c.down ? client.write(d) : (stats.droppedDown += d.length)));
    // one side closing closes the other, unless that way drops bytes (the close is lost too)
    const end = () => client.destroyed && upstream.destroyed && conns.delete(c);
    client.on("close", () => {
      if (c.up) upstream.destroy();
      end();
    });
    upstream.on("close", () => {
      if (c.down) client.destroy();
      end();
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const listen = server.address();
  return {
    url: `ws://127.0.0.1:${listen.port}/nano`,
    stats,
    drop(way) {
      for (const c of conns) {
        if (way === "up" || way === "both") c.up = false;
        if (way === "down" || way === "both") c.down = false;
      }
    },
    kill(how = "reset") {
      for (const c of conns) {
        cut(c.client, how);
        cut(c.upstream, how);
      }
    },
    refuse(on) {
      refusing = on;
    },
    /** Stops: lets the connections end by themselves first (a client's close handshake
     * gets through: 3 s at most), then cuts what is left. */
    async close() {
      refusing = true;
      await until(() => conns.size === 0, "the proxied connections to end", 3000).catch(() => {});
      this.kill();
      await new Promise((r) => server.close(r));
    },
  };
}

function chatEnv() {
  const page = pageUrl("NANO_CHAT_URL");
  return { page, ws: wsUrlOf(page), target: new URL(page).host };
}

const chatConnect = (url, opts = {}) => NanoClient.connect(url, { WebSocket, timeout: 5000, ...opts });

/**
 * A room member that watches the room: `say(content)` sends a message and resolves once it
 * came back (the server broadcast it); `notices` collects onNewUser / onLeave contents.
 */
async function watcher(url) {
  const c = await chatConnect(url);
  const notices = [];
  c.on("onNewUser", (m) => notices.push(m.content));
  c.on("onLeave", (m) => notices.push(m.content));
  await c.request("room.join", {});
  return {
    client: c,
    notices,
    /** Resolves with the session id in the next "New user: <id>" notice. */
    nextJoin: () => c.waitFor("onNewUser", { timeout: 15000 }).then((m) => m.content.replace(/^New user: /, "")),
    async say(from, content) {
      const back = c.waitFor("onMessage", { timeout: 10000, filter: (m) => m.content === content });
      assert.equal(from.notify("room.message", { name: from === c ? "watcher" : "other", content }), true);
      await back;
    },
  };
}

/** `promise`, observed: resolves with `{ value }` or `{ error }`, never rejects. */
const settled = (promise) => promise.then((value) => ({ value }), (error) => ({ error }));

for (const how of ["fin", "reset"]) {
  test(`chat: a socket cut (${how === "fin" ? "closed" : "reset"}) resumes: every message once and in order, in-flight requests answered, nobody told`, { timeout: 60000 }, async () => {
    const env = chatEnv();
    const proxy = await tcpProxy(env.target);
    const w = await watcher(env.ws);
    let a;
    try {
      const joinedId = w.nextJoin();
      a = await chatConnect(proxy.url);
      assert.ok(a.resumeToken, `the chat example resumes sessions: sys.resume in its handshake (${JSON.stringify(a.handshake.sys)})`);
      assert.ok(a.resumeGrace >= 5000, `a grace of ${a.resumeGrace} ms`);
      const tag = token("resume");
      const got = [];
      a.on("onMessage", (m) => m.content.startsWith(tag) && got.push(m.content));
      const events = [];
      a.addEventListener("disconnect", (ev) => events.push(["disconnect", ev.detail.reason]));
      a.addEventListener("resume", (ev) => events.push(["resume", ev.detail.resumed]));
      a.addEventListener("close", (ev) => events.push(["close", ev.detail.reason]));
      assert.deepEqual(await a.request("room.join", {}), { code: 0, result: "success" });
      const aId = await joinedId;
      const expected = [];
      let n = 0;
      const say = (from) => {
        const content = `${tag}-${n++}`;
        expected.push(content);
        return w.say(from, content);
      };

      // live
      for (let i = 0; i < 3; i++) await say(w.client);
      await until(() => got.length === 3, "the first three messages at A");

      // the server's packets to A get lost from here on ...
      proxy.drop("down");
      // ... a request that reaches the server (A's next message comes back to the watcher after
      // it, so the server read it), its answer lost on the way
      const reached = settled(a.request("room.nope", {}, { timeout: 20000 }));
      await say(a);
      for (let i = 0; i < 3; i++) await say(w.client);
      // ... and one that never reaches it
      proxy.drop("both");
      const upBefore = proxy.stats.droppedUp;
      const lost = settled(a.request("room.nope2", {}, { timeout: 20000 }));
      await until(() => proxy.stats.droppedUp > upBefore, "the proxy swallowing A's second request");
      assert.equal(a.state, "open", "A did not notice anything yet");

      // the cut; A's attempts are refused until the others said more
      proxy.refuse(true);
      const disconnected = nextEvent(a, "disconnect");
      proxy.kill(how);
      await disconnected;
      assert.equal(a.state, "reconnecting");
      for (let i = 0; i < 3; i++) await say(w.client);
      const resumed = nextEvent(a, "resume", 20000);
      proxy.refuse(false);
      assert.equal((await resumed).resumed, true, "the session was resumed");
      assert.equal(a.state, "open");

      // (route not found: an error response is as good an answer as any)
      const r1 = await reached;
      assert.ok(r1.error instanceof NanoError && r1.error.code === "NANO-404" && /room\.nope$/.test(r1.error.msg), `the request that reached the server: ${r1.error ?? JSON.stringify(r1.value)}`);
      const r2 = await lost;
      assert.ok(r2.error instanceof NanoError && r2.error.code === "NANO-404" && /room\.nope2$/.test(r2.error.msg), `the request that did not: ${r2.error ?? JSON.stringify(r2.value)}`);
      // A talks again, and hears one more
      await say(a);
      await say(w.client);
      await until(() => got.length >= expected.length, `A getting all ${expected.length} messages (has ${got.length})`);
      assert.deepEqual(got, expected, "every message once, in order");
      assert.deepEqual(
        w.notices.filter((c) => c === `User left: ${aId}` || c === `New user: ${aId}`),
        [`New user: ${aId}`],
        "the room was told that A came, once, and never that A left",
      );
      assert.deepEqual(events.map(([e]) => e), ["disconnect", "resume"]);
    } finally {
      a?.close();
      w.client.close();
      await proxy.close();
    }
  });
}

test("chat: a silent connection (heartbeat timeout at the client) resumes too", { timeout: 60000 }, async () => {
  const env = chatEnv();
  const proxy = await tcpProxy(env.target);
  const w = await watcher(env.ws);
  let a;
  try {
    const joinedId = w.nextJoin();
    a = await chatConnect(proxy.url);
    assert.ok(a.resumeToken, "the chat example resumes sessions");
    const tag = token("silent");
    const got = [];
    a.on("onMessage", (m) => m.content.startsWith(tag) && got.push(m.content));
    await a.request("room.join", {});
    const aId = await joinedId;
    const expected = [];
    const say = (from, i) => {
      const content = `${tag}-${i}`;
      expected.push(content);
      return w.say(from, content);
    };
    await say(w.client, 0);
    await until(() => got.length === 1, "the first message at A");

    // nothing passes any more, both ways, and nobody closes: only heartbeats can tell
    const disconnected = nextEvent(a, "disconnect", 4 * a.heartbeatInterval + 5000);
    proxy.drop("both");
    for (let i = 1; i < 4; i++) await say(w.client, i);
    const resumed = nextEvent(a, "resume", 4 * a.heartbeatInterval + 20000);
    const drop = await disconnected;
    assert.match(drop.reason, /heartbeat timeout/);
    assert.equal((await resumed).resumed, true);
    await say(w.client, 4);
    await until(() => got.length >= expected.length, `A getting all ${expected.length} messages (has ${got.length})`);
    assert.deepEqual(got, expected);
    assert.deepEqual(w.notices.filter((c) => c === `User left: ${aId}` || c === `New user: ${aId}`), [`New user: ${aId}`]);
  } finally {
    a?.close();
    w.client.close();
    await proxy.close();
  }
});

test("chat page in chromium: its socket killed, it reconnects and shows every message once, in order; the room hears nothing", { timeout: 120000 }, async () => {
  const env = chatEnv();
  const proxy = await tcpProxy(env.target);
  try {
    await withBrowser("resume", async (browser) => {
      const tag = token("page");
      // dave watches from a page of his own, straight to the server
      const dave = await browser.newPage("dave");
      await dave.goto(`${env.page}?name=dave`);
      await dave.waitForSelector('#status[data-state="joined"]', { timeout: 15000 });
      const carol = await browser.newPage("carol");
      await carol.goto(`${env.page}?name=carol&ws=${encodeURIComponent(proxy.url)}`);
      await carol.waitForSelector('#status[data-state="joined"]', { timeout: 15000 });
      await carol.waitForSelector("#input:not([disabled])", { timeout: 5000 });
      assert.ok(await carol.evaluate(() => !!window.__chat.client?.resumeToken), "the page's client has a resume token");
      // carol's session id, from dave's notice
      const joinedLine = dave.locator("#messages li.notice", { hasText: /^New user: / }).last();
      await joinedLine.waitFor({ timeout: 10000 });
      const carolId = (await joinedLine.textContent()).replace(/^New user: /, "").trim();
      // carol's own notices (others joining and leaving aside): a rejoin or a lost connection
      // would add some
      const carolNotices = () =>
        carol.$$eval("#messages li.notice", (els) =>
          els.map((e) => e.textContent).filter((t) => !t.startsWith("New user: ") && !t.startsWith("User left: ")),
        );
      const noticesBefore = await carolNotices();

      const expected = [];
      const daveSays = async (i) => {
        const content = `${tag}-${i}`;
        expected.push(content);
        await dave.fill("#input", content);
        await dave.click("#send");
        // back at dave: the server broadcast it
        await dave.locator("#messages li.message.mine", { hasText: content }).waitFor({ timeout: 10000 });
      };
      await daveSays(0);
      await carol.locator("#messages li.message", { hasText: `${tag}-0` }).waitFor({ timeout: 10000 });

      proxy.refuse(true);
      proxy.kill("fin"); // (the node tests above cut with a reset too)
      await carol.waitForSelector('#status[data-state="reconnecting"]', { timeout: 10000 });
      for (let i = 1; i < 6; i++) await daveSays(i);
      proxy.refuse(false);
      await carol.waitForSelector('#status[data-state="joined"]', { timeout: 20000 });
      await carol.waitForSelector("#input:not([disabled])", { timeout: 5000 });
      await daveSays(6);
      // carol talks too, after the resume
      const fromCarol = `${tag}-carol`;
      await carol.fill("#input", fromCarol);
      await carol.click("#send");
      expected.push(fromCarol);
      await dave.locator("#messages li.message", { hasText: fromCarol }).waitFor({ timeout: 10000 });
      await carol.locator("#messages li.message.mine", { hasText: fromCarol }).waitFor({ timeout: 10000 });

      const shown = (await carol.$$eval("#messages li.message .content", (els) => els.map((e) => e.textContent))).filter((c) => c.startsWith(tag));
      assert.deepEqual(shown, expected, "every message once, in order");
      const chat = await carol.evaluate(() => ({
        disconnects: window.__chat.disconnects,
        resumes: window.__chat.resumes,
        state: window.__chat.client?.state,
      }));
      assert.deepEqual(chat, { disconnects: 1, resumes: [true], state: "open" });
      assert.deepEqual(await carolNotices(), noticesBefore, "carol's page did not rejoin or show a notice");
      const daveNotices = await dave.$$eval("#messages li.notice", (els) => els.map((e) => e.textContent));
      assert.deepEqual(daveNotices.filter((t) => t === `User left: ${carolId}`), [], "dave was not told carol left");
      assert.equal(daveNotices.filter((t) => t === `New user: ${carolId}`).length, 1, "dave was told once that carol came");
      await carol.close(); // (its socket ends through the proxy, before the proxy stops)
    });
  } finally {
    await proxy.close();
  }
});
