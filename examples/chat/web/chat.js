// The chat page: go-nano's chat demo on nano.js, written against the chat example's typed
// stubs (api.js / api.d.ts, generated from its route table by `--export-api`).
//
// Routes: request `room.join` → pushes `onMembers` {members} to us and `onNewUser` {content} to
// the others; notify `room.message` {name, content} → push `onMessage` to everyone (us too).
//
// Query parameters: `?name=ann` sets the name, `?ws=ws://host:port/nano` the server.
//
// When the server resumes sessions (sys.resume in its handshake), a dropped connection is
// not the end: nano.js reconnects by itself ("reconnecting…") and the page carries on in the
// same session, with whatever was said meanwhile; if the session was lost instead, the page
// joins the room again. Only a closed client (kicked, or the grace ran out) starts over here.
import { Api } from "./api.js";

const $ = (sel) => document.querySelector(sel);
const ui = {
  status: $("#status"),
  members: $("#members-count"),
  name: $("#name"),
  messages: $("#messages"),
  form: $("#composer"),
  input: $("#input"),
  send: $("#send"),
};

const params = new URLSearchParams(location.search);
const wsUrl = params.get("ws") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/nano`;

// The display name: from ?name=, else the last one used here, else a guest name.
ui.name.value = params.get("name") ?? storageGet("nano-chat-name") ?? `guest-${Math.floor(1000 + Math.random() * 9000)}`;
ui.name.addEventListener("change", () => {
  ui.name.value = ui.name.value.trim() || "guest";
  storageSet("nano-chat-name", ui.name.value);
});

// The stubs over the live connection.
let current = null;
let members = 0;
let retryDelay = 1000;
let everJoined = false;

// For tests and the curious: the live client and state.
const state = { client: null, joined: false, received: [], disconnects: 0, resumes: [] };
window.__chat = state;

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function setMembers(n) {
  members = Math.max(n, 1);
  ui.members.textContent = String(members);
}

function setComposer(enabled) {
  ui.input.disabled = !enabled;
  ui.send.disabled = !enabled;
  if (enabled) ui.input.focus();
}

function atBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 40;
}

function append(li) {
  const stick = atBottom();
  ui.messages.append(li);
  while (ui.messages.children.length > 500) ui.messages.firstElementChild.remove();
  if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
}

function notice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  append(li);
}

function colorFor(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 55% 45%)`;
}

function showMessage(msg) {
  const name = String(msg?.name ?? "?");
  const content = String(msg?.content ?? "");
  const li = document.createElement("li");
  li.className = "message";
  if (name === ui.name.value) li.classList.add("mine");
  const who = document.createElement("span");
  who.className = "name";
  who.textContent = name;
  who.style.color = colorFor(name);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  who.append(time);
  const body = document.createElement("span");
  body.className = "content";
  body.textContent = content;
  li.append(who, body);
  append(li);
}

async function start() {
  setStatus("connecting", "connecting…");
  setComposer(false);
  let api;
  try {
    api = await Api.connect(wsUrl, { timeout: 8000 });
  } catch (err) {
    setStatus("error", "offline");
    retry(`cannot connect: ${err.message}`);
    return;
  }
  const c = api.client;
  current = api;
  state.client = c;
  api.on("onMembers", (m) => {
    const list = Array.isArray(m?.members) ? m.members : [];
    // the list holds the members already there; we are one more
    setMembers(list.length + 1);
    notice(list.length === 0 ? "You are the first one here." : `${list.length} already here.`);
  });
  api.on("onNewUser", (m) => {
    setMembers(members + 1);
    notice(String(m?.content ?? "Someone joined."));
  });
  api.on("onLeave", (m) => {
    setMembers(Math.max(1, members - 1));
    notice(String(m?.content ?? "Someone left."));
  });
  api.on("onMessage", (m) => {
    state.received.push(m);
    showMessage(m);
  });
  c.onkick = (reason) => notice(`Kicked by the server: ${reason}`);
  c.ondisconnect = () => {
    state.disconnects += 1;
    setComposer(false);
    setStatus("reconnecting", "reconnecting…");
  };
  c.onresume = ({ resumed }) => {
    state.resumes.push(resumed);
    if (resumed) {
      setStatus(state.joined ? "joined" : "connecting", state.joined ? "online" : "connecting…");
      setComposer(state.joined);
      return;
    }
    // a new session: the room forgot us
    state.joined = false;
    notice("The session expired while offline: joining again.");
    join(api);
  };
  c.onclose = (info) => {
    state.joined = false;
    state.client = null;
    current = null;
    setComposer(false);
    setStatus("closed", "disconnected");
    if (!info.kicked) retry(`Connection lost (${info.reason}).`);
  };
  await join(api);
}

async function join(api) {
  const c = api.client;
  setStatus("connecting", "joining…");
  try {
    const res = await api.room.join();
    if (res?.code !== 0) throw new Error(`join refused: ${JSON.stringify(res)}`);
  } catch (err) {
    // closed: onclose starts over; session lost (NANO-410 while open): onresume joins again
    if (c.state === "closed" || err.code === "NANO-410") return;
    notice(`Could not join the room: ${err.message}`);
    c.close();
    return;
  }
  if (api !== current || c.state === "closed") return;
  state.joined = true;
  retryDelay = 1000;
  setStatus("joined", "online");
  if (!everJoined) notice(`Welcome, ${ui.name.value}! You can change your name at the top.`);
  everJoined = true;
  setComposer(true);
}

function retry(why) {
  notice(`${why} Retrying in ${Math.round(retryDelay / 1000)} s…`);
  setTimeout(start, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const content = ui.input.value.trim();
  if (!content || !current?.client.connected || !state.joined) return;
  const name = ui.name.value.trim() || "guest";
  if (current.notify.room.message({ name, content })) {
    ui.input.value = "";
  }
  ui.input.focus();
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

start();
