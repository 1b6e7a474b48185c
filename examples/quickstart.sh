#!/usr/bin/env bash
# pimesh quick start: builds pimesh-proxy, puts it in front of a small demo
# app on this machine (no iptables, no root needed), sends traffic through
# both of its sides, and shows the Linkerd-compatible golden metrics.
#
#   ./examples/quickstart.sh            # Ctrl-C (or the end) stops everything
#
# Ports: app 127.0.0.1:8080; proxy inbound 4143, outbound 4140, admin 4191
# (override with APP_PORT, PIMESH_PROXY_*_LISTEN_ADDR).
set -euo pipefail
cd "$(dirname "$0")/.."

APP_PORT=${APP_PORT:-8080}
export PIMESH_PROXY_INBOUND_LISTEN_ADDR=${PIMESH_PROXY_INBOUND_LISTEN_ADDR:-127.0.0.1:4143}
export PIMESH_PROXY_OUTBOUND_LISTEN_ADDR=${PIMESH_PROXY_OUTBOUND_LISTEN_ADDR:-127.0.0.1:4140}
export PIMESH_PROXY_ADMIN_LISTEN_ADDR=${PIMESH_PROXY_ADMIN_LISTEN_ADDR:-127.0.0.1:4191}
export PIMESH_PROXY_INBOUND_TARGET=127.0.0.1:$APP_PORT
export PIMESH_PROXY_WORKLOAD_LABELS=${PIMESH_PROXY_WORKLOAD_LABELS:-namespace=demo,deployment=web,pod=web-0}

for tool in cargo curl python3; do
  command -v "$tool" >/dev/null || { echo "quickstart: $tool is required" >&2; exit 1; }
done

echo "==> building pimesh-proxy (release)"
cargo build --release -q -p pimesh-proxy
PROXY=target/release/pimesh-proxy

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "==> demo app (python3 http.server) on 127.0.0.1:$APP_PORT"
mkdir -p "$work/www" && echo "hello from the demo app" > "$work/www/index.html"
python3 -m http.server "$APP_PORT" --bind 127.0.0.1 --directory "$work/www" >"$work/app.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$APP_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$APP_PORT/" >/dev/null || { echo "quickstart: the demo app did not start (port $APP_PORT busy?)" >&2; cat "$work/app.log" >&2; exit 1; }

echo "==> pimesh-proxy (log: $work/proxy.log)"
"$PROXY" 2>"$work/proxy.log" &
pids+=($!)
admin=http://$PIMESH_PROXY_ADMIN_LISTEN_ADDR
for _ in $(seq 50); do curl -sf "$admin/ready" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$admin/ready" >/dev/null || { cat "$work/proxy.log"; exit 1; }

echo "==> 20 requests through the inbound side (as a meshed pod receives them)"
for _ in $(seq 20); do curl -sf "http://$PIMESH_PROXY_INBOUND_LISTEN_ADDR/" >/dev/null; done
echo "==> 10 requests through the outbound side, as an app with HTTP_PROXY set"
for _ in $(seq 10); do http_proxy=http://$PIMESH_PROXY_OUTBOUND_LISTEN_ADDR curl -sf "http://127.0.0.1:$APP_PORT/" >/dev/null; done
echo "==> one request to a port where nothing listens (a 502, counted as a failure)"
http_proxy=http://$PIMESH_PROXY_OUTBOUND_LISTEN_ADDR curl -s -o /dev/null -w "    status %{http_code}\n" http://127.0.0.1:1/ || true

echo "==> golden metrics from $admin/metrics"
curl -s "$admin/metrics" | grep -E '^(request_total|response_total|tcp_open_connections)' | sed 's/^/    /'
if [ -t 0 ]; then
  echo
  echo "The proxy is still running: try  curl -s $admin/metrics  or"
  echo "  http_proxy=http://$PIMESH_PROXY_OUTBOUND_LISTEN_ADDR curl http://127.0.0.1:$APP_PORT/"
  echo "Press Ctrl-C to stop."
  wait
fi
