// The admin page of the chat example (/debug/nano/node on its --admin listener) in headless
// chromium: a chat page joins, the admin page lists its session (uid, transport, id as in
// node.json), filters the sessions table, lists the routes, draws its chart, and drops the
// session once the chat page closes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";

import { NanoClient } from "../../examples/web/nano.js";
import { pageUrl, wsUrlOf, token, withBrowser } from "./helpers.mjs";

const CHAT = pageUrl("NANO_CHAT_URL");
const ADMIN = pageUrl("NANO_CHAT_ADMIN_URL"); // http://127.0.0.1:PORT/debug/nano/node

async function nodeJson() {
  const res = await fetch(new URL("node.json", ADMIN), { cache: "no-store" });
  assert.equal(res.status, 200, `GET node.json: HTTP ${res.status}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/, "node.json's Content-Type");
  return res.json();
}

async function openChat(browser, name) {
  const page = await browser.newPage(name);
  await page.goto(`${CHAT}?name=${encodeURIComponent(name)}`);
  await page.waitForSelector('#status[data-state="joined"]', { timeout: 15000 });
  await page.waitForSelector("#input:not([disabled])", { timeout: 5000 });
  return page;
}

/** The sessions table as the page shows it: every row, its cells, and whether it is visible. */
const sessionRows = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("#sessions tbody tr[data-session-id]")].map((tr) => ({
      id: tr.dataset.sessionId,
      uid: tr.querySelector("td.uid").textContent,
      remote: tr.querySelector("td.remote").textContent,
      transport: tr.querySelector("td.transport").textContent,
      visible: tr.getClientRects().length > 0,
    })),
  );

/** Rows the filter `q` should keep: a case-insensitive substring of id, uid, remote or transport. */
const expectedIds = (rows, q) =>
  rows
    .filter((r) => [r.id, r.uid, r.remote, r.transport].some((v) => v.toLowerCase().includes(q.toLowerCase())))
    .map((r) => r.id);
const visibleIds = (rows) => rows.filter((r) => r.visible).map((r) => r.id);

test("the admin page shows a chat page's session live, filters sessions, lists routes and charts", { timeout: 90000 }, async () => {
  // A client of our own in the room: it hears "New user: ID" when the chat page joins, and the
  // chat example binds that session id as the session's uid.
  const observer = await NanoClient.connect(wsUrlOf(CHAT), { WebSocket, timeout: 5000 });
  try {
    await observer.request("room.join", {});
    await withBrowser("admin", async (browser) => {
      const name = token("admin-watch");
      const joinedNotice = observer.waitFor("onNewUser", {
        timeout: 30000,
        filter: (m) => /^New user: \d+$/.test(String(m?.content)),
      });
      joinedNotice.catch(() => {}); // awaited below; no unhandled rejection if openChat throws first
      const chat = await openChat(browser, name);
      const uid = String((await joinedNotice).content).slice("New user: ".length);

      // The admin page goes live and lists the chat page's session.
      const admin = await browser.newPage("admin");
      await admin.goto(ADMIN);
      await admin.waitForSelector('#status[data-state="live"]', { timeout: 15000 });
      await admin.waitForFunction(
        (uid) => [...document.querySelectorAll("#sessions tbody tr[data-session-id]")].some((tr) => tr.querySelector("td.uid").textContent === uid),
        uid,
        { timeout: 10000 },
      );
      const data = await nodeJson();
      const session = data.sessions.find((s) => s.uid === uid);
      assert.ok(session, `node.json lists a session with uid ${uid}: ${JSON.stringify(data.sessions)}`);
      assert.equal(session.transport, "websocket");
      assert.equal(String(session.id), uid, "the chat example binds the session id as the uid");
      const row = (await sessionRows(admin)).find((r) => r.uid === uid);
      assert.equal(row.id, String(session.id), "the page's row id is node.json's session id");
      assert.equal(row.transport, "websocket");
      assert.equal(row.remote, session.remote);

      // The filter: by uid (every row containing it stays, the chat page's among them), by the
      // remote address (that row alone), by a token nobody has (none, "0 of N").
      await admin.click("#filter");
      await admin.keyboard.type(uid);
      let rows = await sessionRows(admin);
      assert.deepEqual(visibleIds(rows), expectedIds(rows, uid), `filter ${uid}: ${JSON.stringify(rows)}`);
      assert.ok(visibleIds(rows).includes(row.id));
      await admin.fill("#filter", session.remote.toUpperCase());
      rows = await sessionRows(admin);
      assert.deepEqual(visibleIds(rows), [row.id], `filter ${session.remote}: ${JSON.stringify(rows)}`);
      // (the page re-renders every second: the filter keeps its value, its focus and its effect)
      const seen = await admin.evaluate(() => window.__samples.length);
      await admin.waitForFunction((n) => window.__samples.length >= n + 2, seen, { timeout: 10000 });
      assert.equal(await admin.inputValue("#filter"), session.remote.toUpperCase());
      assert.equal(await admin.evaluate(() => document.activeElement?.id), "filter");
      assert.deepEqual(visibleIds(await sessionRows(admin)), [row.id]);
      const nobody = token("nobody");
      await admin.fill("#filter", nobody);
      const counted = await admin.evaluate(() => ({
        text: document.querySelector("#session-count").textContent.trim(),
        total: document.querySelectorAll("#sessions tbody tr[data-session-id]").length,
        visible: [...document.querySelectorAll("#sessions tbody tr")].filter((tr) => tr.getClientRects().length > 0).length,
      }));
      assert.equal(counted.visible, 0, "no row is visible");
      assert.ok(counted.total >= 2, "the chat page and the observer are listed");
      assert.equal(counted.text, `0 of ${counted.total}`);
      await admin.fill("#filter", "");
      assert.equal(visibleIds(await sessionRows(admin)).length, (await sessionRows(admin)).length);

      // Components: every route of node.json is in the table, the chat's two among them.
      const routes = data.components.flatMap((c) => c.routes.map((r) => r.route));
      assert.ok(routes.includes("room.join") && routes.includes("room.message"), `routes: ${routes}`);
      const componentsText = await admin.textContent("#components");
      for (const r of routes) assert.ok(componentsText.includes(r), `#components lists ${r}`);

      // The chart has live data and something drawn.
      await admin.waitForFunction(() => window.__samples.length >= 3, null, { timeout: 15000 });
      const last = await admin.evaluate(() => window.__samples[window.__samples.length - 1]);
      assert.ok(last.clients >= 2, `the last sample counts the chat page and the observer: ${JSON.stringify(last)}`);
      const painted = await admin.evaluate(() => {
        const c = document.querySelector("#chart");
        const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) n++;
        return n;
      });
      assert.ok(painted > 0, "the chart canvas is not blank");

      // The chat page leaves: its session goes from the table (and from node.json).
      await chat.close();
      await admin.waitForFunction(
        (uid) => ![...document.querySelectorAll("#sessions tbody tr[data-session-id]")].some((tr) => tr.querySelector("td.uid").textContent === uid),
        uid,
        { timeout: 15000 },
      );
      assert.equal((await nodeJson()).sessions.some((s) => s.uid === uid), false, "node.json dropped the closed session");
      assert.equal(await admin.getAttribute("#status", "data-state"), "live");

      const errors = browser.logs.filter((l) => /pageerror|console\.error/.test(l));
      assert.deepEqual(errors, []);
    });
  } finally {
    observer.close();
  }
});
