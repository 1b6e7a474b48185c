#!/usr/bin/env bash
# The board half of CI, run by .ci/run in the background beside the checks
# (fmt, clippy, the tests, the quick starts), which leave one core or both
# idle much of the time (tests waiting on sockets and timers, single-threaded
# links, the 20 s demos):
#
#   bash .ci/boards.sh BOARDS_TARGET_DIR STATUS_DIR
#
# 1. the Ansible tests' arm64 Debian root (ansible/tests/lib.sh
#    root_tarball: debootstrap, then its second stage under qemu), in the
#    background;
# 2. the aarch64 release build, at normal priority: the Ansible tests wait
#    for it;
# 3. the arm64 images and ansible/tests/run.sh, in the background
#    (STATUS_DIR/ansible.log, its exit status in STATUS_DIR/ansible.rc);
# 4. the armv7 and amd64 release builds, at nice 10 behind the Ansible
#    tests' qemu (nice orders processes only inside this session: the
#    kernel's autogroup scheduling gives this session, started with setsid,
#    about the share of the whole foreground session);
# 5. STATUS_DIR/builds.rc (the builds' exit status: .ci/run's later steps
#    wait for it), then waits for the Ansible tests before it exits.
#
# The builds use their own target directory, BOARDS_TARGET_DIR: in the
# checks' target directory cargo's lock would make them wait for every test
# build. Each part's time goes to stdout. Measured (fresh clone, b674f83):
# aarch64 858 s, armv7 846 s, amd64 763 s, the Ansible tests 1,810 s (site
# 1,776, standalone 1,515, bench 754 side by side), all beside the checks;
# the whole run 3,023 s (15 s of it installs). The same machine ran the
# steps one after another the hour before: 2,869 s of checks up to the
# containerd step, with the Ansible tests still running, so about 3,200 s
# in all; the stop before that, 4,328 s on a slower day.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $# -eq 2 ]] || { echo "usage: boards.sh BOARDS_TARGET_DIR STATUS_DIR" >&2; exit 64; }
boards=$1 status=$2
mkdir -p "$boards" "$status"

readonly AARCH64=aarch64-unknown-linux-musl
readonly ARMV7=armv7-unknown-linux-musleabihf
readonly AMD64=x86_64-unknown-linux-musl

# Runs "$@" as the part named $1 (the rest is the command), printing its
# time; returns the command's exit status.
part() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "--- boards: [$name] started"
    "$@" || rc=$?
    echo "--- boards: [$name] $( ((rc == 0)) && echo done || echo "FAILED (exit $rc)") in $((SECONDS - start))s"
    return "$rc"
}

# Ends the builds with exit status $1: .ci/run reads it from builds.rc.
builds_done() {
    echo "$1" >"$status/builds.rc.part" && mv "$status/builds.rc.part" "$status/builds.rc"
}

export CARGO_TARGET_DIR=$boards

# 1. The arm64 root (~7 min here, cached in the target directory's
#    ansible/ once made).
(source ansible/tests/lib.sh && ensure_binfmt && root_tarball) >"$status/root.log" 2>&1 &
root_pid=$!

# 2. aarch64: the proxy alone (built with the controller, cargo unifies the
#    features of the dependencies they share: kube turns on tower's
#    buffer/filter, more of tokio and hyper-util, which made the proxy
#    ~0.45 MB larger). Of the benches only the two that run on a board (each
#    binary is a fat-LTO link of its own).
aarch64() {
    cargo build --release --target "$AARCH64" -p pimesh-controller -p pimesh-benches \
        --bin pimesh --bin pimesh-bench --bin pimesh-telemetry-bench &&
        cargo build --release --target "$AARCH64" -p pimesh-proxy
}
if ! part "aarch64 release build" aarch64; then
    builds_done 1
    kill "$root_pid" 2>/dev/null
    exit 1
fi

# 3. The Ansible tests: the root (waited for here: a background subshell
#    cannot wait for its sibling), then the arm64 images they install.
root_rc=0
wait "$root_pid" || root_rc=$?
ansible_tests() {
    [[ $root_rc -eq 0 ]] || { cat "$status/root.log"; echo "error: the arm64 root failed (exit $root_rc)"; return 1; }
    bash images/build.sh --out "$status/images" arm64 >"$status/images.log" 2>&1 ||
        { cat "$status/images.log"; echo "error: images/build.sh arm64 failed"; return 1; }
    PIMESH_ANSIBLE_IMAGES_DIR="$status/images" bash ansible/tests/run.sh </dev/null
}
(
    rc=0
    part "ansible tests" ansible_tests >"$status/ansible.log" 2>&1 || rc=$?
    echo "$rc" >"$status/ansible.rc"
) &
ansible_pid=$!

# 4. armv7: rustup has no std for it here, so cargo zigbuild builds it
#    (-Zbuild-std, allowed on stable by RUSTC_BOOTSTRAP) and links with
#    zig's musl; zig cc also compiles ring's C. amd64: only what the images
#    carry; musl-gcc compiles ring's C.
armv7() {
    local zigbuild=(nice -n 10 env RUSTC_BOOTSTRAP=1 cargo zigbuild --release --target "$ARMV7" -Zbuild-std=std,panic_abort)
    "${zigbuild[@]}" -p pimesh-controller -p pimesh-benches \
        --bin pimesh --bin pimesh-bench --bin pimesh-telemetry-bench &&
        "${zigbuild[@]}" -p pimesh-proxy
}
amd64() {
    nice -n 10 cargo build --release --target "$AMD64" -p pimesh-controller --bin pimesh &&
        nice -n 10 cargo build --release --target "$AMD64" -p pimesh-proxy
}
rc=0
part "armv7 release build" armv7 && part "amd64 musl build" amd64 || rc=$?
builds_done "$rc"

# 5. The Ansible tests' end (their own log holds their output).
wait "$ansible_pid"
echo "--- boards: ansible tests ended (exit $(cat "$status/ansible.rc" 2>/dev/null || echo unknown))"
exit "$rc"
