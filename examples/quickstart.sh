#!/usr/bin/env bash
# pimesh quick start: builds pimesh-proxy, pimesh (controller + CLI) and
# pimesh-lab, then runs the demo app (examples/emojivoto: web calls the emoji
# and voting gRPC services, vote-bot drives traffic to web) meshed, with a
# standalone controller handing each proxy its mTLS identity, and shows what
# the controller sees: `pimesh stat deploy` (golden metrics of every service)
# and `pimesh edges deploy` (mTLS on every edge), plus the dashboard's URL.
#
#   ./examples/quickstart.sh     # Ctrl-C stops and removes everything
#
# As root: in the mesh lab — each service a pod (network namespace on a
# bridge) with `pimesh-proxy init` redirecting its TCP into its proxy; every
# edge is mTLS. Without root: on 127.0.0.1 in explicit proxy mode (apps get
# http_proxy; no iptables); it says so.
#
# Interactive: runs until Ctrl-C, printing `pimesh stat` every 10 s. With
# stdin not a terminal (CI) or QUICKSTART_DURATION set: runs that long (20s),
# prints `pimesh stat` and `pimesh edges`, tears down and exits.
# PIMESH_BIN_DIR=DIR uses binaries already built there instead of cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "quickstart: python3 is required" >&2; exit 1; }
python3 -c 'import grpc' 2>/dev/null || {
  echo "quickstart: the demo needs grpcio for $(command -v python3):" >&2
  echo "  Debian, Ubuntu, Raspberry Pi OS: apt-get install python3-grpcio (as root)" >&2
  echo "  elsewhere: python3 -m venv ~/venv && ~/venv/bin/pip install grpcio, with ~/venv/bin first on PATH" >&2
  exit 1
}

if [ -z "${PIMESH_BIN_DIR:-}" ]; then
  command -v cargo >/dev/null || { echo "quickstart: cargo is required (https://rustup.rs)" >&2; exit 1; }
  echo "==> building pimesh-proxy, pimesh and pimesh-lab (release; minutes the first time)"
  cargo build --release -p pimesh-proxy -p pimesh-controller -p pimesh-lab
  PIMESH_BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi

args=(demo --bin-dir "$PIMESH_BIN_DIR" --demo-dir examples/emojivoto)
if [ "$(id -u)" -eq 0 ]; then
  echo "==> root: the demo runs in the mesh lab (pods as network namespaces, iptables redirection, mTLS between pods)"
else
  echo "==> not root: no network namespaces or iptables, so the demo runs on 127.0.0.1"
  echo "    in explicit proxy mode (each app's http_proxy is its proxy; the demo sends"
  echo "    its gRPC to its proxy as HTTP/2). Every edge still crosses the mesh over mTLS."
  echo "    Run as root for the real thing (transparent redirection)."
  args+=(--loopback)
fi
if [ -t 0 ] && [ -z "${QUICKSTART_DURATION:-}" ]; then
  echo "==> running until Ctrl-C"
else
  args+=(--duration "${QUICKSTART_DURATION:-20s}" --interval 0s)
fi
exec "$PIMESH_BIN_DIR/pimesh-lab" "${args[@]}"
