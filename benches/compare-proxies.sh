#!/bin/bash
# Two or more pimesh-proxy binaries compared in one session, alternating
# (A B A B ...), on the figures a noisy machine cannot blur: callgrind's
# instructions per request (benches/callgrind.sh: inbound and mesh, h1 and
# h2) and pimesh-bench's memory (--short, h1: idle RSS plain and meshed,
# RSS with --idle-conns idle keep-alive connections). Then one table, a row
# per run. The decision on mimalloc for the musl builds was made with it
# (benches/README.md, "Allocator of the musl builds").
#
# usage: benches/compare-proxies.sh LABEL=BINARY[,VAR=VALUE...] ...
#   e.g. benches/compare-proxies.sh musl=/tmp/proxy-musl mimalloc=/tmp/proxy-mi,MIMALLOC_PURGE_DELAY=0
#   VAR=VALUE: environment of that binary's runs (mimalloc reads MIMALLOC_*).
#   ROUNDS (2), IDLE (10000), CALLGRIND (1; 0 skips it), OUT (/tmp/pimesh-compare).
#   BENCH: pimesh-bench, CTL: pimesh (default target/release/...; build them
#   with `cargo build --release -p pimesh-benches -p pimesh-controller`).
# pimesh-bench puts each proxy in a cgroup: run as root (or pass --no-cgroup
# in BENCH_ARGS). Takes ~5 min per binary and round on a 2-core machine.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-2} IDLE=${IDLE:-10000} OUT=${OUT:-/tmp/pimesh-compare}
BENCH=${BENCH:-$here/../target/release/pimesh-bench}
CTL=${CTL:-$here/../target/release/pimesh}
[[ $# -ge 1 ]] || { sed -n 2,16p "$0"; exit 64; }
mkdir -p "$OUT"
rows=()
for round in $(seq 1 "$ROUNDS"); do
    for spec in "$@"; do
        label=${spec%%=*} rest=${spec#*=}
        bin=${rest%%,*} envs=()
        [[ $rest == *,* ]] && IFS=, read -ra envs <<<"${rest#*,}"
        run=$OUT/$label-$round
        cg=(— — — —)
        if [[ ${CALLGRIND:-1} == 1 ]]; then
            env "${envs[@]}" CTL="$CTL" OUT="$OUT/callgrind" bash "$here/callgrind.sh" "$bin" "$label-$round" >"$run.callgrind.log" 2>&1
            mapfile -t cg < <(awk '/^RESULT/ { sub(/total_per_req=/, "", $4); print $4 }' "$run.callgrind.log")
        fi
        # shellcheck disable=SC2086 # BENCH_ARGS: words
        env "${envs[@]}" "$BENCH" --short --scenarios inbound,mesh --protocol h1 --rates 100 \
            --idle-conns "$IDLE" --controller-proxies 0 --proxy-bin "$bin" ${BENCH_ARGS:-} \
            --out "$run" >"$run.stdout" 2>"$run.stderr" || echo "$label round $round: pimesh-bench failed (figures may be missing: $run.stderr)" >&2
        md=$run/report.md
        figure() { awk -F'|' -v f="$1" 'index($2, f) { gsub(/ /, "", $3); print $3; exit }' "$md"; }
        idle=$(awk -F'|' '$2 == " pimesh " && /one HTTP\/1.1 request/ { printf "%s (%s open) | %s", $6, $3, $7; exit }' "$md")
        rows+=("| $label | $round | ${cg[0]:-—} | ${cg[1]:-—} | ${cg[2]:-—} | ${cg[3]:-—} | $(figure 'idle RSS, plain') | $(figure 'idle RSS, meshed') | $idle |")
        echo "${rows[-1]}" >&2
    done
done
echo "| binary | round | inbound h1 instr/req | inbound h2 | mesh h1 | mesh h2 | idle plain | idle meshed | RSS with $IDLE idle MiB | bytes each |"
echo "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
