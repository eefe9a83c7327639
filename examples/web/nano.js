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
//   // a server that resumes sessions: a dropped socket reconnects by itself
//   client.ondisconnect = (info) => ...;  client.onresume = ({ resumed }) => resumed || rejoin();
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
//   session resume (opt-in by the server, on the handshake JSON; see NanoClient below):
//             server: sys.resume = {token, grace (s), resumed, last_request (when resumed)}
//             client, reconnecting: sys.resume = {token, received (Data packets read)}

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
  timeout: 10000, // ms: connect + handshake (and each reconnect attempt's), and each request
  heartbeatTimeout: undefined, // ms; default 2 × the server's heartbeat interval
  compressRoutes: true, // send routes as dict codes when the server offers them
  maxPacketSize: MAX_BODY,
  user: {}, // handshake `user` object (sent again on every reconnect)
  WebSocket: undefined, // constructor; default globalThis.WebSocket
  reconnect: true, // resume the session after a drop, when the server offers it (sys.resume)
  reconnectDelay: 100, // ms before the first reconnect attempt; doubles per attempt (± jitter)
  reconnectMaxDelay: 2000, // ms, the most between two attempts
  maxQueued: 1000, // requests + notifies held while reconnecting; beyond it they are refused
};

/**
 * A connection to a nano server over WebSocket. Create with `await NanoClient.connect(url)`.
 *
 * `state` is `"connecting"` (until `connect` resolves), `"open"`, `"reconnecting"` (only with a
 * server that resumes sessions, see below) or `"closed"` (for good: create a new client).
 *
 * Events, as callbacks and as EventTarget events (`addEventListener`):
 * - `onkick(reason)` / "kick" (`event.reason`): the server kicked us; a "close" follows.
 * - `onclose(info)` / "close" (`event.detail` = `{ reason, kicked, code, wasClean }`): the
 *   client is done (kick, heartbeat timeout or socket closed without resume, protocol error,
 *   `close()`, or a session that could not be resumed within its grace).
 * - `onerror(err)` / "error" (`event.error`): a protocol error from the server side.
 * - `ondisconnect(info)` / "disconnect" (`event.detail` = `{ reason, code, wasClean, grace }`):
 *   the connection dropped and the client is reconnecting (`grace`: ms it will keep trying).
 * - `onresume(info)` / "resume" (`event.detail` = `{ resumed, attempts, downtime, resent }`):
 *   reconnected. `resumed: true`: the same session, nothing lost but notifies sent around the
 *   cut. `resumed: false`: the server started a new session (the old one expired or was
 *   unknown): pending requests were rejected with NANO-410 "session lost", and the application
 *   has to log in / join again.
 * Pushes: `on(route, fn)` calls `fn(payload, message)` for each push on that route.
 *
 * Session resume (opt-in by the server, `options.reconnect` on the client, default true): a
 * handshake answer with `sys.resume = { token, grace }` makes a dropped connection (socket
 * closed or failed, heartbeat timeout; never a kick or `close()`) a "disconnect" instead of a
 * "close". The client reconnects with exponential backoff (`reconnectDelay` doubling up to
 * `reconnectMaxDelay`, jittered), each attempt a new WebSocket and a handshake carrying
 * `sys.resume = { token, received }` (`received`: Data packets read in the session so far,
 * `client.received`), until `grace` seconds after the drop; then it gives up with a "close".
 * The server replays what the client did not read, in order; requests it never got (id over
 * its `last_request`) are sent again, same id, route and body.
 * - While reconnecting, `request()` and `notify()` queue (up to `maxQueued`; `notify` returns
 *   true when queued). The queue goes out, in order, after the requests resent on resume; on a
 *   new session (`resumed: false`) queued requests reject with NANO-410 and notifies are dropped.
 * - A request's `timeout` counts only time spent open: its clock stops while reconnecting and
 *   restarts with what was left on resume (a queued request's starts when it is sent), so a
 *   reconnect never times a request out; the grace bounds the wait.
 * - Without `sys.resume` (any server that does not resume) nothing changes: a drop is a close.
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
    /** The server's last handshake response (`{code, sys: {heartbeat, dict, serializer}, user}`). */
    this.handshake = null;
    /** Heartbeat interval in ms (0 = none). */
    this.heartbeatInterval = 0;
    /** `"connecting"`, `"open"`, `"reconnecting"` or `"closed"`. */
    this.state = "connecting";
    /** Data packets (responses and pushes) read in this session, over all its connections. */
    this.received = 0;
    this.onkick = null;
    this.onclose = null;
    this.onerror = null;
    this.ondisconnect = null;
    this.onresume = null;
    this._ws = null;
    this._wsReady = false; // the current socket finished its handshake
    this._decoder = new PacketDecoder(this.options.maxPacketSize);
    this._dict = new Map(); // route → code
    this._codes = new Map(); // code → route
    this._nextId = 1;
    // id → { resolve, reject, route, payload, timeout, remaining, deadline, timer, sent }
    this._pending = new Map();
    this._handlers = new Map(); // route → Set(fn)
    this._lastRecv = Date.now();
    this._heartbeatTimer = null;
    this._watchdogTimer = null;
    this._closeInfo = null;
    this._handshakeWaiter = null;
    this._resume = null; // { token, grace (s) } from the last handshake, when the server resumes
    this._reconnect = null; // while reconnecting: { since, deadline, attempts, delay, timer, lastError }
    this._outbox = []; // while reconnecting: { request: id } | { route, payload } (a notify)
  }

  /** True once the handshake is done and until the connection closes or drops. */
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

  /** The token that resumes this session (null when the server does not resume sessions). */
  get resumeToken() {
    return this._resume?.token ?? null;
  }

  /** How long the server keeps this session after a drop, in ms (0: no resume). */
  get resumeGrace() {
    return this._resume ? this._resume.grace * 1000 : 0;
  }

  _connect() {
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      return Promise.reject(new NanoError(ErrorCode.Internal, "no WebSocket implementation: pass options.WebSocket"));
    }
    return new Promise((resolve, reject) => {
      this._openSocket(WS, this.options.timeout, null, {
        ok: resolve,
        fail: (err) => {
          this._shutdown({ reason: err.message, kicked: false }, err);
          reject(err);
        },
      });
    });
  }

  /**
   * Opens a socket and sends the handshake (with `sys.resume` when `resume` is given). Calls
   * `ok()` once the server's handshake is accepted, or `fail(err, ws)` once (timeout, socket
   * closed, refusal, kick). After the handshake, the socket closing is a drop (`_lost`).
   */
  _openSocket(WS, timeout, resume, { ok, fail }) {
    let ws = null;
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      if (this._handshakeWaiter === waiter) this._handshakeWaiter = null;
      return true;
    };
    const waiter = {
      resolve: () => settle() && ok(),
      reject: (err) => settle() && fail(err, ws),
    };
    const timer = setTimeout(
      () => waiter.reject(new NanoError(ErrorCode.Timeout, `no handshake from ${this.url} within ${timeout} ms`)),
      timeout,
    );
    this._handshakeWaiter = waiter;
    this._wsReady = false;
    this._decoder = new PacketDecoder(this.options.maxPacketSize);
    try {
      ws = new WS(this.url);
    } catch (err) {
      waiter.reject(new NanoError(ErrorCode.Closed, `cannot open ${this.url}: ${err.message ?? err}`));
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (this._ws !== ws) return;
      const sys = { type: CLIENT_TYPE, version: CLIENT_VERSION };
      if (resume) sys.resume = resume;
      this._sendPacket(PacketType.Handshake, utf8Encode(JSON.stringify({ sys, user: this.options.user ?? {} })));
    };
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._onData(ev.data, ws);
    };
    ws.onerror = () => {
      // a close event always follows; report there
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      const info = {
        reason: this._closeInfo?.reason ?? (ev.reason || "connection closed"),
        kicked: this._closeInfo?.kicked ?? false,
        code: ev.code,
        wasClean: ev.wasClean,
      };
      if (!this._wsReady) {
        waiter.reject(new NanoError(ErrorCode.Closed, `connection to ${this.url} closed before the handshake finished (${info.reason})`));
        return;
      }
      this._lost(info);
    };
  }

  /** Forgets a socket: no more events from it, and it is closed (abruptly where possible). */
  _dropSocket(ws) {
    if (!ws) return;
    if (this._ws === ws) {
      this._ws = null;
      this._wsReady = false;
    }
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = () => {}; // the `ws` package throws on an error event nobody listens to
    if (ws.readyState === 0 || ws.readyState === 1) {
      try {
        if (typeof ws.terminate === "function") ws.terminate();
        else ws.close(1000);
      } catch {
        // already closing
      }
    }
  }

  // -- sending ---------------------------------------------------------------------------------

  /**
   * Sends a request; resolves with the decoded response payload. Rejects with the server's
   * error (NanoError with `code`, `msg`, `metadata`) for error responses, NANO-408 after
   * `timeout` ms open (option per call: `{ timeout }`), NANO-410 if the connection is or gets
   * closed or the session is lost. While reconnecting the request is queued.
   */
  request(route, payload = {}, { timeout = this.options.timeout } = {}) {
    const queue = this.state === "reconnecting";
    if (!this.connected && !queue) return Promise.reject(new NanoError(ErrorCode.Closed, "not connected"));
    if (queue && this._outbox.length >= this.options.maxQueued) {
      return Promise.reject(new NanoError(ErrorCode.Closed, `reconnecting, and ${this._outbox.length} messages are queued already`));
    }
    const id = this._nextId;
    this._nextId = this._nextId >= 0x7fffffff ? 1 : this._nextId + 1;
    let bytes;
    let body;
    try {
      bytes = this._encode(payload);
      body = encodeMessage({ type: MessageType.Request, id, route, payload: bytes, dict: this._sendDict() });
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, route, payload: bytes, timeout, remaining: timeout, deadline: 0, timer: null, sent: false };
      this._pending.set(id, entry);
      if (queue) {
        this._outbox.push({ request: id });
        return;
      }
      entry.sent = true;
      this._arm(id, entry);
      this._sendPacket(PacketType.Data, body);
    });
  }

  /**
   * Sends a notify (no answer). Returns false, sending nothing, when not connected; while
   * reconnecting it is queued (true) unless the queue is full (false).
   */
  notify(route, payload = {}) {
    if (!this.connected && this.state !== "reconnecting") return false;
    return this.notifyRaw(route, this._encode(payload));
  }

  /** Sends a notify whose payload is the given bytes (or a string's UTF-8), verbatim. */
  notifyRaw(route, bytes) {
    const queue = this.state === "reconnecting";
    if (!this.connected && !queue) return false;
    const payload = typeof bytes === "string" ? utf8Encode(bytes) : toBytes(bytes);
    const body = encodeMessage({ type: MessageType.Notify, route, payload, dict: this._sendDict() });
    if (queue) {
      if (this._outbox.length >= this.options.maxQueued) return false;
      this._outbox.push({ route, payload });
      return true;
    }
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

  /** Sends a pending request (again), its route encoded with the current dictionary. */
  _sendRequest(id, entry) {
    entry.sent = true;
    const body = encodeMessage({ type: MessageType.Request, id, route: entry.route, payload: entry.payload, dict: this._sendDict() });
    this._sendPacket(PacketType.Data, body);
  }

  // A request's timeout clock: runs while open, stopped (keeping what is left) while reconnecting.
  _arm(id, entry) {
    clearTimeout(entry.timer);
    entry.deadline = Date.now() + entry.remaining;
    entry.timer = setTimeout(() => {
      if (this._pending.get(id) !== entry) return;
      this._pending.delete(id);
      entry.reject(new NanoError(ErrorCode.Timeout, `request ${entry.route} (id ${id}) timed out after ${entry.timeout} ms`));
    }, entry.remaining);
  }

  _pauseTimers() {
    const now = Date.now();
    for (const entry of this._pending.values()) {
      if (entry.timer === null) continue;
      clearTimeout(entry.timer);
      entry.timer = null;
      entry.remaining = Math.max(0, entry.deadline - now);
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
   * rejects with NANO-408 after `timeout` ms, NANO-410 if the client closes first (a reconnect
   * does not end the wait).
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

  _onData(data, ws) {
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
      // (a handler may have closed the client, a refused handshake dropped the socket)
      if (this.state === "closed" || this._ws !== ws) return;
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
        if (!this._wsReady) throw protocolError("data packet before the handshake");
        this.received += 1; // every Data packet counts, for resume, even one for nobody
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
    if (this._wsReady) throw protocolError("unexpected second handshake");
    let hs;
    try {
      hs = JSON.parse(utf8Decode(body));
    } catch {
      throw protocolError("handshake response is not JSON");
    }
    if (hs?.code !== 200) {
      const code = hs?.code ?? "?";
      if (this.state === "connecting") this.handshake = hs;
      const err = new NanoError(String(code), code === 501 ? "client version not supported" : `handshake refused (code ${code})`, { handshake: hs });
      this._handshakeWaiter?.reject(err);
      return;
    }
    this.handshake = hs;
    const sys = hs.sys ?? {};
    // dictionary and heartbeat: from each handshake anew
    this._dict = new Map();
    this._codes = new Map();
    for (const [route, code] of Object.entries(sys.dict ?? {})) {
      if (Number.isInteger(code) && code >= 0 && code <= 0xffff) {
        this._dict.set(route, code);
        this._codes.set(code, route);
      }
    }
    this.heartbeatInterval = typeof sys.heartbeat === "number" && sys.heartbeat > 0 ? sys.heartbeat * 1000 : 0;
    const r = sys.resume;
    const offered = r !== null && typeof r === "object" && typeof r.token === "string" && r.token !== "";
    const grace = offered && typeof r.grace === "number" && r.grace > 0 ? r.grace : 0;
    this._resume = offered ? { token: r.token, grace } : null;
    const reconnecting = this.state === "reconnecting";
    const resumed = reconnecting && offered && r.resumed === true;
    this._sendPacket(PacketType.HandshakeAck);
    this._wsReady = true;
    this.state = "open";
    this._lastRecv = Date.now();
    this._startHeartbeat();
    if (!resumed) this.received = 0; // a new session: the server counts from zero
    const rc = this._reconnect;
    this._reconnect = null;
    this._handshakeWaiter?.resolve();
    if (!reconnecting) return;
    const detail = { resumed, attempts: rc?.attempts ?? 0, downtime: rc ? Date.now() - rc.since : 0, resent: 0 };
    if (resumed) {
      detail.resent = this._flushAfterResume(typeof r.last_request === "number" ? r.last_request : undefined);
    } else {
      this._outbox = []; // queued notifies belonged to the lost session: dropped
      const lost = [...this._pending];
      this._pending.clear();
      for (const [id, entry] of lost) {
        clearTimeout(entry.timer);
        entry.reject(new NanoError(ErrorCode.Closed, `session lost: the server started a new session, ${entry.route} (id ${id}) went unanswered`));
      }
    }
    const ev = new Event("resume");
    ev.detail = detail;
    this._emit(ev, this.onresume, detail);
  }

  /**
   * After a resume: sends again the requests the server never got (id over `lastRequest`; with
   * no `lastRequest` none are resent, at most once), then the queue, then restarts the
   * request clocks. Returns how many requests were sent again.
   */
  _flushAfterResume(lastRequest) {
    let resent = 0;
    for (const [id, entry] of this._pending) {
      if (entry.sent && lastRequest !== undefined && id > lastRequest) {
        this._sendRequest(id, entry);
        resent += 1;
      }
    }
    const outbox = this._outbox;
    this._outbox = [];
    for (const item of outbox) {
      if (item.request !== undefined) {
        const entry = this._pending.get(item.request);
        if (entry && !entry.sent) this._sendRequest(item.request, entry);
      } else {
        this._sendPacket(PacketType.Data, encodeMessage({ type: MessageType.Notify, route: item.route, payload: item.payload, dict: this._sendDict() }));
      }
    }
    for (const [id, entry] of this._pending) {
      if (entry.timer === null) this._arm(id, entry);
    }
    return resent;
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
    // (shutdown first: a reconnect attempt's handshake failing this way must not retry)
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
    this._stopHeartbeat();
    if (!this.heartbeatInterval) return;
    const interval = this.heartbeatInterval;
    const deadAfter = this.options.heartbeatTimeout ?? 2 * interval;
    this._heartbeatTimer = setInterval(() => this._sendPacket(PacketType.Heartbeat), interval);
    this._watchdogTimer = setInterval(() => {
      const silent = Date.now() - this._lastRecv;
      if (silent > deadAfter) this._lost({ reason: `heartbeat timeout: server silent for ${silent} ms`, kicked: false });
    }, Math.max(50, Math.min(1000, interval / 4)));
  }

  _stopHeartbeat() {
    clearInterval(this._heartbeatTimer);
    clearInterval(this._watchdogTimer);
    this._heartbeatTimer = null;
    this._watchdogTimer = null;
  }

  // -- drops and reconnecting ------------------------------------------------------------------

  /** The open connection is gone (socket closed, heartbeat timeout): reconnect or close. */
  _lost(info) {
    if (this.state !== "open") return;
    const resume = this._resume;
    if (!this.options.reconnect || !resume || !(resume.grace > 0) || this._closeInfo) {
      this._closeInfo = this._closeInfo ?? { reason: info.reason, kicked: !!info.kicked };
      this._shutdown(info);
      return;
    }
    this._stopHeartbeat();
    this._dropSocket(this._ws);
    this._pauseTimers();
    this.state = "reconnecting";
    const now = Date.now();
    this._reconnect = {
      since: now,
      deadline: now + resume.grace * 1000,
      attempts: 0,
      delay: Math.max(1, this.options.reconnectDelay),
      timer: null,
      lastError: info.reason,
    };
    const detail = { reason: info.reason, code: info.code, wasClean: info.wasClean, grace: resume.grace * 1000 };
    const ev = new Event("disconnect");
    ev.detail = detail;
    this._emit(ev, this.ondisconnect, detail);
    if (this.state === "reconnecting") this._scheduleAttempt(); // (a handler may have closed us)
  }

  _scheduleAttempt() {
    const rc = this._reconnect;
    const left = rc.deadline - Date.now();
    if (left <= 0) {
      this._giveUp();
      return;
    }
    const wait = Math.min(rc.delay, this.options.reconnectMaxDelay) * (0.5 + Math.random() * 0.5);
    rc.delay = Math.min(rc.delay * 2, this.options.reconnectMaxDelay);
    rc.timer = setTimeout(() => this._attempt(), Math.min(wait, left));
  }

  _attempt() {
    const rc = this._reconnect;
    if (this.state !== "reconnecting" || !rc) return;
    rc.timer = null;
    const left = rc.deadline - Date.now();
    if (left <= 0) {
      this._giveUp();
      return;
    }
    rc.attempts += 1;
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    this._openSocket(WS, Math.min(this.options.timeout, left), { token: this._resume.token, received: this.received }, {
      ok: () => {},
      fail: (err, ws) => {
        // kicked, closed or a protocol error meanwhile: the client is done, no retry
        if (this.state !== "reconnecting" || this._closeInfo || this._reconnect !== rc) return;
        this._dropSocket(ws);
        rc.lastError = err.message;
        this._scheduleAttempt();
      },
    });
  }

  _giveUp() {
    const rc = this._reconnect;
    const secs = this._resume ? this._resume.grace : 0;
    this._shutdown({
      reason: `session not resumed within its grace of ${secs} s (${rc?.attempts ?? 0} attempts, last: ${rc?.lastError ?? "?"})`,
      kicked: false,
    });
  }

  // -- closing ---------------------------------------------------------------------------------

  /** Closes the connection (no reconnect); pending and queued requests reject with NANO-410. */
  close(reason = "closed by client") {
    if (this.state === "closed") return;
    this._closeInfo = this._closeInfo ?? { reason, kicked: false };
    this._shutdown({ ...this._closeInfo, code: 1000, wasClean: true });
  }

  _shutdown(info, cause) {
    if (this.state === "closed") return;
    this.state = "closed";
    this._closeInfo = this._closeInfo ?? { reason: info.reason, kicked: info.kicked };
    this._stopHeartbeat();
    if (this._reconnect) {
      clearTimeout(this._reconnect.timer);
      this._reconnect = null;
    }
    const ws = this._ws;
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    this._outbox = [];
    const pending = [...this._pending];
    this._pending.clear();
    for (const [, entry] of pending) {
      clearTimeout(entry.timer);
      entry.reject(cause ?? new NanoError(ErrorCode.Closed, `connection closed before the response to ${entry.route} (${info.reason})`));
    }
    this._handshakeWaiter?.reject(cause ?? new NanoError(ErrorCode.Closed, `connection closed during the handshake (${info.reason})`));
    const detail = { reason: info.reason, kicked: !!info.kicked, code: info.code, wasClean: info.wasClean };
    const ev = new Event("close");
    ev.detail = detail;
    this._emit(ev, this.onclose, detail);
  }
}

export default NanoClient;
