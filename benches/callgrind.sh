#!/bin/bash
# Instructions per request of pimesh-proxy under callgrind (repeatable on a
# noisy machine, unlike CPU time): the inbound hop (h2load -> proxy ->
# nginx) and the mesh path (h2load -> outbound proxy as explicit proxy ->
# mTLS HTTP/2 -> inbound proxy -> nginx; identities from a standalone
# controller), HTTP/1.1 and HTTP/2 (h2c), one connection, 200 warm-up
# requests, counters zeroed, then N requests, counters dumped; prints
# `RESULT LABEL PROTO total_per_req=` (both proxies summed on the mesh).
#
# usage: benches/callgrind.sh PROXY_BIN LABEL   (N=3000 MESH=1 by default)
#   PROXY_BIN: a release build, glibc or static musl (the totals need no
#   symbols; callgrind_annotate does), e.g.
#   CARGO_PROFILE_RELEASE_STRIP=false cargo build --release -p pimesh-proxy
#   The environment is passed on to the proxies (e.g. MIMALLOC_* options).
#   CTL: the `pimesh` binary (a debug one will do), default target/debug/pimesh
# Needs valgrind, nginx, h2load, curl; uses loopback ports 27481-27524.
# Output (callgrind files, logs) in ${OUT:-/tmp/pimesh-callgrind}/LABEL;
# benches/callgrind_crates.py on that directory sums the counts by crate.
# STRACE=1: the same runs without valgrind, counting each proxy's syscalls
# per request with `strace -c -f` instead (`SYSCALLS` lines; N=20000 suits).
set -u
BIN=$1; LABEL=$2; N=${N:-3000}; W=${OUT:-/tmp/pimesh-callgrind}/$LABEL; rm -rf "$W"; mkdir -p "$W"
CTL=${CTL:-$(dirname "$0")/../target/debug/pimesh}
UP1=127.0.0.1:27481; UP2=127.0.0.1:27482
cat > $W/nginx.conf <<NG
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen $UP1; location / { return 200 "ok"; } }
  server { listen $UP2 http2; location / { return 200 "ok"; } } }
