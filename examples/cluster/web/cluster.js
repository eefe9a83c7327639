// The page of the cluster demo: go-nano's cluster chat page, on nano.js, without a CDN.
//
// Connects to the gate that served it (WebSocket, path /nano), logs in with
// `BindService.Login` {nickname}; the master pushes `onMembers` and `onBalance`, the chat node
// `onNewUser` and `onMessage`. Sending notifies `RoomService.SyncMessage` {name, content}.
//
// Query parameters: `?name=ann` sets the nickname, `?ws=ws://host:port/nano` the gate.
import { NanoClient } from "./nano.js";

const $ = (sel) => document.querySelector(sel);
const ui = {
  status: $("#status"),
  balance: $("#balance"),
  messages: $("#messages"),
  form: $("#composer"),
  nickname: $("#nickname"),
  input: $("#input"),
  send: $("#send"),
};

const params = new URLSearchParams(location.search);
const wsUrl = params.get("ws") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/nano`;
const nickname = params.get("name") ?? `guest${Date.now()}`;
ui.nickname.value = nickname;

// For tests and the curious.
const state = { client: null, joined: false, messages: [], balance: 1000 };
window.__cluster = state;

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function show(name, content) {
  const li = document.createElement("li");
  li.className = name === "system" ? "system" : "message";
  if (name !== "system") {
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = name;
    li.append(who);
  }
  li.append(document.createTextNode(content));
  ui.messages.append(li);
  ui.messages.scrollTop = ui.messages.scrollHeight;
  state.messages.push({ name, content });
}

async function start() {
  const client = await NanoClient.connect(wsUrl, { timeout: 10000 });
  state.client = client;
  client.on("onNewUser", (data) => show("system", data.content));
  client.on("onMembers", (data) => show("system", `members: ${data.members}`));
  client.on("onBalance", (data) => {
    state.balance = data.currentBalance;
    ui.balance.textContent = String(data.currentBalance);
  });
  client.on("onMessage", (msg) => show(msg.name, msg.content));
  client.addEventListener("close", () => {
    state.joined = false;
    ui.input.disabled = ui.send.disabled = true;
    setStatus("closed", "disconnected");
  });
  const login = await client.request("BindService.Login", { nickname });
  if (login.code !== 0) {
    throw new Error(`login refused: ${JSON.stringify(login)}`);
  }
  show("system", login.result ?? "logged in");
  state.joined = true;
  ui.input.disabled = ui.send.disabled = false;
  setStatus("joined", `joined as ${nickname}`);
  ui.input.focus();
}

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const content = ui.input.value.trim();
  if (!content || !state.joined) return;
  state.client.notify("RoomService.SyncMessage", { name: nickname, content });
  ui.input.value = "";
});

start().catch((e) => {
  console.error(e);
  setStatus("closed", `error: ${e.message}`);
});
