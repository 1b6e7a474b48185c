#!/usr/bin/env bash
# The Ansible tests (ansible/README.md, "Tests"): lint, then the playbooks
# against arm64 Debian roots. Run as root from anywhere: ansible/tests/run.sh
# Needs: ansible, ansible-lint, yamllint (pinned in .ci/run), debootstrap,
# qemu-user-static, zstd; the arm64 release binaries and images/build.sh's
# arm64 tarball in the target directory. The three playbook tests run side
# by side; their logs are printed one after another, in order.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step() { echo; echo "=== ansible: $1"; }

step "yamllint and ansible-lint (production profile)"
(cd "$ANSIBLE_DIR" && yamllint -s . && ansible-lint --profile production --offline -q)

# The three tests side by side: each spends most of its time in
# single-threaded qemu (2-5 s per module call), and each has its own boards
# and work directory (mktemp); the root tarball is made once, before them.
ensure_binfmt
root_tarball >/dev/null
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
declare -A pids
for t in site standalone bench; do
    (
        start=$SECONDS
        rc=0
        bash "$ANSIBLE_DIR/tests/$t.sh" || rc=$?
        echo "($t.sh: $((SECONDS - start)) s, exit $rc)"
        exit "$rc"
    ) >"$logs/$t.log" 2>&1 </dev/null &
    pids[$t]=$!
done
failed=()
for t in site standalone bench; do
    rc=0
    wait "${pids[$t]}" || rc=$?
    step "$t.sh"
    cat "$logs/$t.log"
    [[ $rc -eq 0 ]] || failed+=("$t.sh (exit $rc)")
done
[[ ${#failed[@]} -eq 0 ]] || fail "failed: ${failed[*]}"
