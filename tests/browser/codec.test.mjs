// nano.js codec against the project's byte-exact protocol vectors (no server needed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import {
  PacketDecoder,
  decodePackets,
  encodePacket,
  encodeMessage,
  decodeMessage,
  MessageType,
  NanoError,
  readVarint,
  writeVarint,
} from "../../examples/web/nano.js";

const vectors = JSON.parse(readFileSync(new URL("../../nano-core/tests/data/vectors.json", import.meta.url), "utf8"));
const hex = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (bytes) => Buffer.from(bytes).toString("hex");
const text = (bytes) => new TextDecoder().decode(bytes);
const enc = (s) => new TextEncoder().encode(s);
const TYPES = { request: MessageType.Request, notify: MessageType.Notify, response: MessageType.Response, push: MessageType.Push };
const KB64 = 64 * 1024;

// The dictionary from the handshake_response vector.
const hsVector = vectors.valid.find((v) => v.name === "handshake_response");
const DICT = new Map(Object.entries(JSON.parse(hsVector.body_utf8).sys.dict));
const CODES = new Map([...DICT].map(([r, c]) => [c, r]));

test("the vectors file is there and complete", () => {
  assert.ok(vectors.valid.length >= 15, "valid vectors");
  assert.ok(vectors.invalid.length >= 12, "invalid vectors");
});

for (const v of vectors.valid) {
  test(`valid vector ${v.name}: decode and re-encode byte for byte`, () => {
    const bytes = hex(v.hex);
    const packets = decodePackets(bytes, KB64);
    if (v.packets !== undefined) {
      assert.equal(packets.length, v.packets);
      // split at every possible boundary, and one byte at a time
      for (let cut = 0; cut <= bytes.length; cut++) {
        const d = new PacketDecoder(KB64);
        const got = [...d.push(bytes.subarray(0, cut)), ...d.push(bytes.subarray(cut))];
        assert.equal(got.length, v.packets, `split at ${cut}`);
        assert.equal(d.pending, 0);
        assert.equal(toHex(concat(got.map((p) => encodePacket(p.type, p.body)))), v.hex);
      }
      const d = new PacketDecoder(KB64);
      const got = [];
      for (const b of bytes) got.push(...d.push(Uint8Array.of(b)));
      assert.equal(got.length, v.packets);
      return;
    }
    assert.equal(packets.length, 1);
    const [p] = packets;
    assert.equal(toHex(encodePacket(p.type, p.body)), v.hex, "packet round trip");
    if (v.packet_type !== undefined) {
      assert.equal(p.type, v.packet_type);
      if (v.body_utf8 !== undefined) assert.equal(text(p.body), v.body_utf8);
      else assert.equal(p.body.length, 0);
      return;
    }
    assert.equal(p.type, 4, "a data packet");
    const m = decodeMessage(p.body, CODES);
    assert.equal(m.type, TYPES[v.message_type]);
    if (v.id !== undefined) assert.equal(m.id, v.id);
    else assert.equal(m.id, undefined);
    assert.equal(m.route, v.route);
    assert.equal(m.routeCode, v.route_code);
    assert.equal(m.error, !!v.error);
    assert.equal(text(m.payload), v.payload_utf8);
    // encode from the fields: compressed routes only when the vector uses a code
    const again = encodeMessage({
      type: m.type,
      id: m.id,
      route: m.route,
      error: m.error,
      payload: enc(v.payload_utf8),
      dict: v.route_code !== undefined ? DICT : undefined,
    });
    assert.equal(toHex(encodePacket(4, again)), v.hex, "message round trip");
  });
}

for (const v of vectors.invalid) {
  test(`invalid vector ${v.name}: clear error, no hang`, () => {
    const bytes = hex(v.hex);
    let packets;
    try {
      packets = decodePackets(bytes, KB64);
    } catch (err) {
      assert.ok(err instanceof NanoError, `a NanoError, got ${err}`);
      assert.match(err.code, /^NANO-\d{3}$/);
      return;
    }
    if (v.name === "response_from_client") {
      // Invalid only for a server (clients may not send responses); a client reads it fine.
      const m = decodeMessage(packets[0].body, CODES);
      assert.equal(m.type, MessageType.Response);
      return;
    }
    assert.equal(packets.length, 1, "the packet layer accepted it, so the message layer must refuse");
    assert.throws(() => decodeMessage(packets[0].body, CODES), (err) => err instanceof NanoError && /^NANO-\d{3}$/.test(err.code));
  });
}

test("an oversized header is refused before its body arrives", () => {
  const d = new PacketDecoder(KB64);
  assert.throws(() => d.push(Uint8Array.of(4, 0x01, 0x00, 0x01)), (e) => e.code === "NANO-413");
  // and the decoder stays failed
  assert.throws(() => d.push(Uint8Array.of(3, 0, 0, 0)), (e) => e.code === "NANO-413");
});

test("varints: round trip at the edges, and over-long ones are refused", () => {
  for (const n of [0, 1, 127, 128, 300, 16383, 16384, 2 ** 31 - 1, 2 ** 32 + 5, Number.MAX_SAFE_INTEGER]) {
    const bytes = Uint8Array.from(writeVarint([], n));
    const { value, next } = readVarint(bytes, 0);
    assert.equal(value, n);
    assert.equal(next, bytes.length);
  }
  const max = Uint8Array.from(writeVarint([], 0xffffffffffffffffn));
  assert.equal(max.length, 10);
  assert.equal(readVarint(max, 0).value, 0xffffffffffffffffn);
  assert.throws(() => readVarint(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), 0), NanoError);
  assert.throws(() => readVarint(Uint8Array.of(0x80), 0), NanoError);
});

test("compressed payloads (flag 0x10) and reserved flag bits are errors, never misread", () => {
  assert.throws(() => decodeMessage(Uint8Array.of(0x06 | 0x10, 3, 0x61, 0x62, 0x63, 0x7b, 0x7d)), (e) => e.code === "NANO-415");
  assert.throws(() => decodeMessage(Uint8Array.of(0x46, 3, 0x61, 0x62, 0x63)), (e) => e.code === "NANO-400");
});

test("routes longer than 255 bytes cannot be encoded", () => {
  assert.throws(() => encodeMessage({ type: MessageType.Notify, route: "x".repeat(256) }), NanoError);
  assert.equal(encodeMessage({ type: MessageType.Notify, route: "x".repeat(255) }).length, 257);
});

function concat(parts) {
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}
