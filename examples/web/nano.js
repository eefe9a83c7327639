// nano.js: a small client for nano / pomelo game servers, as an ES module.
//
// Written for this project from its PROTOCOL.md. No dependencies and no build step: a page
// loads it with `<script type="module">` / `import`, and node 20 imports it too (pass the
// `ws` package as the `WebSocket` option, node 20 has no stable global WebSocket).
//
//   import { NanoClient } from "./nano.js";
//   const client = await NanoClient.connect("ws://127.0.0.1:3250/nano", { timeout: 5000 });
//   client.on("onMessage", (msg) => console.log(msg.name, msg.content));
//   const joined = await client.request("room.join", {});   // rejects on error or timeout
//   client.notify("room.message", { name: "ann", content: "hi" });
//   client.onkick = (reason) => ...;  client.onclose = (info) => ...;
//   client.close();
//
// Wire format (PROTOCOL.md):
//   packet  = type (1 byte) | body length (24-bit big endian) | body
//             types: 1 handshake, 2 handshake ack, 3 heartbeat, 4 data, 5 kick
//   message = flag (1 byte) | id (LEB128 varint; request/response) | route | payload
//             flag bit 0: route compressed (2-byte BE code from the handshake dict)
//             flag bits 1-3: 0 request, 1 notify, 2 response, 3 push
//             flag bit 4: compressed payload (not supported: a protocol error here)
//             flag bit 5: error response, payload {"code","msg","metadata"}
//             route: 1 length byte + UTF-8, or the 2-byte code when compressed

/** Client SDK identification sent in the handshake (`sys.type` / `sys.version`). */
export const CLIENT_TYPE = "js-websocket";
export const CLIENT_VERSION = "0.1.0";

/** Packet types. */
export const PacketType = Object.freeze({
  Handshake: 1,
  HandshakeAck: 2,
  Heartbeat: 3,
  Data: 4,
  Kick: 5,
});

/** Message types (flag bits 1-3). */
export const MessageType = Object.freeze({
  Request: 0,
  Notify: 1,
  Response: 2,
  Push: 3,
});

const FLAG_ROUTE_COMPRESSED = 0x01;
const FLAG_PAYLOAD_COMPRESSED = 0x10;
const FLAG_ERROR = 0x20;
const FLAG_RESERVED = 0xc0;

/** Largest body a 24-bit length can announce. */
export const MAX_BODY = 0xffffff;

/** Error codes produced by the client itself (the server's come in error responses). */
export const ErrorCode = Object.freeze({
  BadRequest: "NANO-400",
  NotFound: "NANO-404",
  Timeout: "NANO-408",
  Closed: "NANO-410",
  TooLarge: "NANO-413",
  Unsupported: "NANO-415",
  Internal: "NANO-500",
});

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * An error with a string `code` (`NANO-404`, ...), the server's `msg` and optional `metadata`.
 * Error responses from the server reject requests with one of these; the client's own failures
 * (timeouts, closed connection, protocol errors) use the codes in `ErrorCode`.
 */
export class NanoError extends Error {
  constructor(code, msg, metadata) {
    super(`${code}: ${msg}`);
    this.name = "NanoError";
    this.code = code;
    this.msg = msg;
    this.metadata = metadata ?? {};
  }
}

function protocolError(msg, code = ErrorCode.BadRequest) {
  return new NanoError(code, msg);
}

// ---------------------------------------------------------------------------------------------
// Bytes and text

/** UTF-8 bytes of a string. */
export function utf8Encode(text) {
  return encoder.encode(text);
}

/** A string from UTF-8 bytes; throws NanoError NANO-400 on invalid UTF-8. */
export function utf8Decode(bytes) {
  try {
    return decoder.decode(bytes);
  } catch {
    throw protocolError("invalid UTF-8");
  }
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) {
    // the `ws` package may hand over fragments as an array of Buffers
    return concatBytes(data.map(toBytes));
  }
  throw new TypeError("expected binary data");
}