NG
nginx -c $W/nginx.conf -p $W >/dev/null 2>&1 & NGINX=$!
sleep 0.5
cg() { # name env... -- starts the proxy under callgrind
  local name=$1; shift
  local vg="valgrind --tool=callgrind --callgrind-out-file=$W/$name.%p.out"
  [ "${STRACE:-0}" = 1 ] && vg=""
  env "$@" PIMESH_PROXY_LOG=warn $vg $BIN > $W/$name.log 2>&1 &
  echo $!
}
wait_closed() { for i in $(seq 1 300); do (echo > /dev/tcp/${1%:*}/${1#*:}) 2>/dev/null || return 0; sleep 0.2; done; }
wait_port() { for i in $(seq 1 300); do (echo > /dev/tcp/${1%:*}/${1#*:}) 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 never opened" >&2; return 1; }
measure() { # pid(s) url proto extra...
  local pids=$1 url=$2 proto=$3; shift 3
  local h1=""; [ $proto = h1 ] && h1=--h1
  h2load $h1 -n 200 -c 1 "$@" $url > /dev/null
  if [ "${STRACE:-0}" = 1 ]; then
    local tracers=""
    for p in $pids; do strace -c -f -p $p -o $W/strace-$proto-$p.txt 2>/dev/null & tracers="$tracers $!"; done
    sleep 1
    h2load $h1 -n $N -c 1 "$@" $url | grep -E "^requests:|status codes"
    kill -INT $tracers; wait $tracers
    for p in $pids; do # strace -c: % time, seconds, usecs/call, calls, [errors], syscall
      awk -v n=$N -v p=$p 'NR > 2 && !/^-/ && $NF != "total" && NF >= 5 { t += $4; if ($4 / n >= 0.0005) l = l sprintf(" %s=%.3f", $NF, $4 / n) }
        END { printf "SYSCALLS pid %s total=%.3f/req:%s\n", p, t / n, l }' $W/strace-$proto-$p.txt
    done
    return
  fi
  for p in $pids; do callgrind_control -z $p >/dev/null; done
  h2load $h1 -n $N -c 1 "$@" $url | grep -E "^requests:|status codes" 
  local tot=0
  for p in $pids; do
    callgrind_control -d $proto $p >/dev/null; sleep 0.5
    f=$(ls -t $W/*.$p.out.* | head -1)
    ir=$(grep -m1 "^summary:\|^totals:" $f | awk '{print $2}')
    echo "  pid $p $proto Ir=$ir per_req=$((ir / N))"; tot=$((tot + ir))
  done
  echo "RESULT $LABEL $proto total_per_req=$((tot / N))"
}
common="PIMESH_PROXY_INBOUND_LISTEN_ADDR PIMESH_PROXY_OUTBOUND_LISTEN_ADDR PIMESH_PROXY_ADMIN_LISTEN_ADDR"
# inbound hop
for proto in h1 h2; do
UP=$UP1; [ $proto = h2 ] && UP=$UP2
P=$(cg inbound-$proto PIMESH_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:27491 PIMESH_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:27492 \
   PIMESH_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:27493 PIMESH_PROXY_TAP_LISTEN_ADDR=127.0.0.1:27494 PIMESH_PROXY_INBOUND_TARGET=$UP)
wait_port 127.0.0.1:27491
echo "== inbound"
measure $P http://127.0.0.1:27491/ $proto
kill -TERM $P; wait_closed 127.0.0.1:27491; sleep 1
done
if [ "${MESH:-1}" = 1 ]; then
# mesh path
$CTL controller --standalone --data-dir $W/ctl --proxy-addr 127.0.0.1:27501 --admin-addr 127.0.0.1:27502 > $W/ctl.log 2>&1 & C=$!
wait_port 127.0.0.1:27502
$CTL identity trust-anchors --controller http://127.0.0.1:27502 > $W/anchors.pem
tok() { $CTL token create --identity $1 --controller http://127.0.0.1:27502 | tr ' ' '\n' | grep '^pmt_' > $W/$2.token; }
tok bench/server server; tok bench/client client
ctl_env() { echo PIMESH_PROXY_CONTROLLER_ADDR=127.0.0.1:27501 PIMESH_PROXY_TRUST_ANCHORS=$W/anchors.pem PIMESH_PROXY_TOKEN_FILE=$W/$1.token PIMESH_PROXY_IDENTITY=bench/$1; }
for proto in h1 h2; do
UP=$UP1; [ $proto = h2 ] && UP=$UP2
S=$(cg server-$proto $(ctl_env server) PIMESH_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:27511 PIMESH_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:27512 \
   PIMESH_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:27513 PIMESH_PROXY_TAP_LISTEN_ADDR=127.0.0.1:27514 PIMESH_PROXY_INBOUND_TARGET=$UP \
   PIMESH_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY=${UP#*:})
K=$(cg client-$proto $(ctl_env client) PIMESH_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:27521 PIMESH_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:27522 \
   PIMESH_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:27523 PIMESH_PROXY_TAP_LISTEN_ADDR=127.0.0.1:27524 \
   PIMESH_PROXY_MESH_DESTINATIONS=$UP=bench/server@127.0.0.1:27511)
wait_port 127.0.0.1:27511; wait_port 127.0.0.1:27522
pk=""; [ $proto = h2 ] && pk=--http2-prior-knowledge
for i in $(seq 1 120); do c=$(curl -s $pk -o /dev/null -w '%{http_code}' -H "host: $UP" http://127.0.0.1:27522/); [ "$c" = 200 ] && break; sleep 0.5; done
echo "== mesh (ready: $c)"
if [ $proto = h1 ]; then
  measure "$K $S" http://127.0.0.1:27522/ h1 -H ":authority: $UP"
else
  measure "$K $S" http://127.0.0.1:27522/ h2 -H ":authority: $UP"
fi
curl -s http://127.0.0.1:27513/metrics | grep '^request_total' | head -3
kill -TERM $K $S; wait_closed 127.0.0.1:27511; wait_closed 127.0.0.1:27522; sleep 1
done
kill $C
fi
kill $NGINX; wait 2>/dev/null
