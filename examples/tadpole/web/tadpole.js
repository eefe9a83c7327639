// Tadpoles: every visitor is a tadpole; everyone sees everyone swim.
//
// Server routes (component `World`): request `World.Enter` {} → {id}; notify `World.Update`
// with raw JSON bytes {id,x,y,angle,momentum,name}, relayed verbatim to everyone as push
// `update`; notify `World.Message` {message} → push `message` {id,message}; push `leave` {id}.
//
// Query parameters: `?name=ann`, `?ws=ws://host:port/nano`.
import { NanoClient } from "./nano.js";

// ---- tuning ------------------------------------------------------------------------------------
const MAX_SPEED = 260; // world units (CSS px) per second
const ACCEL = 520; // per second²
const DRAG = 1.8; // exponential slow-down per second when not swimming
const TURN_RATE = 6; // radians per second
const SEND_INTERVAL = 1000 / 15; // position updates while moving
const IDLE_SEND_INTERVAL = 1000; // keep-alive update when still, so newcomers see us
const STALE_AFTER = 15000; // forget tadpoles we have not heard of for this long
const EXTRAPOLATE_MAX = 0.25; // seconds of dead reckoning between updates
const TAIL_SEGMENTS = 12;
const TAIL_SPACING = 4.2;
const BUBBLE_MS = 6000;

