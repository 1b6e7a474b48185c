#!/usr/bin/env bash
# The Ansible tests (ansible/README.md, "Tests"): lint, then the playbooks
# against arm64 Debian roots. Run as root from anywhere: ansible/tests/run.sh
# Needs: ansible, ansible-lint, yamllint (pinned in .ci/run), debootstrap,
# qemu-user-static, zstd; the arm64 release binaries and images/build.sh's
# arm64 tarball in the target directory.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step() { echo; echo "=== ansible: $1"; }

step "yamllint and ansible-lint (production profile)"
(cd "$ANSIBLE_DIR" && yamllint -s . && ansible-lint --profile production --offline -q)

for t in site standalone bench; do
    step "$t.sh"
    start=$SECONDS
    bash "$ANSIBLE_DIR/tests/$t.sh"
    echo "($t.sh: $((SECONDS - start)) s)"
done
