#!/usr/bin/env bash
# standalone.yml and reset.yml against two arm64 Debian roots (lib.sh): a Pi 4
# (cmdline in /boot/firmware) running the controller and a proxy, a Pi 3
# (/boot/cmdline.txt) running two proxies. Run as root:
# ansible/tests/standalone.sh
#
# No systemd runs in the roots, so the test does what systemd would on the
# boards: once the role has enabled pimesh-controller.service it runs the
# unit's ExecStart in board1's root as the unit's User (the role waits for
# its /ready, as it waits for systemd's start on a board), and later one
# proxy from board2's root with the environment file the role wrote. The
# roots share this machine's network namespace, so 127.0.0.1 reaches across
# them; every port is a free random high port, never pimesh's defaults.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_binfmt
bin=$TARGET_DIR/aarch64-unknown-linux-musl/release
[[ -x $bin/pimesh ]] ||
    fail "$bin/pimesh missing: cargo build --release --target aarch64-unknown-linux-musl -p pimesh-controller --bin pimesh"
[[ -x $bin/pimesh-proxy ]] ||
    fail "$bin/pimesh-proxy missing: cargo build --release --target aarch64-unknown-linux-musl -p pimesh-proxy"
version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_DIR/Cargo.toml")
reset_playbook=${PIMESH_TEST_RESET_PLAYBOOK:-reset.yml}

