#!/usr/bin/env bash
# The chat example against the real pypomelo client from PyPI.
#
#   bash tests/python/run.sh
#
# Makes a venv under the target dir (installs Debian's python3-venv when `python3 -m venv` is
# missing, as root), installs the pinned pypomelo, builds and starts the chat example on free
# ports, runs tests/python/test_chat_pypomelo.py against its TCP port, and stops the server.
# Exits non-zero on failure; the test prints a closing "N passed, M failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

PYPOMELO_VERSION="1.0.1"

log() { echo "== python tests: $*"; }
die() {
  echo "== python tests: FAILED: $*" >&2
  exit 1
}

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
LOG_DIR="$TARGET_DIR/python-logs"
VENV="$TARGET_DIR/python-venv"
mkdir -p "$LOG_DIR"

# --- python and a venv ------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is not installed"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  log "installing python3-venv with apt-get"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "python3-venv is missing and installing it needs root (or sudo)"
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || die "apt-get update failed"
  $SUDO apt-get install -y -qq python3-venv >"$LOG_DIR/apt-venv.log" 2>&1 ||
    { tail -20 "$LOG_DIR/apt-venv.log" >&2; die "apt-get install python3-venv failed"; }
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "python3 -m venv $VENV"
  python3 -m venv "$VENV" || die "creating the venv failed"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('pypomelo') != '$PYPOMELO_VERSION')" 2>/dev/null; then
  log "pip install pypomelo==$PYPOMELO_VERSION"
  "$PY" -m pip install -q --disable-pip-version-check "pypomelo==$PYPOMELO_VERSION" ||
    die "pip install pypomelo failed"
fi
log "$("$PY" --version), pypomelo $PYPOMELO_VERSION"

# --- the chat example -------------------------------------------------------------------------
log "cargo build --example chat"
cargo build --example chat || die "building the chat example failed"
BIN="$TARGET_DIR/debug/examples/chat"
[ -x "$BIN" ] || die "$BIN was not built"

SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

OUT="$LOG_DIR/chat.stdout"
ERR="$LOG_DIR/chat.stderr"
: >"$OUT"
"$BIN" --addr 127.0.0.1:0 --tcp 127.0.0.1:0 >"$OUT" 2>"$ERR" &
SERVER_PID=$!
TCP_ADDR=""
for _ in $(seq 1 300); do
  TCP_ADDR="$(awk '$1 == "tcp" { print $NF; exit }' "$OUT")"
  [ -n "$TCP_ADDR" ] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -20 "$ERR" >&2 || true
    die "the chat example exited before printing its TCP address"
  fi
  sleep 0.1
done
if [ -z "$TCP_ADDR" ]; then
  tail -20 "$ERR" >&2 || true
  die "the chat example printed no 'tcp ADDR' line within 30 s"
fi
log "chat example on tcp $TCP_ADDR (pid $SERVER_PID)"

# --- the test ---------------------------------------------------------------------------------
status=0
"$PY" "$HERE/test_chat_pypomelo.py" "$TCP_ADDR" || status=$?
if [ "$status" != 0 ]; then
  log "server log (last lines):"
  tail -20 "$ERR" >&2 || true
  die "test_chat_pypomelo.py exited with $status"
fi