const params = new URLSearchParams(location.search);
const wsUrl = params.get("ws") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/nano`;
const textEncoder = new TextEncoder();

const canvas = document.getElementById("world");
const ctx = canvas.getContext("2d");
const ui = {
  status: document.getElementById("status"),
  players: document.getElementById("players"),
  name: document.getElementById("name"),
  chat: document.getElementById("chat"),
};

// ---- state -------------------------------------------------------------------------------------
function makeTadpole(x, y, angle, name) {
  const tail = [];
  for (let i = 0; i < TAIL_SEGMENTS; i++) {
    tail.push({ x: x - Math.cos(angle) * TAIL_SPACING * (i + 1), y: y - Math.sin(angle) * TAIL_SPACING * (i + 1) });
  }
  return { x, y, angle, momentum: 0, name, tail, phase: Math.random() * 10, bubble: null };
}

const spawnAngle = Math.random() * Math.PI * 2;
const me = makeTadpole((Math.random() - 0.5) * 300, (Math.random() - 0.5) * 300, spawnAngle, "");
me.id = null;
me.name = (params.get("name") ?? storageGet("nano-tadpole-name") ?? `tadpole-${Math.floor(100 + Math.random() * 900)}`).slice(0, 24);
ui.name.value = me.name;

/** id → tadpole, with `net` = the last update received. */
const others = new Map();
const camera = { x: me.x, y: me.y };
const pointer = { x: 0, y: 0, down: false };
const keys = new Set();
let client = null;
let lastSent = { at: 0, x: NaN, y: NaN, angle: NaN, momentum: NaN, name: "" };
let lastStep = performance.now();
let retryDelay = 1000;
let viewW = 0;
let viewH = 0;

// For tests and the curious.
window.__tadpole = {
  get id() {
    return me.id;
  },
  get connected() {
    return !!client?.connected && me.id !== null;
  },
  me,
  others,
  /** Frames drawn so far. */
  frames: 0,
  /**
   * Plain data: `{ id, connected, frames, me: {x, y, angle, bubble},
   * others: { [id]: {x, y, netX, netY, name, bubble} } }`.
   */
  snapshot() {
    const o = {};
    for (const [id, t] of others) {
      o[id] = { x: t.x, y: t.y, netX: t.net.x, netY: t.net.y, name: t.name, bubble: t.bubble?.text ?? null };
    }
    return {
      id: me.id,
      connected: this.connected,
      frames: this.frames,
      me: { x: me.x, y: me.y, angle: me.angle, bubble: me.bubble?.text ?? null },
      others: o,
    };
  },
};

// ---- network -----------------------------------------------------------------------------------
function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function updatePlayers() {
  const n = others.size + 1;
  ui.players.textContent = `${n} swimming`;
}

async function connect() {
  setStatus("connecting", "connecting…");
  let c;
  try {
    c = await NanoClient.connect(wsUrl, { timeout: 8000 });
  } catch {
    setStatus("error", "offline");
    retryLater();
    return;
  }
  c.on("update", onUpdate);
  c.on("message", onMessage);
  c.on("leave", (m) => {
    others.delete(String(m?.id));
    updatePlayers();
  });
  c.onclose = (info) => {
    client = null;
    me.id = null;
    others.clear();
    updatePlayers();
    setStatus("closed", info.kicked ? `kicked: ${info.reason}` : "disconnected");
    if (!info.kicked) retryLater();
  };
  try {
    const res = await c.request("World.Enter", {});
    if (res?.id === undefined) throw new Error(`unexpected answer ${JSON.stringify(res)}`);
    me.id = res.id;
  } catch (err) {
    setStatus("error", `cannot enter: ${err.message}`);
    c.close();
    return;
  }
  client = c;
  retryDelay = 1000;
  setStatus("online", "online");
  sendUpdate(performance.now());
}

function retryLater() {
  setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

function onUpdate(u) {
  if (!u || typeof u !== "object" || u instanceof Uint8Array) return;
  if (u.id === undefined || u.id === null || String(u.id) === String(me.id)) return; // our own echo
  const x = Number(u.x);
  const y = Number(u.y);
  if (!Number.isFinite(x) || !Number.isFinite(y)) return;
  const angle = Number.isFinite(Number(u.angle)) ? Number(u.angle) : 0;
  const momentum = Number.isFinite(Number(u.momentum)) ? Math.min(Math.max(Number(u.momentum), 0), MAX_SPEED * 2) : 0;
  const id = String(u.id);
  const name = typeof u.name === "string" ? u.name.slice(0, 24) : "";
  let t = others.get(id);
  if (!t) {
    t = makeTadpole(x, y, angle, name);
    others.set(id, t);
    updatePlayers();
  }
  t.name = name;
  t.net = { x, y, angle, momentum, at: performance.now() };
  t.lastSeen = performance.now();
}

function onMessage(m) {
  if (!m || typeof m.message !== "string") return;
  const text = m.message.slice(0, 200);
  const target = String(m.id) === String(me.id) ? me : others.get(String(m.id));
  if (target) target.bubble = { text, until: performance.now() + BUBBLE_MS };
}

function round(v, digits) {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

function sendUpdate(now) {
  if (!client?.connected || me.id === null) return;
  const msg = {
    id: me.id,
    x: round(me.x, 1),
    y: round(me.y, 1),
    angle: round(me.angle, 3),
    momentum: round(me.momentum, 1),
    name: me.name,
  };
  // The server relays these bytes untouched: send them raw.
  client.notifyRaw("World.Update", textEncoder.encode(JSON.stringify(msg)));
  lastSent = { at: now, x: me.x, y: me.y, angle: me.angle, momentum: me.momentum, name: me.name };
}

function maybeSend(now) {
  const since = now - lastSent.at;
  const changed =
    Math.abs(me.x - lastSent.x) > 0.5 ||
    Math.abs(me.y - lastSent.y) > 0.5 ||
    Math.abs(angleDiff(me.angle, lastSent.angle)) > 0.02 ||
    Math.abs(me.momentum - lastSent.momentum) > 1 ||
    me.name !== lastSent.name ||
    !Number.isFinite(lastSent.x);
  if ((changed && since >= SEND_INTERVAL) || since >= IDLE_SEND_INTERVAL) sendUpdate(now);
}

// ---- simulation --------------------------------------------------------------------------------
function angleDiff(a, b) {
  let d = (a - b) % (Math.PI * 2);
  if (d > Math.PI) d -= Math.PI * 2;
  if (d < -Math.PI) d += Math.PI * 2;
  return d;
}

function turnToward(angle, target, maxStep) {
  const d = angleDiff(target, angle);
  return angle + Math.max(-maxStep, Math.min(maxStep, d));
}

function steering() {
  if (document.activeElement === ui.chat || document.activeElement === ui.name) keys.clear();
  const kx = (keys.has("right") ? 1 : 0) - (keys.has("left") ? 1 : 0);
  const ky = (keys.has("down") ? 1 : 0) - (keys.has("up") ? 1 : 0);
  if (kx || ky) return { angle: Math.atan2(ky, kx), speed: MAX_SPEED };
  if (pointer.down) {
    const dx = pointer.x - (me.x - camera.x + viewW / 2);
    const dy = pointer.y - (me.y - camera.y + viewH / 2);
    const dist = Math.hypot(dx, dy);
    if (dist > 14) return { angle: Math.atan2(dy, dx), speed: Math.min(MAX_SPEED, dist * 2.2) };
  }
  return null;
}

function moveTail(t, dt) {
  t.phase += dt * (3 + t.momentum / 25);
  let px = t.x - Math.cos(t.angle) * 5;
  let py = t.y - Math.sin(t.angle) * 5;
  for (const seg of t.tail) {
    const dx = seg.x - px;
    const dy = seg.y - py;
    const d = Math.hypot(dx, dy) || 1;
    seg.x = px + (dx / d) * TAIL_SPACING;
    seg.y = py + (dy / d) * TAIL_SPACING;
    px = seg.x;
    py = seg.y;
  }
}

function step(now) {
  const dt = Math.min(0.1, (now - lastStep) / 1000);
  if (dt <= 0) return;
  lastStep = now;

  // me
  const steer = steering();
  if (steer) {
    me.angle = turnToward(me.angle, steer.angle, TURN_RATE * dt);
    if (me.momentum < steer.speed) me.momentum = Math.min(steer.speed, me.momentum + ACCEL * dt);
    else me.momentum += (steer.speed - me.momentum) * (1 - Math.exp(-DRAG * dt));
  } else {
    me.momentum *= Math.exp(-DRAG * dt);
    if (me.momentum < 2) me.momentum = 0;
  }
  me.x += Math.cos(me.angle) * me.momentum * dt;
  me.y += Math.sin(me.angle) * me.momentum * dt;
  moveTail(me, dt);

  // others: dead reckoning from their last update, smoothed
  const k = 1 - Math.exp(-12 * dt);
  for (const [id, t] of others) {
    if (now - t.lastSeen > STALE_AFTER) {
      others.delete(id);
      updatePlayers();
      continue;
    }
    const n = t.net;
    const age = Math.min(EXTRAPOLATE_MAX, (now - n.at) / 1000);
    const tx = n.x + Math.cos(n.angle) * n.momentum * age;
    const ty = n.y + Math.sin(n.angle) * n.momentum * age;
    if (Math.hypot(tx - t.x, ty - t.y) > 400) {
      t.x = tx; // teleported (or we were away): snap
      t.y = ty;
    } else {
      t.x += (tx - t.x) * k;
      t.y += (ty - t.y) * k;
    }
    t.angle += angleDiff(n.angle, t.angle) * k;
    t.momentum += (n.momentum - t.momentum) * k;
    moveTail(t, dt);
  }

  // camera follows me softly
  const ck = 1 - Math.exp(-6 * dt);
  camera.x += (me.x - camera.x) * ck;
  camera.y += (me.y - camera.y) * ck;

  maybeSend(now);
}

// ---- rendering ---------------------------------------------------------------------------------
function colorFor(id, alpha = 1) {
  // numeric ids (the server's session ids) walk the hue circle by the golden angle
  let h = Number(id);
  if (!Number.isFinite(h)) {
    h = 0;
    for (const ch of String(id)) h = (h * 131 + ch.codePointAt(0)) >>> 0;
  }
  return `hsla(${Math.round((h * 137.508 + 170) % 360)}, 80%, 68%, ${alpha})`;
}

function resize() {
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  viewW = window.innerWidth;
  viewH = window.innerHeight;
  canvas.width = Math.round(viewW * dpr);
  canvas.height = Math.round(viewH * dpr);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
}

function hash2(x, y, seed) {
  let h = (x * 374761393 + y * 668265263 + seed * 2147483647) | 0;
  h = Math.imul(h ^ (h >>> 13), 1274126177);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

function drawBackground() {
  const g = ctx.createRadialGradient(viewW / 2, viewH / 2, 0, viewW / 2, viewH / 2, Math.max(viewW, viewH) * 0.75);
  g.addColorStop(0, "#12364d");
  g.addColorStop(1, "#071826");
  ctx.fillStyle = g;
  ctx.fillRect(0, 0, viewW, viewH);
  // floating specks in two layers; the near one is fixed to the world, so you see yourself move
  for (const [parallax, cell, size, alpha, seed] of [
    [0.45, 220, 1.6, 0.18, 7],
    [1, 150, 1.2, 0.35, 3],
  ]) {
    const ox = camera.x * parallax - viewW / 2;
    const oy = camera.y * parallax - viewH / 2;
    const x0 = Math.floor(ox / cell);
    const y0 = Math.floor(oy / cell);
    ctx.fillStyle = `rgba(190, 230, 255, ${alpha})`;
    for (let cx = x0; cx <= x0 + Math.ceil(viewW / cell) + 1; cx++) {
      for (let cy = y0; cy <= y0 + Math.ceil(viewH / cell) + 1; cy++) {
        for (let i = 0; i < 3; i++) {
          const sx = (cx + hash2(cx, cy, seed + i)) * cell - ox;
          const sy = (cy + hash2(cy, cx, seed + i + 11)) * cell - oy;
          ctx.beginPath();
          ctx.arc(sx, sy, size * (0.6 + hash2(cx, cy, i + 29)), 0, Math.PI * 2);
          ctx.fill();
        }
      }
    }
  }
}

function toScreen(x, y) {
  return [x - camera.x + viewW / 2, y - camera.y + viewH / 2];
}

function drawTadpole(t, color, isMe, now) {
  const [hx, hy] = toScreen(t.x, t.y);
  if (hx < -120 || hy < -120 || hx > viewW + 120 || hy > viewH + 120) return false;
  // tail: a tapering wiggle
  const amp = 1.2 + Math.min(t.momentum / MAX_SPEED, 1) * 2.2;
  let prev = [hx, hy];
  ctx.strokeStyle = color;
  ctx.lineCap = "round";
  for (let i = 0; i < t.tail.length; i++) {
    const seg = t.tail[i];
    const [sx, sy] = toScreen(seg.x, seg.y);
    const dx = sx - prev[0];
    const dy = sy - prev[1];
    const d = Math.hypot(dx, dy) || 1;
    const w = Math.sin(t.phase - i * 0.55) * amp * ((i + 1) / t.tail.length);
    const px = sx + (-dy / d) * w;
    const py = sy + (dx / d) * w;
    ctx.lineWidth = Math.max(0.8, 5.5 * (1 - i / t.tail.length));
    ctx.beginPath();
    ctx.moveTo(prev[0], prev[1]);
    ctx.lineTo(px, py);
    ctx.stroke();
    prev = [px, py];
  }
  // head
  ctx.save();
  ctx.shadowColor = color;
  ctx.shadowBlur = isMe ? 16 : 10;
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.arc(hx, hy, isMe ? 7.5 : 6.5, 0, Math.PI * 2);
  ctx.fill();
  ctx.restore();
  // eyes
  ctx.fillStyle = "#06202e";
  for (const side of [-1, 1]) {
    const ex = hx + Math.cos(t.angle) * 3 + Math.cos(t.angle + Math.PI / 2) * 2.6 * side;
    const ey = hy + Math.sin(t.angle) * 3 + Math.sin(t.angle + Math.PI / 2) * 2.6 * side;
    ctx.beginPath();
    ctx.arc(ex, ey, 1.3, 0, Math.PI * 2);
    ctx.fill();
  }
  // name
  ctx.font = "600 12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  ctx.fillStyle = isMe ? "#ffffff" : "rgba(220, 238, 248, 0.85)";
  ctx.fillText(t.name || "…", hx, hy - 14);
  // chat bubble
  if (t.bubble && now < t.bubble.until) {
    const fade = Math.min(1, (t.bubble.until - now) / 600);
    drawBubble(t.bubble.text, hx, hy - 32, fade);
  } else if (t.bubble) {
    t.bubble = null;
  }
  return true;
}

function wrapText(text, maxWidth) {
  const words = text.split(/\s+/);
  const lines = [];
  let line = "";
  for (const w of words) {
    const tryLine = line ? `${line} ${w}` : w;
    if (ctx.measureText(tryLine).width > maxWidth && line) {
      lines.push(line);
      line = w;
    } else {
      line = tryLine;
    }
    if (lines.length === 4) break;
  }
  if (line && lines.length < 4) lines.push(line);
  return lines;
}

function drawBubble(text, x, bottom, alpha) {
  ctx.font = "13px system-ui, sans-serif";
  const lines = wrapText(text, 200);
  const lh = 17;
  const w = Math.min(216, Math.max(...lines.map((l) => ctx.measureText(l).width)) + 16);
  const h = lines.length * lh + 10;
  const left = x - w / 2;
  const top = bottom - h;
  ctx.save();
  ctx.globalAlpha = alpha;
  ctx.fillStyle = "rgba(250, 253, 255, 0.95)";
  ctx.beginPath();
  ctx.roundRect(left, top, w, h, 9);
  ctx.moveTo(x - 6, bottom);
  ctx.lineTo(x, bottom + 7);
  ctx.lineTo(x + 6, bottom);
  ctx.fill();
  ctx.fillStyle = "#10293a";
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  lines.forEach((l, i) => ctx.fillText(l, x, top + 5 + i * lh));
  ctx.restore();
}

function drawOffscreenMarker(t, color) {
  const [sx, sy] = toScreen(t.x, t.y);
  const cx = viewW / 2;
  const cy = viewH / 2;
  const ang = Math.atan2(sy - cy, sx - cx);
  const margin = 18;
  const sc = Math.min(Math.abs((cx - margin) / Math.cos(ang)), Math.abs((cy - margin) / Math.sin(ang)));
  const mx = cx + Math.cos(ang) * sc;
  const my = cy + Math.sin(ang) * sc;
  ctx.save();
  ctx.translate(mx, my);
  ctx.rotate(ang);
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.moveTo(8, 0);
  ctx.lineTo(-6, -6);
  ctx.lineTo(-6, 6);
  ctx.closePath();
  ctx.fill();
  ctx.restore();
}

function render(now) {
  drawBackground();
  for (const [id, t] of others) {
    if (!drawTadpole(t, colorFor(id), false, now)) drawOffscreenMarker(t, colorFor(id, 0.8));
  }
  drawTadpole(me, me.id === null ? "#c9d6df" : colorFor(me.id), true, now);
}

// The loop: simulate and draw on animation frames; a timer keeps the simulation (and the
// network updates) going when frames are throttled (hidden tab).
function frame(now) {
  step(now);
  render(now);
  window.__tadpole.frames++;
  requestAnimationFrame(frame);
}
setInterval(() => {
  const now = performance.now();
  if (now - lastStep > 90) step(now);
}, 100);

// ---- input -------------------------------------------------------------------------------------
const KEYMAP = {
  ArrowLeft: "left",
  ArrowRight: "right",
  ArrowUp: "up",
  ArrowDown: "down",
  KeyA: "left",
  KeyD: "right",
  KeyW: "up",
  KeyS: "down",
};

window.addEventListener("keydown", (ev) => {
  if (document.activeElement === ui.chat || document.activeElement === ui.name) return;
  if (ev.key === "Enter") {
    ev.preventDefault();
    ui.chat.focus();
    return;
  }
  const dir = KEYMAP[ev.code];
  if (dir) {
    keys.add(dir);
    ev.preventDefault();
  }
});
window.addEventListener("keyup", (ev) => {
  const dir = KEYMAP[ev.code];
  if (dir) keys.delete(dir);
});
window.addEventListener("blur", () => {
  keys.clear();
  pointer.down = false;
});

canvas.addEventListener("pointerdown", (ev) => {
  pointer.down = true;
  pointer.x = ev.clientX;
  pointer.y = ev.clientY;
  if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
  canvas.setPointerCapture?.(ev.pointerId);
});
canvas.addEventListener("pointermove", (ev) => {
  pointer.x = ev.clientX;
  pointer.y = ev.clientY;
});
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => (pointer.down = false));
}

ui.chat.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter") {
    ev.preventDefault();
    const text = ui.chat.value.trim();
    if (text && client?.connected) client.notify("World.Message", { message: text });
    ui.chat.value = "";
    ui.chat.blur();
  } else if (ev.key === "Escape") {
    ui.chat.value = "";
    ui.chat.blur();
  }
});

ui.name.addEventListener("change", () => {
  me.name = ui.name.value.trim().slice(0, 24) || me.name;
  ui.name.value = me.name;
  storageSet("nano-tadpole-name", me.name);
});
ui.name.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" || ev.key === "Escape") ui.name.blur();
});

function storageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // private mode: fine
  }
}

window.addEventListener("resize", resize);
resize();
updatePlayers();
requestAnimationFrame(frame);
connect();