work=$(mktemp -d "$TARGET_DIR/ansible/standalone-test.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
make_board "$work/board1" "Raspberry Pi 4 Model B Rev 1.5" /boot/firmware/cmdline.txt
make_board "$work/board2" "Raspberry Pi 3 Model B Plus Rev 1.3" /boot/cmdline.txt
for b in board1 board2; do
    snapshot "$work/$b" >"$work/$b.before"
    for f in passwd group shadow gshadow; do
        cp "$work/$b/etc/$f" "$work/$b.$f"
    done
done

# 12 consecutive free ports from a random base: the controller's two, then
# the first proxy's inbound/outbound/admin/tap; a host's second proxy gets
# them plus the stride (4).
while :; do
    base=$((20000 + RANDOM % 40000))
    used=$(ss -Htan "( sport >= :$base and sport < :$((base + 12)) )" | wc -l)
    [[ $used -eq 0 ]] && break
done
ctl_proxy=$base ctl_admin=$((base + 1))
p_in=$((base + 2)) p_out=$((base + 3)) p_admin=$((base + 4)) p_tap=$((base + 5)) stride=4
ctl_url=http://127.0.0.1:$ctl_admin

cat >"$work/inventory.yml" <<INV
---
pimesh_controller:
  hosts:
    board1:
pimesh_nodes:
  hosts:
    board1:
      pimesh_standalone_services:
        - { name: web, namespace: shop, port: 18080 }
    board2:
      pimesh_standalone_services:
        - { name: api, identity: shop/api, port: 19000 }
        - { name: db, namespace: shop, port: 15432, env: { PIMESH_PROXY_OPAQUE_PORTS: "15432" } }
all:
  hosts:
    board1:
      ansible_host: $work/board1
    board2:
      ansible_host: $work/board2
  vars:
    ansible_connection: community.general.chroot
    # One chroot call per module instead of a temporary file's several (each
    # /bin/sh runs under qemu).
    ansible_pipelining: true
    pimesh_standalone_bin_dir: $bin
    pimesh_standalone_controller_host: 127.0.0.1
    pimesh_standalone_controller_proxy_addr: 127.0.0.1:$ctl_proxy
    pimesh_standalone_controller_admin_addr: 127.0.0.1:$ctl_admin
    pimesh_standalone_proxy_inbound_ip: 127.0.0.1
    pimesh_standalone_proxy_admin_ip: 127.0.0.1
    pimesh_standalone_proxy_tap_ip: 127.0.0.1
    pimesh_standalone_proxy_inbound_port: $p_in
    pimesh_standalone_proxy_outbound_port: $p_out
    pimesh_standalone_proxy_admin_port: $p_admin
    pimesh_standalone_proxy_tap_port: $p_tap
    pimesh_standalone_proxy_port_stride: $stride
INV
inv=(-i "$work/inventory.yml")

# uid_of ROOT USER: the user's uid:gid in the root's /etc/passwd.
uid_of() {
    awk -F: -v u="$2" '$1 == u { print $3 ":" $4 }' "$work/$1/etc/passwd"
}

# unit_value ROOT UNIT KEY: the value of KEY= in the unit file.
unit_value() {
    sed -n "s/^$3=//p" "$work/$1/etc/systemd/system/$2"
}

# systemd's part: once pimesh-controller.service is enabled in board1, start
# its ExecStart there as its User, with an empty environment.
start_controller_when_enabled() {
    local link=$work/board1/etc/systemd/system/multi-user.target.wants/pimesh-controller.service
    local i
    for ((i = 0; i < 600; i++)); do
        [[ -L $link ]] && break
        sleep 0.5
    done
    [[ -L $link ]] || { echo "pimesh-controller.service was never enabled" >&2; return 1; }
    local user exec
    user=$(uid_of board1 "$(unit_value board1 pimesh-controller.service User)")
    exec=$(unit_value board1 pimesh-controller.service ExecStart)
    # shellcheck disable=SC2086 # ExecStart is split into words, as systemd does
    exec chroot --userspec="$user" "$work/board1" /usr/bin/env -i $exec >"$work/controller.log" 2>&1
}

echo "== bad input: a service without a port, a missing binary"
cat >"$work/bad.yml" <<INV
---
pimesh_controller: { hosts: { board1: } }
pimesh_nodes: { hosts: { board1: { pimesh_standalone_services: [{ name: web }] } } }
all: { hosts: { board1: { ansible_host: $work/board1, ansible_connection: community.general.chroot } } }
INV
if run_playbook "$work/bad-port.log" standalone.yml -i "$work/bad.yml" >/dev/null 2>&1; then
    fail "standalone.yml passed with a service without a port"
fi
grep -q 'needs name .* and port (the app' "$work/bad-port.log" ||
    { tail -n 30 "$work/bad-port.log"; fail "the failure does not say the port is missing"; }
if run_playbook "$work/bad-bin.log" standalone.yml "${inv[@]}" -e "pimesh_standalone_bin_dir=$work/nowhere" \
    >/dev/null 2>&1; then
    fail "standalone.yml passed without the binaries"
fi
grep -q "$work/nowhere/pimesh is missing on the control host .*cargo build --release --target aarch64-unknown-linux-musl -p pimesh-controller --bin pimesh" \
    "$work/bad-bin.log" || { tail -n 30 "$work/bad-bin.log"; fail "the failure does not name the file and the build"; }

echo "== standalone.yml: the first run changes what it must"
start_controller_when_enabled &
pids+=($!)
SECONDS=0
run_playbook "$work/run1.log" standalone.yml "${inv[@]}"
echo "(first run: ${SECONDS}s)"
assert_changed "$work/run1.log" board1 '[1-9][0-9]*'
assert_changed "$work/run1.log" board2 '[1-9][0-9]*'
kill -0 "${pids[0]}" || { cat "$work/controller.log"; fail "the controller started from board1 exited"; }

echo "== standalone.yml again: nothing to change, no new token"
SECONDS=0
run_playbook "$work/run2.log" standalone.yml "${inv[@]}"
echo "(second run: ${SECONDS}s)"
assert_changed "$work/run2.log" board1 0
assert_changed "$work/run2.log" board2 0
tokens=$(chroot "$work/board1" /usr/local/bin/pimesh token ls -o json --controller "$ctl_url")
n=$(grep -o '"identity"' <<<"$tokens" | wc -l)
[[ $n -eq 3 ]] || { echo "$tokens"; fail "the controller holds $n tokens, expected 3 (one per service)"; }

echo "== the files are where systemd and the proxies expect them"
# file_is ROOT PATH MODE OWNER: a file (or with OWNER's trailing /, a
# directory) with that mode and owner (a user of the root's /etc/passwd).
file_is() {
    local want
    want="$3 $(uid_of "$1" "${4%/}")"
    if [[ $4 == */ ]]; then
        [[ -d $work/$1$2 ]] || fail "$1: directory $2 missing"
    else
        [[ -f $work/$1$2 ]] || fail "$1: $2 missing"
    fi
    [[ $(stat -c '%a %u:%g' "$work/$1$2") == "$want" ]] ||
        fail "$1: $2 is $(stat -c '%a %u:%g' "$work/$1$2"), expected $want ($4)"
}
# enabled ROOT INSTANCE UNIT_FILE: systemctl enable's link.
enabled() {
    local link=$work/$1/etc/systemd/system/multi-user.target.wants/$2
    [[ $(readlink "$link") == "/etc/systemd/system/$3" ]] || fail "$1: $2 is not enabled ($link)"
}
# env_has ROOT SERVICE LINE: the proxy's environment file has that line.
env_has() {
    grep -qxF "$3" "$work/$1/etc/pimesh/proxy-$2.env" || fail "$1: proxy-$2.env lacks $3"
}
file_is board1 /usr/local/bin/pimesh 755 root
cmp -s "$bin/pimesh" "$work/board1/usr/local/bin/pimesh" || fail "board1: pimesh is not the release binary"
file_is board1 /etc/systemd/system/pimesh-controller.service 644 root
enabled board1 pimesh-controller.service pimesh-controller.service
file_is board1 /var/lib/pimesh 700 pimesh/
grep -qx "ExecStart=/usr/local/bin/pimesh controller --standalone --data-dir /var/lib/pimesh --proxy-addr 127.0.0.1:$ctl_proxy --admin-addr 127.0.0.1:$ctl_admin .*" \
    "$work/board1/etc/systemd/system/pimesh-controller.service" || fail "board1: unexpected controller ExecStart"
[[ ! -e $work/board2/usr/local/bin/pimesh && ! -e $work/board2/etc/systemd/system/pimesh-controller.service ]] ||
    fail "board2 (no controller) got the controller"
for b in board1 board2; do
    file_is $b /usr/local/bin/pimesh-proxy 755 root
    file_is $b /etc/systemd/system/pimesh-proxy@.service 644 root
    file_is $b /etc/pimesh/trust-anchors.pem 644 root
    grep -q -- '-----BEGIN CERTIFICATE-----' "$work/$b/etc/pimesh/trust-anchors.pem" || fail "$b: no trust anchors"
done
chroot "$work/board1" /usr/local/bin/pimesh identity trust-anchors --controller "$ctl_url" |
    cmp -s - "$work/board2/etc/pimesh/trust-anchors.pem" || fail "board2's trust anchors are not the controller's"
for bs in board1/web/shop/0 board2/api/shop/0 board2/db/shop/1; do
    IFS=/ read -r b s ns i <<<"$bs"
    enabled $b "pimesh-proxy@$s.service" pimesh-proxy@.service
    file_is $b "/etc/pimesh/proxy-$s.env" 644 root
    file_is $b "/etc/pimesh/proxy-$s.token" 600 pimesh-proxy
    grep -qE '^pmt_[0-9a-f]{16}\.[0-9a-f]{64}$' "$work/$b/etc/pimesh/proxy-$s.token" || fail "$b: proxy-$s.token is not a join token"
    env_has $b $s "PIMESH_PROXY_CONTROLLER_ADDR=127.0.0.1:$ctl_proxy"
    env_has $b $s "PIMESH_PROXY_TRUST_ANCHORS=/etc/pimesh/trust-anchors.pem"
    env_has $b $s "PIMESH_PROXY_TOKEN_FILE=/etc/pimesh/proxy-$s.token"
    env_has $b $s "PIMESH_PROXY_IDENTITY=$ns/$s"
    env_has $b $s "PIMESH_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:$((p_admin + i * stride))"
    env_has $b $s "PIMESH_PROXY_TAP_LISTEN_ADDR=127.0.0.1:$((p_tap + i * stride))"
done
env_has board1 web "PIMESH_PROXY_SERVICE=web:18080"
env_has board1 web "PIMESH_PROXY_INBOUND_TARGET=127.0.0.1:18080"
env_has board2 db "PIMESH_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:$((p_in + stride))"
env_has board2 db "PIMESH_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:$((p_out + stride))"
env_has board2 db "PIMESH_PROXY_OPAQUE_PORTS=15432"
[[ ! -e $work/board2/etc/pimesh/proxy-web.env ]] || fail "board2 got board1's service"
# systemd-analyze verify loads the units as systemd would (directives,
# User=, EnvironmentFile= of an instance); it leaves a mark in /run.
for b in board1 board2; do
    mark=$work/$b/run/systemd/systemd-units-load
    [[ ! -e $mark ]] || fail "$b: $mark exists before systemd-analyze ran"
    for u in pimesh-controller.service pimesh-proxy@web.service pimesh-proxy@api.service pimesh-proxy@db.service; do
        [[ -e $work/$b/etc/systemd/system/multi-user.target.wants/$u ]] || continue
        out=$(chroot "$work/$b" systemd-analyze verify --man=no "$u" 2>&1) ||
            { echo "$out"; fail "$b: systemd-analyze verify $u failed"; }
        [[ -z $out ]] || { echo "$out"; fail "$b: systemd-analyze verify $u complains"; }
    done
    rm -f "$mark"
done

echo "== the binaries the role installed run in the roots (qemu)"
got=$(chroot "$work/board1" /usr/local/bin/pimesh --version)
[[ $got == "pimesh $version" ]] || fail "pimesh --version in board1 printed '$got'"
echo "$got"
got=$(chroot "$work/board2" /usr/local/bin/pimesh-proxy --version)
[[ $got == "pimesh-proxy $version" ]] || fail "pimesh-proxy --version in board2 printed '$got'"
echo "$got"

echo "== a service taken out of the inventory: its proxy's unit link, env file and token go"
grep -v 'name: db,' "$work/inventory.yml" >"$work/inventory-no-db.yml"
SECONDS=0
run_playbook "$work/run3.log" standalone.yml -i "$work/inventory-no-db.yml"
echo "(third run: ${SECONDS}s)"
assert_changed "$work/run3.log" board1 0
assert_changed "$work/run3.log" board2 '[1-9][0-9]*'
for f in etc/systemd/system/multi-user.target.wants/pimesh-proxy@db.service etc/pimesh/proxy-db.env etc/pimesh/proxy-db.token; do
    [[ ! -e $work/board2/$f && ! -L $work/board2/$f ]] || fail "board2: /$f is still there"
done
enabled board2 pimesh-proxy@api.service pimesh-proxy@.service
file_is board2 /etc/pimesh/proxy-api.token 600 pimesh-proxy

echo "== in standalone mode the proxy started from board2 answers /ready with a certificate"
proxy_admin=127.0.0.1:$p_admin
mapfile -t proxy_env < <(grep -v '^#' "$work/board2/etc/pimesh/proxy-api.env")
chroot --userspec="$(uid_of board2 pimesh-proxy)" "$work/board2" /usr/bin/env -i "${proxy_env[@]}" \
    /usr/local/bin/pimesh-proxy >"$work/proxy.log" 2>&1 &
pids+=($!)
ready=
for ((i = 0; i < 60; i++)); do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$proxy_admin/ready") == 200 ]]; then
        ready=1
        break
    fi
    sleep 0.5
done
[[ -n $ready ]] || { cat "$work/proxy.log"; fail "the proxy's /ready did not answer 200 within 30 s"; }
expiry=$(curl -s "http://$proxy_admin/metrics" | awk '/^identity_cert_expiration_timestamp_seconds[ {]/ { print int($NF) }')
[[ -n $expiry && $expiry -gt $(date +%s) ]] ||
    fail "the proxy holds no valid certificate (identity_cert_expiration_timestamp_seconds='$expiry')"
echo "ready; certificate valid until $(date -u -d "@$expiry" +%FT%TZ)"
# The proxy registers its service once it has its certificate.
registered=
for ((i = 0; i < 40; i++)); do
    endpoints=$(curl -s "$ctl_url/v1/endpoints")
    if grep -q '"api"' <<<"$endpoints" && grep -q '"shop"' <<<"$endpoints"; then
        registered=1
        break
    fi
    sleep 0.5
done
[[ -n $registered ]] ||
    { echo "$endpoints"; cat "$work/proxy.log"; fail "the controller has no endpoint of shop/api registered by the proxy within 20 s"; }
echo "the controller lists the proxy's endpoint of shop/api"
for pid in "${pids[@]}"; do
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
pids=()

echo "== $reset_playbook: the roots are as debootstrap made them"
# same_as_before ROOT: the root's snapshot equals the one from before the
# plays, but for the backups that useradd and userdel keep of the user
# databases (/etc/passwd- ...): the databases themselves must be as before.
same_as_before() {
    local f
    for f in passwd group shadow gshadow; do
        cmp "$work/$1.$f" "$work/$1/etc/$f" || fail "$1: /etc/$f differs from before the plays"
    done
    snapshot "$work/$1" | grep -Ev ' \./etc/(passwd|group|shadow|gshadow)-$' >"$work/$1.after"
    grep -Ev ' \./etc/(passwd|group|shadow|gshadow)-$' "$work/$1.before" |
        diff -u - "$work/$1.after" || fail "$1 differs from how debootstrap made it (above)"
}
SECONDS=0
run_playbook "$work/reset1.log" "$reset_playbook" "${inv[@]}"
echo "(reset: ${SECONDS}s)"
same_as_before board1
same_as_before board2
echo "standalone.sh passed"
