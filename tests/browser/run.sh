#!/usr/bin/env bash
# JS client and browser tests for the chat and tadpole examples.
#
#   bash tests/browser/run.sh                 # everything
#   bash tests/browser/run.sh codec.test.mjs  # some test files (names in tests/browser)
#
# Installs what it needs on a fresh machine (Debian's chromium through apt, the npm packages
# from package-lock.json), builds the two examples, starts them on free ports, runs the tests
# with node's test runner, and stops the servers. Exits non-zero on any failure, and also when
# a test was skipped or none ran. On a failing browser test, screenshots of its pages land in
# target/browser-screenshots/; the servers' logs are in target/browser-logs/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

log() { echo "== browser tests: $*"; }
die() {
  echo "== browser tests: FAILED: $*" >&2
  exit 1
}

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
LOG_DIR="$TARGET_DIR/browser-logs"
export NANO_SCREENSHOT_DIR="$TARGET_DIR/browser-screenshots"
mkdir -p "$LOG_DIR"
rm -rf "$NANO_SCREENSHOT_DIR"

# --- node 20+ ---------------------------------------------------------------------------------
command -v node >/dev/null || die "node is not installed (node 20 or newer is needed)"
command -v npm >/dev/null || die "npm is not installed"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" -ge 20 ] || die "node $(node --version) is too old: node 20 or newer is needed"
log "node $(node --version), npm $(npm --version)"

# --- chromium ---------------------------------------------------------------------------------
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  log "installing chromium with apt-get"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "$CHROMIUM_PATH is missing and installing it needs root (or sudo)"
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || die "apt-get update failed"
  $SUDO apt-get install -y -qq chromium >"$LOG_DIR/apt-chromium.log" 2>&1 ||
    { tail -20 "$LOG_DIR/apt-chromium.log" >&2; die "apt-get install chromium failed"; }
  [ -x "$CHROMIUM_PATH" ] || die "chromium installed, but $CHROMIUM_PATH is not there"
fi
log "$("$CHROMIUM_PATH" --version 2>/dev/null | head -1)"

