// The chat example's generated client stubs (examples/chat/web/api.js + api.d.ts): the
// TypeScript compiler accepts a client written against them and rejects wrong calls, and the
// module talks to the running chat example (NANO_CHAT_URL, started by run.sh).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { WebSocket } from "ws";

import { here, pageUrl, repoRoot, token, wsUrlOf } from "./helpers.mjs";

const TSC = join(here, "node_modules", "typescript", "bin", "tsc");

function tsc(project) {
  const r = spawnSync(process.execPath, [TSC, "-p", join(here, "stubs", project)], { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test("tsc type-checks a client written against the chat example's stubs", () => {
  const { status, out } = tsc("tsconfig.json");
  assert.equal(status, 0, out);
});

test("tsc rejects each wrong call against the stubs", () => {
  const source = readFileSync(join(here, "stubs", "wrong.ts"), "utf8").split("\n");
  const wrongLines = source.flatMap((line, i) => (line.includes("// WRONG") ? [i + 1] : []));
  assert.ok(wrongLines.length >= 5, "the sample has its wrong calls");
  const { status, out } = tsc("tsconfig.wrong.json");
  assert.notEqual(status, 0, "tsc must fail");
  const errorLines = new Set([...out.matchAll(/wrong\.ts\((\d+),\d+\): error TS\d+/g)].map((m) => Number(m[1])));
  for (const line of wrongLines) {
    assert.ok(errorLines.has(line), `no error on line ${line} (${source[line - 1].trim()}):\n${out}`);
  }
  for (const line of errorLines) {
    assert.ok(wrongLines.includes(line), `an error on line ${line}, which is right:\n${out}`);
  }
});

test("the generated module talks to the chat example", async () => {
  const page = pageUrl("NANO_CHAT_URL");
  // The page imports the stubs from the server: the file in the tree.
  const served = await fetch(new URL("api.js", page));
  assert.equal(served.status, 200);
  assert.equal(await served.text(), readFileSync(join(repoRoot, "examples/chat/web/api.js"), "utf8"));

  // In node: the module beside nano.js, as the page has them.
  const dir = mkdtempSync(join(tmpdir(), "nano-stubs-"));
  try {
    copyFileSync(join(repoRoot, "examples/chat/web/api.js"), join(dir, "api.js"));
    copyFileSync(join(repoRoot, "examples/web/nano.js"), join(dir, "nano.js"));
    const { Api, ROUTE_CODES } = await import(pathToFileURL(join(dir, "api.js")).href);
    const options = { WebSocket, timeout: 5000 };
    const alice = await Api.connect(wsUrlOf(page), options);
    const bob = await Api.connect(wsUrlOf(page), options);
    try {
      assert.deepEqual(alice.staleRoutes(), [], "the baked-in codes are the server's");
      assert.equal(alice.client.dict.get("room.message"), ROUTE_CODES["room.message"]);
      const joined = await alice.room.join();
      assert.deepEqual(joined, { code: 0, result: "success" });
      await bob.room.join();
      const text = token("stub");
      const heard = new Promise((resolve) => {
        alice.on("onMessage", (m) => {
          if (m.content === text) resolve(m);
        });
      });
      bob.notify.room.message({ name: "bob", content: text });
      assert.deepEqual(await heard, { name: "bob", content: text });
    } finally {
      alice.client.close();
      bob.client.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
