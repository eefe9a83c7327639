// Shared helpers for the tests in this folder. run.sh starts the example servers and passes
// their page URLs in NANO_CHAT_URL / NANO_TADPOLE_URL; a test that needs one and does not get
// it fails (never skips).
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, "..", "..");
export const screenshotDir = process.env.NANO_SCREENSHOT_DIR ?? join(repoRoot, "target", "browser-screenshots");

/** The page URL of a running example (`http://127.0.0.1:PORT/web/`), from the environment. */
export function pageUrl(varName) {
  const url = process.env[varName];
  if (!url) {
    throw new Error(`${varName} is not set: start the example servers first (bash tests/browser/run.sh does it)`);
  }
  return url;
}

/** The WebSocket URL beside a page URL: ws://host:port/nano. */
export function wsUrlOf(page) {
  const u = new URL(page);
  return `ws://${u.host}/nano`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A unique-enough token for messages, so parallel tests never confuse each other's traffic. */
export function token(prefix = "t") {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/**
 * Launches the system chromium with playwright-core in a fresh profile. Returns
 * `{ context, newPage(name), close(), pages }`; pages log their console errors to stderr.
 */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
  const profile = mkdtempSync(join(tmpdir(), "nano-browser-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1000, height: 700 },
    timeout: 60000,
  });
  const pages = new Map();
  const logs = [];
  // The persistent context opens with one blank tab; pages made by newPage() get windows of
  // their own, so each keeps animating (reusing that tab would leave it throttled behind the
  // next page).
  return {
    context,
    pages,
    logs,
    async newPage(name) {
      const page = await context.newPage();
      page.on("console", (msg) => logs.push(`[${name}] console.${msg.type()}: ${msg.text()}`));
      page.on("pageerror", (err) => logs.push(`[${name}] pageerror: ${err.message}`));
      pages.set(name, page);
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `fn(browser)` with a fresh browser; on failure saves a screenshot of every page into
 * target/browser-screenshots/<label>-<page>.png and prints the pages' console logs, then
 * rethrows.
 */
export async function withBrowser(label, fn) {
  const browser = await launchBrowser();
  try {
    await fn(browser);
  } catch (err) {
    mkdirSync(screenshotDir, { recursive: true });
    for (const [name, page] of browser.pages) {
      const file = join(screenshotDir, `${label}-${name}.png`.replace(/[^\w.-]+/g, "_"));
      try {
        await page.screenshot({ path: file, fullPage: true, timeout: 10000 });
        process.stderr.write(`screenshot saved: ${file}\n`);
      } catch (e) {
        process.stderr.write(`screenshot of ${name} failed: ${e.message}\n`);
      }
    }
    if (browser.logs.length) process.stderr.write(`page console:\n${browser.logs.join("\n")}\n`);
    throw err;
  } finally {
    await browser.close();
  }
}