# --- npm packages -----------------------------------------------------------------------------
log "npm ci"
(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in tests/browser"

# --- the examples -----------------------------------------------------------------------------
log "cargo build --example chat --example chat_bot --example tadpole --example cluster"
cargo build --example chat --example chat_bot --example tadpole --example cluster || die "building the examples failed"
BIN_DIR="$TARGET_DIR/debug/examples"

SERVER_PIDS=()
cleanup() {
  local pid i
  for pid in "${SERVER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  # SIGTERM is a graceful shutdown, bounded here: a server still running after 15 s is killed.
  for pid in "${SERVER_PIDS[@]}"; do
    for i in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "== browser tests: pid $pid ignored SIGTERM for 15 s: killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME ARGS...: runs $BIN_DIR/NAME, waits for its "open http://.../web/" line and
# sets SERVER_URL to that URL.
start_server() {
  local name="$1"
  shift
  local tag="${LOG_TAG:-$name}"
  local out="$LOG_DIR/$tag.stdout" err="$LOG_DIR/$tag.stderr"
  [ -x "$BIN_DIR/$name" ] || die "$BIN_DIR/$name was not built"
  : >"$out"
  "$BIN_DIR/$name" "$@" >"$out" 2>"$err" &
  local pid=$!
  SERVER_PIDS+=("$pid")
  SERVER_URL=""
  local i
  for i in $(seq 1 300); do
    SERVER_URL="$(sed -n 's#^open \(http://[^ ]*/web/\)$#\1#p' "$out" | head -1)"
    [ -n "$SERVER_URL" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$err" >&2 || true
      die "the $name example exited before printing its URL"
    fi
    sleep 0.1
  done
  if [ -z "$SERVER_URL" ]; then
    tail -20 "$err" >&2 || true
    die "the $name example printed no 'open http://.../web/' line within 30 s"
  fi
  log "$name: $SERVER_URL (pid $pid)"
}

# admin_url TAG: waits for the "admin http://.../debug/nano/node" line (an --admin listener) in
# the stdout log of the server started as TAG and sets ADMIN_URL to that URL.
admin_url() {
  local out="$LOG_DIR/$1.stdout"
  ADMIN_URL=""
  local i
  for i in $(seq 1 100); do
    ADMIN_URL="$(sed -n 's#^admin \(http://[^ ]*/debug/nano/node\)$#\1#p' "$out" | head -1)"
    [ -n "$ADMIN_URL" ] && break
    sleep 0.1
  done
  [ -n "$ADMIN_URL" ] || die "$1 printed no 'admin http://.../debug/nano/node' line"
  log "$1 admin: $ADMIN_URL"
}

# start_node NAME TAG ARGS...: runs $BIN_DIR/NAME (a cluster node), waits for its
# "cluster ADDR" line and sets NODE_ADDR to that address.
start_node() {
  local name="$1" tag="$2"
  shift 2
  local out="$LOG_DIR/$tag.stdout" err="$LOG_DIR/$tag.stderr"
  : >"$out"
  "$BIN_DIR/$name" "$@" >"$out" 2>"$err" &
  local pid=$!
  SERVER_PIDS+=("$pid")
  NODE_ADDR=""
  local i
  for i in $(seq 1 300); do
    NODE_ADDR="$(sed -n 's#^cluster \([^ ]*\)$#\1#p' "$out" | head -1)"
    [ -n "$NODE_ADDR" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$err" >&2 || true
      die "$tag exited before printing its cluster address"
    fi
    sleep 0.1
  done
  [ -n "$NODE_ADDR" ] || die "$tag printed no 'cluster ADDR' line within 30 s"
  log "$tag: cluster $NODE_ADDR (pid $pid)"
}

# A short heartbeat, so that the tests see heartbeats flow both ways; an admin listener for
# admin.browser.test.mjs.
start_server chat --addr 127.0.0.1:0 --tcp 127.0.0.1:0 --heartbeat 2 --admin 127.0.0.1:0
export NANO_CHAT_URL="$SERVER_URL"
CHAT_PID="${SERVER_PIDS[-1]}"
admin_url chat
export NANO_CHAT_ADMIN_URL="$ADMIN_URL"
NANO_CHAT_TCP=""
for _ in $(seq 1 100); do
  # a line "tcp ADDR" (or "tcp clients: ADDR")
  NANO_CHAT_TCP="$(awk '$1 == "tcp" { print $NF; exit }' "$LOG_DIR/chat.stdout")"
  [ -n "$NANO_CHAT_TCP" ] && break
  sleep 0.1
done
export NANO_CHAT_TCP
[ -n "$NANO_CHAT_TCP" ] || die "the chat example printed no 'tcp ADDR' line"
export NANO_CHAT_BOT="$BIN_DIR/chat_bot"
[ -x "$NANO_CHAT_BOT" ] || die "$NANO_CHAT_BOT was not built"
start_server tadpole --addr 127.0.0.1:0 --heartbeat 2
export NANO_TADPOLE_URL="$SERVER_URL"
log "chat tcp: $NANO_CHAT_TCP"
TADPOLE_PID="${SERVER_PIDS[-1]}"
# pomelo's stock client connects to the root path: a second chat server for it.
LOG_TAG=chat-root start_server chat --addr 127.0.0.1:0 --tcp 127.0.0.1:0 --heartbeat 2 --ws-path /
export NANO_CHAT_ROOT_URL="$SERVER_URL"

# The cluster example: a master, a chat node and two gates, each a process (logs without
# colours, for the greps below).
export NO_COLOR=1
start_node cluster cluster-master master --listen 127.0.0.1:0 --node-id master
CLUSTER_MASTER="$NODE_ADDR"
start_node cluster cluster-chat chat --master "$CLUSTER_MASTER" --listen 127.0.0.1:0 --node-id chat-1
CLUSTER_PIDS=("${SERVER_PIDS[-2]}" "${SERVER_PIDS[-1]}")
for n in 1 2; do
  LOG_TAG="cluster-gate$n" start_server cluster gate --master "$CLUSTER_MASTER" --listen 127.0.0.1:0 \
    --gate-address 127.0.0.1:0 --node-id "gate-$n"
  export "NANO_CLUSTER_GATE${n}_URL=$SERVER_URL"
  CLUSTER_PIDS+=("${SERVER_PIDS[-1]}")
  # Clients come once the gate knows the chat node (and its link is up soon after).
  for _ in $(seq 1 300); do
    grep -q 'peer=chat-1' "$LOG_DIR/cluster-gate$n.stderr" && break
    sleep 0.1
  done
  grep -q 'peer=chat-1' "$LOG_DIR/cluster-gate$n.stderr" || die "gate-$n did not discover the chat node"
done

# --- the tests --------------------------------------------------------------------------------
if [ "$#" -gt 0 ]; then
  FILES=("$@")
else
  FILES=(codec.test.mjs client-fake.test.mjs client-chat.test.mjs pomelo-client.test.mjs chat.browser.test.mjs tadpole.browser.test.mjs cluster.browser.test.mjs admin.browser.test.mjs resume.browser.test.mjs stubs.test.mjs)
fi
for f in "${FILES[@]}"; do
  [ -f "$HERE/$f" ] || die "no test file tests/browser/$f"
done

log "node --test --test-timeout=${NODE_TEST_TIMEOUT_MS:-60000} ${FILES[*]}"
REPORT="$LOG_DIR/node-test.tap"
set +e
# Every test is bounded: one that hangs fails after NODE_TEST_TIMEOUT_MS (a test may set a
# longer timeout of its own, e.g. the browser tests).
NODE_TEST_TIMEOUT_MS="${NODE_TEST_TIMEOUT_MS:-60000}"
(cd "$HERE" && node --test --test-concurrency=1 --test-timeout="$NODE_TEST_TIMEOUT_MS" --test-reporter=tap "${FILES[@]}") | tee "$REPORT"
STATUS=${PIPESTATUS[0]}
set -e

FAILED=0
[ "$STATUS" -eq 0 ] || { echo "node --test exited with $STATUS" >&2; FAILED=1; }
TESTS="$(sed -n 's/^# tests \([0-9]*\)$/\1/p' "$REPORT" | tail -1)"
PASSED="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$REPORT" | tail -1)"
SKIPPED="$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$REPORT" | tail -1)"
TODO="$(sed -n 's/^# todo \([0-9]*\)$/\1/p' "$REPORT" | tail -1)"
[ -n "$TESTS" ] && [ "$TESTS" -gt 0 ] || { echo "no test ran" >&2; FAILED=1; }
[ "${SKIPPED:-0}" -eq 0 ] || { echo "$SKIPPED test(s) skipped: skipping is a failure here" >&2; FAILED=1; }
[ "${TODO:-0}" -eq 0 ] || { echo "$TODO test(s) marked todo" >&2; FAILED=1; }
[ "${PASSED:-0}" -eq "${TESTS:-x}" ] 2>/dev/null || FAILED=1

# The servers must have survived everything the tests threw at them.
kill -0 "$CHAT_PID" 2>/dev/null || { echo "the chat example died during the tests" >&2; FAILED=1; }
kill -0 "$TADPOLE_PID" 2>/dev/null || { echo "the tadpole example died during the tests" >&2; FAILED=1; }
for pid in "${CLUSTER_PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { echo "a cluster example node (pid $pid) died during the tests" >&2; FAILED=1; }
done

if [ "$FAILED" -ne 0 ]; then
  for name in chat tadpole cluster-master cluster-chat cluster-gate1 cluster-gate2; do
    echo "--- last lines of the $name example's log ($LOG_DIR/$name.stderr)" >&2
    tail -30 "$LOG_DIR/$name.stderr" >&2 || true
  done
  if [ -d "$NANO_SCREENSHOT_DIR" ]; then
    echo "screenshots: $(ls "$NANO_SCREENSHOT_DIR" | tr '\n' ' ')(in $NANO_SCREENSHOT_DIR)" >&2
  fi
  die "see above"
fi
log "all ${TESTS} passed"
