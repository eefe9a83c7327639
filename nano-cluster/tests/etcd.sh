#!/usr/bin/env bash
# Runs nano-cluster's etcd discovery tests against a real etcd on 127.0.0.1.
#
# Installs what is missing (as root: protobuf-compiler for etcd-client's build, etcd-server),
# starts etcd on free ports with a temporary data dir, waits (bounded) until it is healthy,
# runs `cargo test -p nano-cluster --features etcd --test discovery_etcd` with the client URL
# in NANO_ETCD_ENDPOINT, and stops etcd on exit. Extra arguments go to `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/../.."

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "etcd.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  echo "etcd.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A port nothing listens on (bash's /dev/tcp: the connect fails).
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "etcd.sh: no free port found" >&2
  return 1
}

# {"health":"true"} from /health, read with bash's /dev/tcp (no curl needed).
healthy() {
  local reply
  reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
    timeout 2 cat <&3) 2>/dev/null) || return 1
  [[ "$reply" == *'"health":"true"'* ]]
}

data_dir=$(mktemp -d)
log="$data_dir.log"
etcd_pid=""
cleanup() {
  if [ -n "$etcd_pid" ]; then
    kill "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir" "$log"
}
trap cleanup EXIT

started=""
for attempt in 1 2 3; do
  client_port=$(free_port)
  peer_port=$(free_port)
  [ "$client_port" != "$peer_port" ] || continue
  etcd --name nano-test --data-dir "$data_dir" \
    --listen-client-urls "http://127.0.0.1:$client_port" \
    --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "nano-test=http://127.0.0.1:$peer_port" \
    >"$log" 2>&1 &
  etcd_pid=$!
  # Healthy within 20 s, or give up on this attempt.
  for _ in $(seq 1 100); do
    if ! kill -0 "$etcd_pid" 2>/dev/null; then break; fi
    if healthy "$client_port"; then started=yes; break; fi
    sleep 0.2
  done
  [ -n "$started" ] && break
  echo "etcd.sh: etcd did not become healthy (attempt $attempt); its log:" >&2
  tail -n 20 "$log" >&2 || true
  kill "$etcd_pid" 2>/dev/null || true
  wait "$etcd_pid" 2>/dev/null || true
  etcd_pid=""
  rm -rf "$data_dir" && mkdir -p "$data_dir"
done
if [ -z "$started" ]; then
  echo "etcd.sh: could not start etcd" >&2
  exit 1
fi

export NANO_ETCD_ENDPOINT="http://127.0.0.1:$client_port"
echo "etcd.sh: etcd $(etcd --version | head -n1 | awk '{print $3}') healthy at $NANO_ETCD_ENDPOINT"
cargo test -p nano-cluster --features etcd --test discovery_etcd "$@"
# The cluster node tests with etcd discovery (the facade package, feature etcd).
cargo test --features etcd --test cluster_etcd "$@"
