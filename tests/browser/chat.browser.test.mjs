// The chat page in headless chromium: two pages join, one sends, the other shows it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { WebSocket } from "ws";

import { NanoClient } from "../../examples/web/nano.js";
import { pageUrl, wsUrlOf, token, withBrowser } from "./helpers.mjs";

const PAGE = pageUrl("NANO_CHAT_URL");
const TCP = pageUrl("NANO_CHAT_TCP"); // host:port of the chat example's TCP listener
const BOT = pageUrl("NANO_CHAT_BOT"); // the chat_bot example binary (a Rust client over TCP)

/**
 * Starts the Rust chat bot over TCP, expecting a message with content `expect`. Resolves once it
 * has joined; `bot.done` resolves with its exit code and output.
 */
function startBot(expect) {
  const child = spawn(BOT, ["--tcp", TCP, "--expect", expect, "--timeout", "45"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const done = new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal, out, err })));
  const joined = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the chat bot did not join within 20 s: ${out} ${err}`)), 20000);
    child.stdout.on("data", (d) => {
      out += d;
      if (/^joined /m.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr.on("data", (d) => (err += d));
    done.then((r) => reject(new Error(`the chat bot exited early (${r.code ?? r.signal}): ${r.out} ${r.err}`)));
  });
  return { child, joined, done };
}

async function openChat(browser, name, base = PAGE) {
  const page = await browser.newPage(name);
  await page.goto(`${base}?name=${encodeURIComponent(name)}`);
  await page.waitForSelector('#status[data-state="joined"]', { timeout: 15000 });
  await page.waitForSelector("#input:not([disabled])", { timeout: 5000 });
  return page;
}

test("two chat pages, a TCP bot and a node client share the room: A sends, B, the bot and node get it", { timeout: 90000 }, async () => {
  await withBrowser("chat", async (browser) => {
    const alice = await openChat(browser, "alice");
    // (bob opens ".../web", without the slash: the page must still work)
    const bob = await openChat(browser, "bob", PAGE.replace(/\/$/, ""));
    assert.ok(new URL(bob.url()).pathname.endsWith("/web/"), bob.url());

    // Alice heard that someone joined, and counts at least the two of them.
    await alice.waitForFunction(
      () => [...document.querySelectorAll("#messages li.notice")].some((li) => li.textContent.startsWith("New user: ")),
      null,
      { timeout: 10000 },
    );
    assert.ok(Number(await alice.textContent("#members-count")) >= 2, "members count");

    // A Rust client over TCP and a node client over WebSocket share the room with the pages.
    const text = token("hi from alice");
    const bot = startBot(text);
    const node = await NanoClient.connect(wsUrlOf(PAGE), { WebSocket, timeout: 5000 });
    try {
      await bot.joined;
      // the bot says hello on joining: TCP → both pages
      for (const page of [alice, bob]) {
        const line = page.locator("#messages li.message", { hasText: "bot is here" });
        await line.waitFor({ timeout: 10000 });
        assert.match(await line.locator(".name").textContent(), /^bot/);
      }
      await node.request("room.join", {});
      const atNode = node.waitFor("onMessage", { timeout: 10000, filter: (m) => m.content === text });

      await alice.fill("#input", text);
      await alice.click("#send");

      const bobLine = bob.locator("#messages li.message", { hasText: text });
      await bobLine.waitFor({ timeout: 10000 });
      assert.equal((await bobLine.locator(".content").textContent()).trim(), text);
      assert.match(await bobLine.locator(".name").textContent(), /^alice/);
      assert.equal(await bobLine.evaluate((li) => li.classList.contains("mine")), false);

      const aliceLine = alice.locator("#messages li.message.mine", { hasText: text });
      await aliceLine.waitFor({ timeout: 10000 });
      assert.equal(await alice.inputValue("#input"), "", "the input is cleared after sending");

      assert.deepEqual(await atNode, { name: "alice", content: text });
      const botResult = await bot.done;
      assert.equal(botResult.code, 0, `the TCP bot saw alice's message: ${botResult.out} ${botResult.err}`);
      assert.match(botResult.out, /got expected message/);

      // Bob answers with Enter, markup stays text.
      const reply = `<b>${token("bold?")}</b>`;
      await bob.fill("#input", reply);
      await bob.press("#input", "Enter");
      const replyLine = alice.locator("#messages li.message", { hasText: reply });
      await replyLine.waitFor({ timeout: 10000 });
      assert.equal(await replyLine.locator("b").count(), 0, "message text is not parsed as HTML");

      // And a message from the node client shows up in both pages.
      const fromNode = token("from node");
      node.notify("room.message", { name: "node", content: fromNode });
      await alice.locator("#messages li.message", { hasText: fromNode }).waitFor({ timeout: 10000 });
      await bob.locator("#messages li.message", { hasText: fromNode }).waitFor({ timeout: 10000 });
    } finally {
      node.close();
      if (bot.child.exitCode === null) bot.child.kill();
    }
  });
});
