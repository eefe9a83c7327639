// The tadpole page in headless chromium: two pages see each other's tadpole move.
import { test } from "node:test";
import assert from "node:assert/strict";

import { pageUrl, token, withBrowser } from "./helpers.mjs";

const PAGE = pageUrl("NANO_TADPOLE_URL");

async function openPond(browser, name) {
  const page = await browser.newPage(name);
  await page.goto(`${PAGE}?name=${encodeURIComponent(name)}`);
  await page.waitForFunction(() => window.__tadpole?.connected === true, null, { timeout: 15000 });
  return page;
}

const snap = (page) => page.evaluate(() => window.__tadpole.snapshot());

/** Waits until `pred(snapshot of page)` is truthy; returns that value. */
async function until(page, pred, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await snap(page);
    const v = pred(last);
    if (v) return v;
    await page.waitForTimeout(100);
  }
  throw new Error(`timed out waiting for ${what}; last snapshot: ${JSON.stringify(last)}`);
}

test("two tadpole pages see each other move (keys and mouse), chat bubbles, and leaving", { timeout: 120000 }, async () => {
  await withBrowser("tadpole", async (browser) => {
    const a = await openPond(browser, "anna");
    const b = await openPond(browser, "ben");
    const aId = String((await snap(a)).id);
    const bId = String((await snap(b)).id);
    assert.notEqual(aId, bId);

    // both are drawn (animation frames run) and see each other, with names
    const seenA = await until(b, (s) => s.others[aId], "B to see A");
    assert.equal(seenA.name, "anna");
    await until(a, (s) => s.others[bId]?.name === "ben" && s.others[bId], "A to see B");
    // (a page's animation frames may pause for a moment while another window opens)
    for (const page of [a, b]) {
      const f0 = (await snap(page)).frames;
      await until(page, (s) => s.frames > f0 + 10, "animation frames to be drawn");
    }

    // keyboard: A swims right; B sees A's tadpole go right
    const before = (await snap(b)).others[aId];
    const aStart = (await snap(a)).me;
    await a.keyboard.down("ArrowRight");
    await a.waitForTimeout(1500);
    await a.keyboard.up("ArrowRight");
    const aAfterKeys = (await snap(a)).me;
    assert.ok(aAfterKeys.x - aStart.x > 100, `A moved right on its own page: ${JSON.stringify([aStart, aAfterKeys])}`);
    await until(b, (s) => s.others[aId] && s.others[aId].netX - before.netX > 100, "B to see A move right (keys)");
    // B's drawn position follows the updates smoothly
    await until(b, (s) => s.others[aId] && s.others[aId].x - before.x > 80, "B to draw A further right");

    // mouse: hold the button below A's tadpole; A swims down and B sees it
    const beforeMouse = (await snap(b)).others[aId];
    const vp = a.viewportSize();
    await a.mouse.move(vp.width / 2, vp.height / 2 + 250);
    await a.mouse.down();
    await a.waitForTimeout(1500);
    await a.mouse.up();
    await until(b, (s) => s.others[aId] && s.others[aId].netY - beforeMouse.netY > 80, "B to see A move down (mouse)");

    // chat: A says something, B shows it as A's bubble, A over its own tadpole
    const words = token("hello pond");
    await a.keyboard.press("Enter");
    await a.waitForFunction(() => document.activeElement?.id === "chat", null, { timeout: 5000 });
    await a.keyboard.type(words);
    await a.keyboard.press("Enter");
    await until(b, (s) => s.others[aId]?.bubble === words, "B to show A's chat bubble");
    await until(a, (s) => s.me.bubble === words, "A to show its own bubble");

    // B swims too and A sees it
    const bBefore = (await snap(a)).others[bId];
    await b.keyboard.down("ArrowUp");
    await b.waitForTimeout(1300);
    await b.keyboard.up("ArrowUp");
    await until(a, (s) => s.others[bId] && bBefore.netY - s.others[bId].netY > 80, "A to see B move up");

    // A leaves: B forgets A's tadpole
    await a.close();
    browser.pages.delete("anna");
    await until(b, (s) => !(aId in s.others), "B to drop A after it left", 10000);
  });
});
