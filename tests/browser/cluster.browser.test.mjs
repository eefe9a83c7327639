// The cluster example's page in headless chromium: two pages on two gates of one cluster
// (master, chat node, gates as separate processes) log in and chat; balances come from the
// master.
import { test } from "node:test";
import assert from "node:assert/strict";

import { pageUrl, token, withBrowser } from "./helpers.mjs";

const GATE1 = pageUrl("NANO_CLUSTER_GATE1_URL");
const GATE2 = pageUrl("NANO_CLUSTER_GATE2_URL");

async function open(browser, name, base) {
  const page = await browser.newPage(name);
  await page.goto(`${base}?name=${encodeURIComponent(name)}`);
  await page.waitForSelector('#status[data-state="joined"]', { timeout: 15000 });
  return page;
}

const lines = (page) => page.evaluate(() => window.__cluster.messages);

test("two pages on two gates log in, see each other join, chat, and get their balance", { timeout: 90000 }, async () => {
  await withBrowser("cluster", async (browser) => {
    const ann = token("ann");
    const ben = token("ben");
    const a = await open(browser, ann, GATE1);
    // Ann was welcomed by her gate and told who is online by the master.
    await a.locator("#messages li.system", { hasText: `Welcome, ${ann}` }).waitFor({ timeout: 10000 });
    await a.locator("#messages li.system", { hasText: "members: " }).waitFor({ timeout: 10000 });

    const b = await open(browser, ben, GATE2);
    // Ben, on the other gate, hears Ann is online; Ann hears that Ben joined.
    const benMembers = b.locator("#messages li.system", { hasText: "members: " });
    await benMembers.waitFor({ timeout: 10000 });
    assert.match(await benMembers.textContent(), new RegExp(ann));
    await a.locator("#messages li.system", { hasText: `User user join: ${ben}` }).waitFor({ timeout: 10000 });

    // Ben sends from gate 2: both pages show it; Ben's balance goes down by one.
    const text = token("hello across gates");
    await b.fill("#input", text);
    await b.click("#send");
    for (const page of [a, b]) {
      const line = page.locator("#messages li.message", { hasText: text });
      await line.waitFor({ timeout: 10000 });
      assert.equal(await line.locator(".name").textContent(), ben);
    }
    await b.waitForFunction(() => document.querySelector("#balance").textContent === "999", null, { timeout: 10000 });
    assert.equal(await a.textContent("#balance"), "1000", "Ann sent nothing");
    assert.equal(await b.inputValue("#input"), "", "the input is cleared after sending");

    // Ann answers; no page logged an error.
    const reply = token("hi ben");
    await a.fill("#input", reply);
    await a.press("#input", "Enter");
    await b.locator("#messages li.message", { hasText: reply }).waitFor({ timeout: 10000 });
    assert.ok((await lines(b)).some((m) => m.name === ann && m.content === reply));
    const errors = browser.logs.filter((l) => /pageerror|console\.error/.test(l));
    assert.deepEqual(errors, []);
  });
});
