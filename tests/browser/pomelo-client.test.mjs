// Wire compatibility with an existing client, unchanged: pomelo's own browser client
// (`pomelo-jsclient-websocket` from npm, with its `pomelo-protocol` codec) talks to the chat
// example. It connects to the server's root path, so run.sh starts a chat server with
// `--ws-path /` for it (NANO_CHAT_ROOT_URL).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { EventEmitter } from "node:events";

import { pageUrl } from "./helpers.mjs";

const require = createRequire(import.meta.url);

/** Loads the stock client the way a browser page would: globals, then the script. */
function loadPomelo() {
  globalThis.window = globalThis;
  window.Protocol = require("pomelo-protocol");
  window.EventEmitter = EventEmitter;
  window.WebSocket = require("ws");
  window.localStorage = { getItem: () => null, setItem: () => {} };
  return require("pomelo-jsclient-websocket");
}

test("pomelo's stock JS client joins the chat, gets its members, and hears its own message", async () => {
  const url = new URL(pageUrl("NANO_CHAT_ROOT_URL"));
  const pomelo = loadPomelo();
  // The stock client logs every socket event (including the close after the test); this
  // process runs only this file, so keep it quiet for good.
  console.log = () => {};
  console.error = () => {};
  try {
    // The init callback fires when the socket opens; the handshake reply comes after.
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no handshake")), 5000);
      const handshakeCallback = () => {
        clearTimeout(timer);
        resolve();
      };
      pomelo.init({ host: url.hostname, port: Number(url.port), handshakeCallback }, () => {});
    });
    const members = new Promise((resolve) => pomelo.on("onMembers", resolve));
    const heard = new Promise((resolve) => pomelo.on("onMessage", resolve));
    const joined = await new Promise((resolve) => pomelo.request("room.join", {}, resolve));
    assert.deepEqual(joined, { code: 0, result: "success" });
    assert.ok(Array.isArray((await members).members));
    pomelo.notify("room.message", { name: "pomelo", content: "hello from pomelo" });
    const message = await Promise.race([
      heard,
      new Promise((_, reject) => setTimeout(() => reject(new Error("no onMessage")), 5000)),
    ]);
    assert.deepEqual(message, { name: "pomelo", content: "hello from pomelo" });
  } finally {
    pomelo.disconnect();
  }
});
