#!/bin/bash
# Syscalls per request of an inbound-hop proxy (client -> proxy -> nginx),
# pimesh-proxy against nginx and haproxy configured as pimesh-bench
# configures its peers: `strace -c -f` attached to the proxy while h2load
# sends N requests at saturation (HTTP/1.1: 16 connections, one request
# in flight each, as the bench's 16 lanes; h2c: 4 connections x 4 streams).
# Like instruction counts, syscall counts do not move with the machine's
# load (strace slows the proxy: batching under HTTP/2 can differ a little
# from an untraced run). With CALLGRIND=1 it also prints the peers'
# instructions per request under callgrind, measured as benches/callgrind.sh
# measures pimesh (one connection, 200 warm-up requests, then 3,000).
#
# usage: benches/syscalls.sh [pimesh=PROXY_BIN] [nginx] [haproxy]
#   PROTOS ("h1 h2"), N (20000), OUT (/tmp/pimesh-syscalls), CALLGRIND (0).
# Needs strace, nginx, h2load (haproxy, valgrind when asked for); uses
# loopback ports 27681-27694. Prints `SYSCALLS KIND PROTO total=` and one
# line per syscall, per request, and the proxy's user and system CPU per
# request over the same load untraced (noisy: only the split is of use).
set -u
N=${N:-20000} OUT=${OUT:-/tmp/pimesh-syscalls}
UP1=127.0.0.1:27681 UP2=127.0.0.1:27682 LP=127.0.0.1:27691
wait_port() { for _ in $(seq 1 300); do (echo >"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0; sleep 0.2; done; return 1; }
proxy() { # KIND PROTO BIN DIR [wrapper...]: starts the proxy, prints its pid
    local kind=$1 proto=$2 bin=$3 w=$4; shift 4
    local up=$UP1; [[ $proto == h2 ]] && up=$UP2
    case $kind in
    pimesh)
        env PIMESH_PROXY_LOG=warn PIMESH_PROXY_INBOUND_LISTEN_ADDR=$LP PIMESH_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:27692 \
            PIMESH_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:27693 PIMESH_PROXY_TAP_LISTEN_ADDR=127.0.0.1:27694 \
            PIMESH_PROXY_INBOUND_TARGET=$up "$@" "$bin" >"$w/proxy.log" 2>&1 &
        ;;
    nginx) # HTTP/1.1 to the upstream (nginx cannot proxy to h2c), as pimesh-bench's peer
        local h2=""; [[ $proto == h2 ]] && h2=" http2"
        mkdir -p "$w/t"
        cat >"$w/p.conf" <<NG
daemon off; master_process off; worker_processes 1; pid $w/p.pid; error_log $w/p.err warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $w/t/b; proxy_temp_path $w/t/p; fastcgi_temp_path $w/t/f;
  uwsgi_temp_path $w/t/u; scgi_temp_path $w/t/s; keepalive_requests 10000000; keepalive_timeout 300s;
  upstream up { server $UP1; keepalive 64; keepalive_requests 10000000; }
  server { listen $LP$h2; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NG
        "$@" nginx -c "$w/p.conf" -p "$w" >"$w/proxy.log" 2>&1 &
        ;;
    haproxy)
        local p=""; [[ $proto == h2 ]] && p=" proto h2"
        printf 'global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 300s\n  timeout server 300s\n  timeout http-keep-alive 300s\n  option http-keep-alive\nfrontend bench\n  bind %s%s\n  default_backend upstream\nbackend upstream\n  http-reuse always\n  server up %s%s\n' \
            "$LP" "$p" "$up" "$p" >"$w/h.cfg"
        "$@" haproxy -db -f "$w/h.cfg" >"$w/proxy.log" 2>&1 &
        ;;
    esac
    echo $!
}
[[ $# -ge 1 ]] || { sed -n 2,17p "$0"; exit 64; }
for spec in "$@"; do
    kind=${spec%%=*} bin=""
    [[ $spec == *=* ]] && bin=${spec#*=}
    for proto in ${PROTOS:-h1 h2}; do
        w=$OUT/$kind-$proto; rm -rf "$w"; mkdir -p "$w"
        cat >"$w/up.conf" <<NG
worker_processes 1; daemon off; pid $w/up.pid; error_log $w/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen $UP1; location / { return 200 "ok"; } }
  server { listen $UP2 http2; location / { return 200 "ok"; } } }
NG
        nginx -c "$w/up.conf" -p "$w" >/dev/null 2>&1 &
        upstream=$!
        wait_port $UP1
        load=(-c 4 -m 4); [[ $proto == h1 ]] && load=(--h1 -c 16)
        one=(-c 1); [[ $proto == h1 ]] && one=(--h1 -c 1)
        p=$(proxy "$kind" "$proto" "$bin" "$w")
        wait_port $LP || echo "$kind $proto: the proxy did not start ($w/proxy.log)" >&2
        h2load "${load[@]}" -n 2000 "http://$LP/" >/dev/null
        strace -c -f -p "$p" -o "$w/strace.txt" 2>/dev/null &
        tracer=$!
        sleep 1
        h2load "${load[@]}" -n "$N" "http://$LP/" | grep -E '^requests:' >"$w/h2load.txt"
        kill -INT $tracer; wait $tracer
        # untraced, the same load: user and system CPU (noisy: a busy machine moves them)
        read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$p/stat")
        h2load "${load[@]}" -n "$N" "http://$LP/" >/dev/null
        read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$p/stat")
        kill "$p"; wait "$p" 2>/dev/null
        tick=$(getconf CLK_TCK)
        # strace -c: % time, seconds, usecs/call, calls, [errors], syscall
        awk -v n="$N" -v k="$kind" -v p="$proto" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v tick="$tick" 'NR > 2 && !/^-/ && $NF != "total" && NF >= 5 {
                tot += $4; order[++k2] = $NF; line[$NF] = sprintf("  %-14s %.3f/req%s", $NF, $4 / n, NF == 6 ? "  (" $5 " errors)" : "") }
            END { printf "SYSCALLS %s %s total=%.3f/req (untraced: user %.1f, system %.1f us/req)\n", k, p, tot / n, du * 1e6 / tick / n, ds * 1e6 / tick / n
                  for (i = 1; i <= k2; i++) if (line[order[i]] !~ / 0\.000\/req/) print line[order[i]] }' "$w/strace.txt"
        grep -q "$N succeeded" "$w/h2load.txt" || echo "  (not every request succeeded: $(cat "$w/h2load.txt"))"
        if [[ ${CALLGRIND:-0} == 1 && $kind != pimesh ]]; then
            p=$(proxy "$kind" "$proto" "$bin" "$w" valgrind --tool=callgrind --callgrind-out-file="$w/cg.%p.out")
            wait_port $LP
            h2load "${one[@]}" -n 200 "http://$LP/" >/dev/null
            callgrind_control -z "$p" >/dev/null 2>&1
            h2load "${one[@]}" -n 3000 "http://$LP/" >/dev/null
            callgrind_control -d "$proto" "$p" >/dev/null 2>&1
            sleep 0.5
            f=$(ls -t "$w"/cg.*.out.* | head -1)
            ir=$(grep -m1 '^summary:\|^totals:' "$f" | awk '{ print $2 }')
            echo "INSTRUCTIONS $kind $proto per_req=$((ir / 3000))"
            kill "$p"; wait "$p" 2>/dev/null
        fi
        kill $upstream; wait $upstream 2>/dev/null
    done
done
