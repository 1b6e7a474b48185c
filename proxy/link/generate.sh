#!/usr/bin/env bash
# Regenerates proxy/link/order.ld, the board builds' text order
# (proxy/link/README.md): which functions a proxy runs, from callgrind, in
# three tiers: at rest without identity, at rest with identity (a
# certificate from a standalone controller), and serving pimesh-bench's
# inbound and mesh scenarios (h1 and h2, --short).
#
# Needs: valgrind, musl-tools, python3 (apt-get install valgrind musl-tools
# python3) and the x86_64-unknown-linux-musl target. Takes about 5 minutes.
# Run from anywhere in the repository: bash proxy/link/generate.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
triple=x86_64-unknown-linux-musl
out=$root/proxy/link/order.ld

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pkill -TERM -f "$work/pimesh-proxy" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# 1. An unstripped proxy: which functions run does not depend on where they
#    lie, so the current order.ld does not matter. The controller and the
#    harness as they are.
cargo rustc --release --target "$triple" -p pimesh-proxy --bin pimesh-proxy -- -C strip=none
cargo build --release --target "$triple" -p pimesh-controller --bin pimesh
cargo build --release -p pimesh-benches --bin pimesh-bench
cp "$target_dir/$triple/release/pimesh-proxy" "$work/pimesh-proxy"
controller=$target_dir/$triple/release/pimesh
mkdir -p "$work/cg/rest" "$work/cg/meshed" "$work/cg/bench"

callgrind=(valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no --dump-instr=no)
proxy_env=(PIMESH_PROXY_INBOUND_TARGET=127.0.0.1:9 PIMESH_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:0
    PIMESH_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:0 PIMESH_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:0
    PIMESH_PROXY_TAP_LISTEN_ADDR=127.0.0.1:0 PIMESH_PROXY_LOG=warn,pimesh=info)

# Runs the proxy under callgrind for 8 s at rest (env: extra settings), then
# SIGTERM: it drains and exits, and callgrind writes its profile.
at_rest() {
    local dir=$1 p
    shift
    env "${proxy_env[@]}" "$@" "${callgrind[@]}" --callgrind-out-file="$dir/cg.%p" \
        "$work/pimesh-proxy" >"$dir/log" 2>&1 &
    p=$!
    sleep 8
    kill -TERM "$p"
    wait "$p" || true
    grep -q "listening inbound=" "$dir/log" || { cat "$dir/log"; echo "the proxy did not start" >&2; exit 1; }
}

# 2a. At rest, no identity.
at_rest "$work/cg/rest"

# 2b. At rest with an identity from a standalone controller.
"$controller" controller --standalone --data-dir "$work/ctl" --proxy-addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:0 >"$work/ctl.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "listening proxy=" "$work/ctl.log" && break; sleep 0.2; done
proxy_addr=$(grep -o 'listening proxy=[0-9.:]*' "$work/ctl.log" | cut -d= -f2)
admin=http://$(grep -o ' admin=[0-9.:]*' "$work/ctl.log" | cut -d= -f2)
"$controller" identity trust-anchors --controller "$admin" >"$work/anchors.pem"
"$controller" token create --identity default/web --controller "$admin" |
    grep -o 'pmt_[^ ]*' | tr -d '\n' >"$work/token"
at_rest "$work/cg/meshed" PIMESH_PROXY_CONTROLLER_ADDR="$proxy_addr" \
    PIMESH_PROXY_TRUST_ANCHORS="$work/anchors.pem" PIMESH_PROXY_TOKEN_FILE="$work/token" \
    PIMESH_PROXY_IDENTITY=default/web
grep -q "certificate issued" "$work/cg/meshed/log" || { cat "$work/cg/meshed/log"; echo "no certificate" >&2; exit 1; }

# 2c. Serving: the harness kills its proxies with SIGKILL, so the wrapper
#     leaves valgrind running in the background; SIGTERM after the run.
cat >"$work/wrap.sh" <<EOF
#!/bin/sh
${callgrind[*]} --callgrind-out-file=$work/cg/bench/cg.%p $work/pimesh-proxy "\$@" &
wait \$!
EOF
chmod +x "$work/wrap.sh"
"$target_dir/release/pimesh-bench" --short --no-cgroup --emulated --scenarios inbound,mesh \
    --idle-conns 0 --idle-h2-conns 0 --controller-proxies 0 --proxy-bin "$work/wrap.sh" \
    --controller-bin "$controller" --out "$work/bench" >"$work/bench.log" 2>&1 ||
    { cat "$work/bench.log"; echo "pimesh-bench failed" >&2; exit 1; }
pkill -TERM -f "$work/pimesh-proxy" || true
for _ in $(seq 100); do pgrep -f "$work/pimesh-proxy" >/dev/null || break; sleep 0.2; done

# 3. The script.
python3 - "$work/cg" "$(git rev-parse --short HEAD)" >"$out" <<'EOF'
import glob, re, sys

cg, commit = sys.argv[1], sys.argv[2]

def executed(tier):
    """Function names in callgrind's profiles of a tier, in first-seen order."""
    names, seen = [], set()
    for f in sorted(glob.glob(f"{cg}/{tier}/cg.*")):
        for line in open(f, errors="replace"):
            m = re.match(r"c?fn=(?:\(\d+\))?\s*(\S+)$", line.rstrip("\n"))
            if not m:
                continue
            name = re.sub(r"'\d+$", "", m.group(1))  # callgrind's recursion suffix
            if name.startswith("0x") or name in seen:
                continue
            seen.add(name)
            names.append(name)
    return names

def pattern(name):
    """The section pattern of a function on every target: the hashes of
    legacy (17h...E) and v0 (Cs..._) symbols differ between targets."""
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", name)
    return re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)

print(f"/* Generated by proxy/link/generate.sh at {commit}: do not edit; see proxy/link/README.md. */")
print("SECTIONS\n{\n  .text.pimesh_ordered :\n  {")
# C code without a section per function: mimalloc and musl run at start-up.
print("    *libmimalloc_sys*.rlib:*(.text .text.*)")
print("    *libc.a:*(.text .text.*)")
seen = set()
for tier in ("rest", "meshed", "bench"):
    for name in executed(tier):
        p = pattern(name)
        if p in seen:
            continue
        seen.add(p)
        print(f"    *(.text.{p} .text.unlikely.{p})")
    if tier == "meshed":
        # ring's assembly (TLS and certificates) runs from the identity on.
        print("    *libring*.rlib:*(.text .text.*)")
print("  }\n}\nINSERT BEFORE .text;")
EOF
echo "wrote $out ($(grep -c '^    \*' "$out") patterns)"
