// nano.js in node against the running chat example (NANO_CHAT_URL, started by run.sh).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { WebSocket } from "ws";

import { NanoClient, NanoError } from "../../examples/web/nano.js";
import { pageUrl, wsUrlOf, repoRoot, sleep, token } from "./helpers.mjs";

const PAGE = pageUrl("NANO_CHAT_URL");
const WS = wsUrlOf(PAGE);
const connect = (opts = {}) => NanoClient.connect(WS, { WebSocket, timeout: 5000, ...opts });

test("the example serves the page, chat.js and the current nano.js", async () => {
  const page = await fetch(PAGE);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type") ?? "", /text\/html/);
  const html = await page.text();
  assert.match(html, /chat\.js/);
  for (const [path, file] of [
    ["nano.js", join(repoRoot, "examples/web/nano.js")],
    ["chat.js", join(repoRoot, "examples/chat/web/chat.js")],
  ]) {
    const res = await fetch(new URL(path, PAGE));
    assert.equal(res.status, 200, path);
    assert.match(res.headers.get("content-type") ?? "", /javascript/, `${path} content type`);
    assert.equal(await res.text(), readFileSync(file, "utf8"), `${path} served is the file in the tree (rebuild the example?)`);
  }
});

test("handshake offers a route dictionary and the json serializer", async () => {
  const c = await connect();
  try {
    assert.equal(c.handshake.code, 200);
    assert.equal(c.serializer, "json");
    assert.equal(c.handshake.sys.serializer, "json");
    const dict = c.handshake.sys.dict;
    assert.ok(dict && typeof dict === "object", "sys.dict is an object");
    for (const route of ["room.join", "room.message", "onMembers", "onNewUser", "onMessage"]) {
      assert.ok(Number.isInteger(dict[route]), `dict has ${route}: ${JSON.stringify(dict)}`);
    }
    assert.ok(c.heartbeatInterval > 0, "a heartbeat interval");
  } finally {
    c.close();
  }
});

for (const compressRoutes of [true, false]) {
  test(`room.join resolves {code: 0} and pushes onMembers (routes ${compressRoutes ? "compressed" : "as strings"})`, async () => {
    const c = await connect({ compressRoutes });
    try {
      const members = c.waitFor("onMembers", { timeout: 5000 });
      const res = await c.request("room.join", {});
      assert.deepEqual(res, { code: 0, result: "success" });
      const m = await members;
      assert.ok(Array.isArray(m.members), `members list: ${JSON.stringify(m)}`);
    } finally {
      c.close();
    }
  });
}

test("a request to an unknown route rejects with NANO-404 (and the connection stays usable)", async () => {
  const c = await connect();
  try {
    await assert.rejects(c.request("room.nope", {}), (e) => {
      assert.ok(e instanceof NanoError, String(e));
      assert.equal(e.code, "NANO-404");
      assert.equal(typeof e.msg, "string");
      return true;
    });
    await assert.rejects(c.request("nosuch.component", { a: 1 }), (e) => e.code === "NANO-404");
    assert.deepEqual(await c.request("room.join", {}), { code: 0, result: "success" });
  } finally {
    c.close();
  }
});

test("notify room.message comes back as onMessage to the sender and to other members", async () => {
  const a = await connect();
  const b = await connect({ compressRoutes: false });
  try {
    await a.request("room.join", {});
    const newUser = a.waitFor("onNewUser", { timeout: 5000 });
    await b.request("room.join", {});
    const nu = await newUser;
    assert.match(nu.content, /^New user: /);

    const msg = { name: "node-a", content: token("hello") };
    const atA = a.waitFor("onMessage", { filter: (m) => m.content === msg.content });
    const atB = b.waitFor("onMessage", { filter: (m) => m.content === msg.content });
    assert.equal(a.notify("room.message", msg), true);
    assert.deepEqual(await atA, msg);
    assert.deepEqual(await atB, msg);

    const reply = { name: "node-b", content: token("réponse ✓ 😀") };
    const back = a.waitFor("onMessage", { filter: (m) => m.content === reply.content });
    b.notify("room.message", reply);
    assert.deepEqual(await back, reply);
  } finally {
    a.close();
    b.close();
  }
});

test("many pipelined requests all get their own response, in any mix of results", async () => {
  const c = await connect();
  try {
    const calls = Array.from({ length: 100 }, (_, i) =>
      i === 50
        ? c.request("room.join", {}).then((r) => ["ok", r])
        : c.request(`room.nope${i}`, { i }).then(
            (r) => ["unexpected", r],
            (e) => ["err", e.code],
          ),
    );
    const results = await Promise.all(calls);
    results.forEach((r, i) => {
      if (i === 50) assert.deepEqual(r, ["ok", { code: 0, result: "success" }]);
      else assert.deepEqual(r, ["err", "NANO-404"], `request ${i}`);
    });
  } finally {
    c.close();
  }
});

test("joining twice gets an answer (success or an error response), never silence", async () => {
  const c = await connect();
  try {
    await c.request("room.join", {});
    const second = await c.request("room.join", {}, { timeout: 3000 }).then(
      (r) => r,
      (e) => e,
    );
    if (second instanceof Error) {
      assert.ok(second instanceof NanoError && second.code !== "NANO-408", `got ${second}`);
    } else {
      assert.equal(second.code, 0);
    }
  } finally {
    c.close();
  }
});

test("heartbeats both ways keep an idle connection open past 2 × the interval", async () => {
  const c = await connect();
  try {
    const interval = c.heartbeatInterval;
    assert.ok(interval > 0 && interval <= 5000, `run.sh starts the chat example with a short heartbeat (got ${interval} ms)`);
    let closed = null;
    c.onclose = (info) => (closed = info);
    await sleep(2 * interval + 1500);
    assert.equal(closed, null, `closed while idle: ${JSON.stringify(closed)}`);
    assert.equal(c.connected, true);
    assert.deepEqual(await c.request("room.join", {}), { code: 0, result: "success" });
  } finally {
    c.close();
  }
});

test("close() is idempotent and fires one close event", async () => {
  const c = await connect();
  await c.request("room.join", {});
  const closes = [];
  c.onclose = (info) => closes.push(info);
  c.close();
  c.close();
  assert.equal(closes.length, 1);
  assert.equal(c.connected, false);
});