function concatBytes(parts) {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Packet layer

/** Encodes one packet: `type | 24-bit BE length | body`. */
export function encodePacket(type, body = new Uint8Array(0)) {
  if (!Number.isInteger(type) || type < 1 || type > 5) throw protocolError(`bad packet type ${type}`);
  const bytes = toBytes(body);
  if (bytes.length > MAX_BODY) throw protocolError(`packet body of ${bytes.length} bytes is too large`, ErrorCode.TooLarge);
  const out = new Uint8Array(4 + bytes.length);
  out[0] = type;
  out[1] = (bytes.length >>> 16) & 0xff;
  out[2] = (bytes.length >>> 8) & 0xff;
  out[3] = bytes.length & 0xff;
  out.set(bytes, 4);
  return out;
}

/**
 * Incremental packet decoder: `push(bytes)` returns the whole packets (`{type, body}`) that are
 * now complete and keeps the rest, so packets may be split across chunks or several may share
 * one chunk. Throws NanoError on a bad type byte or a length above `maxBodySize` (decided from
 * the 4-byte header alone, before any of the body is buffered). After an error the decoder is
 * unusable.
 */
export class PacketDecoder {
  constructor(maxBodySize = MAX_BODY) {
    this.maxBodySize = Math.min(maxBodySize, MAX_BODY);
    this._buf = new Uint8Array(0);
    this._start = 0; // read position in _buf
    this._end = 0; // write position in _buf
    this._failed = null;
  }

  /** Bytes buffered and not yet returned as packets. */
  get pending() {
    return this._end - this._start;
  }

  push(chunk) {
    if (this._failed) throw this._failed;
    const bytes = toBytes(chunk);
    this._append(bytes);
    const out = [];
    try {
      for (;;) {
        const avail = this._end - this._start;
        if (avail < 4) break;
        const b = this._buf;
        const s = this._start;
        const type = b[s];
        if (type < 1 || type > 5) throw protocolError(`bad packet type ${type}`);
        const len = (b[s + 1] << 16) | (b[s + 2] << 8) | b[s + 3];
        if (len > this.maxBodySize) {
          throw protocolError(`packet body of ${len} bytes exceeds the limit of ${this.maxBodySize}`, ErrorCode.TooLarge);
        }
        if (avail < 4 + len) break;
        out.push({ type, body: b.slice(s + 4, s + 4 + len) });
        this._start += 4 + len;
      }
    } catch (err) {
      this._failed = err;
      throw err;
    }
    if (this._start === this._end) {
      this._start = 0;
      this._end = 0;
    }
    return out;
  }

  _append(bytes) {
    if (bytes.length === 0) return;
    const used = this._end - this._start;
    if (this._end + bytes.length > this._buf.length) {
      if (used + bytes.length <= this._buf.length && this._start > 0) {
        this._buf.copyWithin(0, this._start, this._end);
      } else {
        const grown = new Uint8Array(Math.max(used + bytes.length, this._buf.length * 2, 256));
        grown.set(this._buf.subarray(this._start, this._end));
        this._buf = grown;
      }
      this._start = 0;
      this._end = used;
    }
    this._buf.set(bytes, this._end);
    this._end += bytes.length;
  }
}

/** Decodes a buffer holding exactly whole packets (throws if bytes are left over). */
export function decodePackets(bytes, maxBodySize = MAX_BODY) {
  const dec = new PacketDecoder(maxBodySize);
  const out = dec.push(bytes);
  if (dec.pending !== 0) throw protocolError(`truncated packet (${dec.pending} bytes left over)`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Varints (unsigned LEB128). Ids up to 2^53 - 1 are numbers; larger ones decode as BigInt.

/** Appends the varint of `value` (number or BigInt, >= 0) to the array `out`. */
export function writeVarint(out, value) {
  if (typeof value === "bigint") {
    if (value < 0n || value > 0xffffffffffffffffn) throw protocolError("varint out of range");
    do {
      let byte = Number(value & 0x7fn);
      value >>= 7n;
      if (value > 0n) byte |= 0x80;
      out.push(byte);
    } while (value > 0n);
    return out;
  }
  if (!Number.isSafeInteger(value) || value < 0) throw protocolError(`bad message id ${value}`);
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return out;
}

/** Reads a varint at `pos`: `{ value, next }`. Throws on truncation or more than 64 bits. */
export function readVarint(bytes, pos) {
  let value = 0n;
  let shift = 0n;
  for (let i = 0; ; i++) {
    if (pos + i >= bytes.length) throw protocolError("truncated message id");
    const byte = bytes[pos + i];
    if (i === 9 && byte > 0x01) throw protocolError("message id does not fit in 64 bits");
    value |= BigInt(byte & 0x7f) << shift;
    shift += 7n;
    if ((byte & 0x80) === 0) {
      const asNumber = value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
      return { value: asNumber, next: pos + i + 1 };
    }
    if (i === 9) throw protocolError("message id does not fit in 64 bits");
  }
}

// ---------------------------------------------------------------------------------------------
// Message layer

/**
 * Encodes a message body. `msg` = `{ type, id?, route?, payload?, error?, dict? }`:
 * `payload` is a Uint8Array (empty if absent); `dict` (a Map or object route → code) makes the
 * route compressed when it has an entry for it.
 */
export function encodeMessage(msg) {
  const { type, id, route, error } = msg;
  const payload = msg.payload === undefined ? new Uint8Array(0) : toBytes(msg.payload);
  if (!Number.isInteger(type) || type < 0 || type > 3) throw protocolError(`bad message type ${type}`);
  const head = [];
  let flag = type << 1;
  if (error) flag |= FLAG_ERROR;
  const hasId = type === MessageType.Request || type === MessageType.Response;
  const hasRoute = type !== MessageType.Response;
  let code;
  if (hasRoute) {
    if (typeof route !== "string") throw protocolError("a route is required");
    code = lookupCode(msg.dict, route);
    if (code !== undefined) flag |= FLAG_ROUTE_COMPRESSED;
  }
  head.push(flag);
  if (hasId) writeVarint(head, id);
  if (hasRoute) {
    if (code !== undefined) {
      head.push((code >>> 8) & 0xff, code & 0xff);
    } else {
      const r = utf8Encode(route);
      if (r.length > 255) throw protocolError(`route longer than 255 bytes: ${route}`);
      head.push(r.length, ...r);
    }
  }
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

function lookupCode(dict, route) {
  if (!dict) return undefined;
  const code = dict instanceof Map ? dict.get(route) : Object.prototype.hasOwnProperty.call(dict, route) ? dict[route] : undefined;
  return Number.isInteger(code) && code >= 0 && code <= 0xffff ? code : undefined;
}

/**
 * Decodes a message body into `{ type, id, route, routeCode, error, payload }`. `codes` (a Map
 * or object code → route) resolves compressed routes; an unknown code is NANO-404, malformed
 * input NANO-400, a compressed payload NANO-415.
 */
export function decodeMessage(bytes, codes) {
  bytes = toBytes(bytes);
  if (bytes.length < 1) throw protocolError("empty message");
  const flag = bytes[0];
  if (flag & FLAG_RESERVED) throw protocolError(`reserved message flag bits set (0x${flag.toString(16)})`);
  const type = (flag >> 1) & 0x07;
  if (type > 3) throw protocolError(`bad message type ${type}`);
  if (flag & FLAG_PAYLOAD_COMPRESSED) throw protocolError("compressed payloads are not supported", ErrorCode.Unsupported);
  let pos = 1;
  let id;
  if (type === MessageType.Request || type === MessageType.Response) {
    ({ value: id, next: pos } = readVarint(bytes, pos));
  }
  let route;
  let routeCode;
  if (type !== MessageType.Response) {
    if (flag & FLAG_ROUTE_COMPRESSED) {
      if (pos + 2 > bytes.length) throw protocolError("truncated route code");
      routeCode = (bytes[pos] << 8) | bytes[pos + 1];
      pos += 2;
      route = codes instanceof Map ? codes.get(routeCode) : codes?.[routeCode];
      if (route === undefined) throw protocolError(`unknown route code ${routeCode}`, ErrorCode.NotFound);
    } else {
      if (pos >= bytes.length) throw protocolError("missing route length");
      const len = bytes[pos];
      pos += 1;
      if (pos + len > bytes.length) throw protocolError(`route length ${len} overruns the message`);
      route = utf8Decode(bytes.subarray(pos, pos + len));
      pos += len;
    }
  }
  // (a response has no route: a route-compressed bit on one is ignored)
  return {
    type,
    id,
    route,
    routeCode,
    error: (flag & FLAG_ERROR) !== 0,
    payload: bytes.slice(pos),
  };
}

// ---------------------------------------------------------------------------------------------
// Serializer (JSON): objects → UTF-8 JSON; Uint8Array passes through as raw bytes.

/** Encodes a payload: Uint8Array/ArrayBuffer as is, strings as UTF-8, anything else as JSON. */
export function encodePayload(value) {
  if (value === undefined) return new Uint8Array(0);
  if (value instanceof Uint8Array || value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return toBytes(value);
  return utf8Encode(JSON.stringify(value));
}

/** Decodes a JSON payload; empty → null; bytes that are not JSON are returned as a Uint8Array. */
export function decodePayload(bytes) {
  if (bytes.length === 0) return null;
  let text;
  try {
    text = decoder.decode(bytes);
  } catch {
    return bytes;
  }
  try {
    return JSON.parse(text);
  } catch {
    return bytes;
  }
}

// ---------------------------------------------------------------------------------------------
// The client

const DEFAULTS = {
  timeout: 10000, // ms: connect + handshake, and each request
  heartbeatTimeout: undefined, // ms; default 2 × the server's heartbeat interval
  compressRoutes: true, // send routes as dict codes when the server offers them
  maxPacketSize: MAX_BODY,
  user: {}, // handshake `user` object
  WebSocket: undefined, // constructor; default globalThis.WebSocket
};

/**
 * A connection to a nano server over WebSocket. Create with `await NanoClient.connect(url)`.
 *
 * Events, as callbacks and as EventTarget events (`addEventListener`):
 * - `onkick(reason)` / "kick" (`event.reason`): the server kicked us; a "close" follows.
 * - `onclose(info)` / "close" (`event.detail` = `{ reason, kicked, code, wasClean }`): the
 *   connection is gone (kick, heartbeat timeout, protocol error, socket closed, `close()`).
 * - `onerror(err)` / "error" (`event.error`): a protocol error from the server side.
 * Pushes: `on(route, fn)` calls `fn(payload, message)` for each push on that route.
 */
export class NanoClient extends EventTarget {
  /**
   * Connects, performs the handshake and resolves with a ready client. Rejects with NanoError
   * NANO-408 after `timeout` ms, NANO-410 if the socket closes, or the handshake's code.
   */
  static connect(url, options = {}) {
    const client = new NanoClient(url, options);
    return client._connect().then(() => client);
  }

  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    /** The server's handshake response (`{code, sys: {heartbeat, dict, serializer}, user}`). */
    this.handshake = null;
    /** Heartbeat interval in ms (0 = none). */
    this.heartbeatInterval = 0;
    /** `"connecting"`, `"open"` or `"closed"`. */
    this.state = "connecting";
    this.onkick = null;
    this.onclose = null;
    this.onerror = null;
    this._ws = null;
    this._decoder = new PacketDecoder(this.options.maxPacketSize);
    this._dict = new Map(); // route → code
    this._codes = new Map(); // code → route
    this._nextId = 1;
    this._pending = new Map(); // id → { resolve, reject, timer, route }
    this._handlers = new Map(); // route → Set(fn)
    this._lastRecv = Date.now();
    this._heartbeatTimer = null;
    this._watchdogTimer = null;
    this._closeInfo = null;
    this._handshakeWaiter = null;
  }

  /** True once the handshake is done and until the connection closes. */
  get connected() {
    return this.state === "open";
  }

  /** The route-compression dictionary offered by the server (route → code). */
  get dict() {
    return new Map(this._dict);
  }

  /** The serializer the server announced (`"json"` if it said nothing). */
  get serializer() {
    return this.handshake?.sys?.serializer ?? "json";
  }

  _connect() {
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      return Promise.reject(new NanoError(ErrorCode.Internal, "no WebSocket implementation: pass options.WebSocket"));
    }
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this._handshakeWaiter = null;
        this._shutdown({ reason: err.message, kicked: false }, err);
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new NanoError(ErrorCode.Timeout, `no handshake from ${this.url} within ${this.options.timeout} ms`)),
        this.options.timeout,
      );
      this._handshakeWaiter = {
        resolve: () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this._handshakeWaiter = null;
          resolve();
        },
        reject: fail,
      };
      let ws;
      try {
        ws = new WS(this.url);
      } catch (err) {
        fail(new NanoError(ErrorCode.Closed, `cannot open ${this.url}: ${err.message ?? err}`));
        return;
      }
      this._ws = ws;
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        const hs = { sys: { type: CLIENT_TYPE, version: CLIENT_VERSION }, user: this.options.user ?? {} };
        this._sendPacket(PacketType.Handshake, utf8Encode(JSON.stringify(hs)));
      };
      ws.onmessage = (ev) => this._onData(ev.data);
      ws.onerror = () => {
        // a close event always follows; report there
      };
      ws.onclose = (ev) => {
        const info = {
          reason: this._closeInfo?.reason ?? (ev.reason || "connection closed"),
          kicked: this._closeInfo?.kicked ?? false,
          code: ev.code,
          wasClean: ev.wasClean,
        };
        if (this._handshakeWaiter) {
          this._handshakeWaiter.reject(new NanoError(ErrorCode.Closed, `connection to ${this.url} closed before the handshake finished (${info.reason})`));
        }
        this._shutdown(info);
      };
    });
  }

  // -- sending ---------------------------------------------------------------------------------

  /**
   * Sends a request; resolves with the decoded response payload. Rejects with the server's
   * error (NanoError with `code`, `msg`, `metadata`) for error responses, NANO-408 after
   * `timeout` ms (option per call: `{ timeout }`), NANO-410 if the connection is or gets closed.
   */
  request(route, payload = {}, { timeout = this.options.timeout } = {}) {
    if (!this.connected) return Promise.reject(new NanoError(ErrorCode.Closed, "not connected"));
    const id = this._nextId;
    this._nextId = this._nextId >= 0x7fffffff ? 1 : this._nextId + 1;
    let body;
    try {
      body = encodeMessage({ type: MessageType.Request, id, route, payload: this._encode(payload), dict: this._sendDict() });
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new NanoError(ErrorCode.Timeout, `request ${route} (id ${id}) timed out after ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer, route });
      this._sendPacket(PacketType.Data, body);
    });
  }

  /** Sends a notify (no answer). Returns false, sending nothing, when not connected. */
  notify(route, payload = {}) {
    if (!this.connected) return false;
    return this.notifyRaw(route, this._encode(payload));
  }

  /** Sends a notify whose payload is the given bytes (or a string's UTF-8), verbatim. */
  notifyRaw(route, bytes) {
    if (!this.connected) return false;
    const payload = typeof bytes === "string" ? utf8Encode(bytes) : toBytes(bytes);
    const body = encodeMessage({ type: MessageType.Notify, route, payload, dict: this._sendDict() });
    return this._sendPacket(PacketType.Data, body);
  }

  // Payloads: JSON when the server's serializer is json (the default); with any other
  // serializer (protobuf) the application passes and receives Uint8Array bytes.
  _encode(value) {
    if (this.serializer !== "json" && !(value instanceof Uint8Array || value instanceof ArrayBuffer || ArrayBuffer.isView(value))) {
      throw new NanoError(ErrorCode.Unsupported, `the server's serializer is ${this.serializer}: pass payloads as Uint8Array`);
    }
    return encodePayload(value);
  }

  _decode(bytes) {
    return this.serializer === "json" ? decodePayload(bytes) : bytes;
  }

  _sendDict() {
    return this.options.compressRoutes ? this._dict : undefined;
  }

  _sendPacket(type, body) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(encodePacket(type, body));
      return true;
    } catch {
      return false;
    }
  }

  // -- pushes ----------------------------------------------------------------------------------

  /** Calls `fn(payload, message)` for each push on `route`. Returns a function that unsubscribes. */
  on(route, fn) {
    if (typeof fn !== "function") throw new TypeError("on(route, fn): fn must be a function");
    let set = this._handlers.get(route);
    if (!set) this._handlers.set(route, (set = new Set()));
    set.add(fn);
    return () => this.off(route, fn);
  }

  /** Removes one handler, or all handlers of `route` when `fn` is omitted. */
  off(route, fn) {
    if (fn === undefined) {
      this._handlers.delete(route);
      return;
    }
    const set = this._handlers.get(route);
    if (set) {
      set.delete(fn);
      if (set.size === 0) this._handlers.delete(route);
    }
  }

  /** Calls `fn` for the next push on `route` only. */
  once(route, fn) {
    const off = this.on(route, (payload, msg) => {
      off();
      fn(payload, msg);
    });
    return off;
  }

  /**
   * Resolves with the payload of the next push on `route` for which `filter(payload)` is true;
   * rejects with NANO-408 after `timeout` ms, NANO-410 if the connection closes first.
   */
  waitFor(route, { timeout = this.options.timeout, filter = () => true } = {}) {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        off();
        this.removeEventListener("close", onClose);
      };
      const off = this.on(route, (payload) => {
        let ok = false;
        try {
          ok = filter(payload);
        } catch (err) {
          done();
          reject(err);
          return;
        }
        if (ok) {
          done();
          resolve(payload);
        }
      });
      const onClose = () => {
        done();
        reject(new NanoError(ErrorCode.Closed, `connection closed while waiting for ${route}`));
      };
      this.addEventListener("close", onClose);
      const timer = setTimeout(() => {
        done();
        reject(new NanoError(ErrorCode.Timeout, `no ${route} push within ${timeout} ms`));
      }, timeout);
      if (this.state === "closed") onClose();
    });
  }

  // -- receiving -------------------------------------------------------------------------------

  _onData(data) {
    if (this.state === "closed") return;
    if (typeof data === "string") {
      this._protocolError(protocolError("unexpected text frame"));
      return;
    }
    let packets;
    try {
      packets = this._decoder.push(toBytes(data));
    } catch (err) {
      this._protocolError(err);
      return;
    }
    this._lastRecv = Date.now();
    for (const p of packets) {
      if (this.state === "closed") return;
      try {
        this._onPacket(p);
      } catch (err) {
        this._protocolError(err instanceof NanoError ? err : new NanoError(ErrorCode.Internal, String(err?.message ?? err)));
        return;
      }
    }
  }

  _onPacket({ type, body }) {
    switch (type) {
      case PacketType.Handshake:
        this._onHandshake(body);
        break;
      case PacketType.Heartbeat:
        break; // liveness is tracked for every packet
      case PacketType.Data:
        if (this.state !== "open") throw protocolError("data packet before the handshake");
        this._onMessage(decodeMessage(body, this._codes));
        break;
      case PacketType.Kick:
        this._onKick(body);
        break;
      default:
        throw protocolError(`unexpected packet type ${type} from the server`);
    }
  }

  _onHandshake(body) {
    if (this.state !== "connecting") throw protocolError("unexpected second handshake");
    let hs;
    try {
      hs = JSON.parse(utf8Decode(body));
    } catch {
      throw protocolError("handshake response is not JSON");
    }
    this.handshake = hs;
    if (hs?.code !== 200) {
      const code = hs?.code ?? "?";
      const err = new NanoError(String(code), code === 501 ? "client version not supported" : `handshake refused (code ${code})`, { handshake: hs });
      this._handshakeWaiter?.reject(err);
      return;
    }
    const sys = hs.sys ?? {};
    const dict = sys.dict ?? {};
    for (const [route, code] of Object.entries(dict)) {
      if (Number.isInteger(code) && code >= 0 && code <= 0xffff) {
        this._dict.set(route, code);
        this._codes.set(code, route);
      }
    }
    this.heartbeatInterval = typeof sys.heartbeat === "number" && sys.heartbeat > 0 ? sys.heartbeat * 1000 : 0;
    this._sendPacket(PacketType.HandshakeAck);
    this.state = "open";
    this._lastRecv = Date.now();
    this._startHeartbeat();
    this._handshakeWaiter?.resolve();
  }

  _onMessage(msg) {
    if (msg.type === MessageType.Response) {
      const entry = this._pending.get(msg.id);
      if (!entry) return; // timed out already, or not ours
      this._pending.delete(msg.id);
      clearTimeout(entry.timer);
      if (msg.error) {
        // error objects are JSON here; with another serializer, keep the bytes in metadata
        const parsed = decodePayload(msg.payload);
        const e = parsed && typeof parsed === "object" && !(parsed instanceof Uint8Array) ? parsed : {};
        const metadata = e.metadata ?? (parsed instanceof Uint8Array ? { payload: parsed } : undefined);
        entry.reject(new NanoError(String(e.code ?? ErrorCode.Internal), String(e.msg ?? e.message ?? "error response"), metadata));
      } else {
        entry.resolve(this._decode(msg.payload));
      }
      return;
    }
    if (msg.type === MessageType.Push) {
      const set = this._handlers.get(msg.route);
      if (!set) return;
      const payload = this._decode(msg.payload);
      for (const fn of [...set]) {
        try {
          fn(payload, msg);
        } catch (err) {
          // a failing handler must not break the connection
          setTimeout(() => {
            throw err;
          });
        }
      }
      return;
    }
    throw protocolError(`the server sent a ${msg.type === MessageType.Request ? "request" : "notify"} message`);
  }

  _onKick(body) {
    let reason = "kicked";
    if (body.length > 0) {
      try {
        const parsed = JSON.parse(utf8Decode(body));
        if (parsed && parsed.reason !== undefined) reason = String(parsed.reason);
      } catch {
        // a kick body that is not JSON still kicks
      }
    }
    this._closeInfo = { reason, kicked: true };
    const ev = new Event("kick");
    ev.reason = reason;
    this._emit(ev, this.onkick, reason);
    this._handshakeWaiter?.reject(new NanoError(ErrorCode.Closed, `kicked during the handshake: ${reason}`));
    this._shutdown({ reason, kicked: true });
  }

  _protocolError(err) {
    const ev = new Event("error");
    ev.error = err;
    this._emit(ev, this.onerror, err);
    this._handshakeWaiter?.reject(err);
    this._shutdown({ reason: err.message, kicked: false }, err);
  }

  _emit(ev, callback, arg) {
    try {
      if (typeof callback === "function") callback.call(this, arg);
    } catch (err) {
      setTimeout(() => {
        throw err;
      });
    }
    this.dispatchEvent(ev);
  }

  // -- heartbeats ------------------------------------------------------------------------------

  _startHeartbeat() {
    if (!this.heartbeatInterval) return;
    const interval = this.heartbeatInterval;
    const deadAfter = this.options.heartbeatTimeout ?? 2 * interval;
    this._heartbeatTimer = setInterval(() => this._sendPacket(PacketType.Heartbeat), interval);
    this._watchdogTimer = setInterval(() => {
      const silent = Date.now() - this._lastRecv;
      if (silent > deadAfter) {
        this._closeInfo = { reason: `heartbeat timeout: server silent for ${silent} ms`, kicked: false };
        this._shutdown(this._closeInfo);
      }
    }, Math.max(50, Math.min(1000, interval / 4)));
  }

  // -- closing ---------------------------------------------------------------------------------

  /** Closes the connection; pending requests reject with NANO-410. */
  close(reason = "closed by client") {
    if (this.state === "closed") return;
    this._closeInfo = this._closeInfo ?? { reason, kicked: false };
    this._shutdown({ ...this._closeInfo, code: 1000, wasClean: true });
  }

  _shutdown(info, cause) {
    if (this.state === "closed") return;
    this.state = "closed";
    this._closeInfo = this._closeInfo ?? { reason: info.reason, kicked: info.kicked };
    clearInterval(this._heartbeatTimer);
    clearInterval(this._watchdogTimer);
    const ws = this._ws;
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    for (const [, entry] of this._pending) {
      clearTimeout(entry.timer);
      entry.reject(cause ?? new NanoError(ErrorCode.Closed, `connection closed before the response to ${entry.route} (${info.reason})`));
    }
    this._pending.clear();
    this._handshakeWaiter?.reject(cause ?? new NanoError(ErrorCode.Closed, `connection closed during the handshake (${info.reason})`));
    const detail = { reason: info.reason, kicked: !!info.kicked, code: info.code, wasClean: info.wasClean };
    const ev = new Event("close");
    ev.detail = detail;
    this._emit(ev, this.onclose, detail);
  }
}

export default NanoClient;
