#!/usr/bin/env bash
# site.yml and reset.yml against two arm64 Debian roots (lib.sh): a Pi 4
# server (cmdline in /boot/firmware) and a Pi 3 agent (/boot/cmdline.txt).
# Run as root: ansible/tests/site.sh
#
# Stand-ins (fixtures, named so): no k3s release can be fetched here, so
# airgap_dir holds a shell script as `k3s-arm64` and an empty zstd tarball
# as `k3s-airgap-images-arm64.tar.zst`; the test checks what the roles did
# with them. pimesh's image tarballs are the real ones (images/build.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_binfmt
# images/build.sh's output (PIMESH_ANSIBLE_IMAGES_DIR: another --out).
images=${PIMESH_ANSIBLE_IMAGES_DIR:-$TARGET_DIR/images}
[[ -s $images/pimesh-airgap-images-arm64.tar.zst ]] ||
    fail "$images/pimesh-airgap-images-arm64.tar.zst missing: run images/build.sh arm64 first"
bin=$TARGET_DIR/aarch64-unknown-linux-musl/release
[[ -x $bin/pimesh ]] || fail "$bin/pimesh missing: cargo build --release --target aarch64-unknown-linux-musl -p pimesh-controller --bin pimesh"
version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_DIR/Cargo.toml")

work=$(mktemp -d "$TARGET_DIR/ansible/site-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
make_board "$work/pi4" "Raspberry Pi 4 Model B Rev 1.5" /boot/firmware/cmdline.txt
make_board "$work/pi3" "Raspberry Pi 3 Model B Plus Rev 1.3" /boot/cmdline.txt
snapshot "$work/pi4" >"$work/pi4.before"
snapshot "$work/pi3" >"$work/pi3.before"

# The stand-ins for k3s's release files.
mkdir -p "$work/airgap" "$work/airgap-empty"
printf '#!/bin/sh\necho "k3s stand-in (pimesh Ansible test fixture), not k3s"\n' >"$work/airgap/k3s-arm64"
chmod 0755 "$work/airgap/k3s-arm64"
tar -cf - --files-from /dev/null | zstd -q >"$work/airgap/k3s-airgap-images-arm64.tar.zst"

cat >"$work/inventory.yml" <<INV
---
k3s_cluster:
  children:
    server:
      hosts:
        pi4:
          ansible_host: $work/pi4
    agent:
      hosts:
        pi3:
          ansible_host: $work/pi3
  vars:
    ansible_connection: community.general.chroot
    k3s_server_token: pimesh-ansible-test-token
    k3s_server_address: 192.0.2.10
    airgap_dir: $work/airgap
    airgap_pimesh_images_dir: $images
    pimesh_bin_dir: $bin
INV
inv=(-i "$work/inventory.yml")
# The bad-input run's extra variables: pi4's air-gap directory is empty.
cat >"$work/bad-vars.yml" <<VARS
airgap_dir: "{{ '$work/airgap-empty' if inventory_hostname == 'pi4' else '$work/airgap' }}"
VARS

# Compares a root with its snapshot from before the plays.
same_as_before() {
    snapshot "$work/$1" >"$work/$1.after"
    diff -u "$work/$1.before" "$work/$1.after" || fail "$1 differs from how debootstrap made it (above)"
}

echo "== bad input: a missing air-gap file (pi4) and the memory cgroup controller off (pi3)"
# One run, both boards failing: pi4 with an empty airgap_dir, pi3 with a
# /proc/cgroups that says memory is off (as a Pi kernel without the flags).
printf '#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\nmemory\t0\t1\t0\n' >"$work/pi3/proc/cgroups"
if run_playbook "$work/bad.log" site.yml "${inv[@]}" -e "@$work/bad-vars.yml" >/dev/null 2>&1; then
    fail "site.yml passed with bad input"
fi
grep -q "$work/airgap-empty/k3s-arm64 is missing on the control host" "$work/bad.log" ||
    { tail -n 30 "$work/bad.log"; fail "the failure does not name the missing file"; }
grep -q "The memory cgroup controller is off on pi3" "$work/bad.log" &&
    grep -q "cgroup_enable=cpuset cgroup_enable=memory cgroup_memory=1" "$work/bad.log" ||
    { tail -n 30 "$work/bad.log"; fail "the failure does not give the fix"; }
rm "$work/pi3/proc/cgroups"

echo "== bad input: an architecture pimesh is not built for stops the play naming it"
# The table of supported architectures narrowed to amd64 makes the arm64
# root an unsupported board (no armv6 root can run here).
if run_playbook "$work/arch.log" pimesh.yml "${inv[@]}" --limit pi4 \
    -e '{"arch_supported": {"x86_64": {"name": "amd64", "rust_target": "x86_64-unknown-linux-musl", "k3s_suffix": ""}}}' \
    >/dev/null 2>&1; then
    fail "pimesh.yml passed on an unsupported architecture"
fi
grep -q "pi4 is aarch64: pimesh is built for x86_64" "$work/arch.log" ||
    { tail -n 30 "$work/arch.log"; fail "the failure does not name the architecture"; }

echo "== reset.yml on the half-provisioned boards: they are as debootstrap made them"
run_playbook "$work/reset0.log" reset.yml "${inv[@]}" >/dev/null
same_as_before pi4
same_as_before pi3

echo "== site.yml: the first run changes what it must"
run_playbook "$work/site1.log" site.yml "${inv[@]}"
assert_changed "$work/site1.log" pi4 '[1-9][0-9]*'
assert_changed "$work/site1.log" pi3 '[1-9][0-9]*'
echo "== site.yml again: nothing to change"
run_playbook "$work/site2.log" site.yml "${inv[@]}"
assert_changed "$work/site2.log" pi4 0
assert_changed "$work/site2.log" pi3 0

echo "== the files are where k3s and systemd expect them"
# file_is ROOT PATH MODE: a regular file with that mode, owned by root.
file_is() {
    [[ -f $work/$1$2 ]] || fail "$1: $2 missing"
    [[ $(stat -c '%a %U' "$work/$1$2") == "$3 root" ]] || fail "$1: $2 is $(stat -c '%a %U' "$work/$1$2"), expected $3 root"
}
for b in pi4 pi3; do
    file_is $b /usr/local/bin/k3s 755
    cmp -s "$work/airgap/k3s-arm64" "$work/$b/usr/local/bin/k3s" || fail "$b: k3s is not the air-gap binary"
    [[ $(readlink "$work/$b/usr/local/bin/kubectl") == /usr/local/bin/k3s ]] || fail "$b: no kubectl link"
    for f in k3s-airgap-images-arm64.tar.zst; do
        cmp -s "$work/airgap/$f" "$work/$b/var/lib/rancher/k3s/agent/images/$f" || fail "$b: $f not imported"
    done
    cmp -s "$images/pimesh-airgap-images-arm64.tar.zst" \
        "$work/$b/var/lib/rancher/k3s/agent/images/pimesh-airgap-images-arm64.tar.zst" ||
        fail "$b: pimesh's arm64 images not in k3s's images directory"
    file_is $b /etc/rancher/k3s/config.yaml 600
    grep -qx 'token: pimesh-ansible-test-token' "$work/$b/etc/rancher/k3s/config.yaml" || fail "$b: no token in config.yaml"
    file_is $b /etc/sysctl.d/90-pimesh-k3s.conf 644
    grep -qx 'net.ipv4.ip_forward = 1' "$work/$b/etc/sysctl.d/90-pimesh-k3s.conf" || fail "$b: no ip_forward"
    file_is $b /etc/modules-load.d/pimesh-k3s.conf 644
    grep -qx br_netfilter "$work/$b/etc/modules-load.d/pimesh-k3s.conf" || fail "$b: no br_netfilter"
    [[ $(readlink "$work/$b/etc/alternatives/iptables") == /usr/sbin/iptables-nft ]] || fail "$b: iptables is not nft"
done
file_is pi4 /etc/systemd/system/k3s.service 644
grep -qx 'ExecStart=/usr/local/bin/k3s server' "$work/pi4/etc/systemd/system/k3s.service" || fail "pi4: not a k3s server unit"
[[ $(readlink "$work/pi4/etc/systemd/system/multi-user.target.wants/k3s.service") == /etc/systemd/system/k3s.service ]] ||
    fail "pi4: k3s.service not enabled"
file_is pi3 /etc/systemd/system/k3s-agent.service 644
[[ $(readlink "$work/pi3/etc/systemd/system/multi-user.target.wants/k3s-agent.service") == /etc/systemd/system/k3s-agent.service ]] ||
    fail "pi3: k3s-agent.service not enabled"
grep -qx 'server: https://192.0.2.10:6443' "$work/pi3/etc/rancher/k3s/config.yaml" || fail "pi3: does not join the server"
[[ ! -e $work/pi3/etc/systemd/system/k3s.service ]] || fail "pi3 (an agent) got a server unit"
cmp -s "$REPO_DIR/k3s/pimesh.yaml" "$work/pi4/var/lib/rancher/k3s/server/manifests/pimesh.yaml" ||
    fail "pi4: k3s/pimesh.yaml is not in the auto-deploy directory"
cmp -s "$REPO_DIR/k3s/pimesh-crds.yaml" "$work/pi4/var/lib/rancher/k3s/server/manifests/pimesh-crds.yaml" ||
    fail "pi4: k3s/pimesh-crds.yaml (the policy CRDs) is not in the auto-deploy directory"
[[ ! -e $work/pi3/var/lib/rancher/k3s/server ]] || fail "pi3 (an agent) got server manifests"

echo "== the cmdline flags appear exactly once"
for cmdline in pi4/boot/firmware/cmdline.txt pi3/boot/cmdline.txt; do
    [[ $(wc -l <"$work/$cmdline") -eq 1 ]] || fail "$cmdline is no longer one line"
    for flag in cgroup_enable=cpuset cgroup_enable=memory cgroup_memory=1; do
        n=$(tr ' ' '\n' <"$work/$cmdline" | grep -cx "$flag" || true)
        [[ $n -eq 1 ]] || fail "$cmdline has $flag $n times"
    done
done

echo "== the pimesh binary the role installed runs in the root (qemu)"
got=$(chroot "$work/pi4" /usr/local/bin/pimesh --version)
[[ $got == "pimesh $version" ]] || fail "pimesh --version in the root printed '$got'"
echo "$got"

echo "== pimesh check that does not pass: the play stops after the timeout with its output"
# No k3s runs in a root: the check is made to run (pimesh_wait) against a
# kubeconfig naming a closed loopback port.
cat >"$work/pi4/root/unreachable.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
KC
if run_playbook "$work/check.log" pimesh.yml "${inv[@]}" --limit pi4 -e pimesh_wait=true \
    -e pimesh_check_timeout=5 -e pimesh_kubeconfig=/root/unreachable.kubeconfig >/dev/null 2>&1; then
    fail "pimesh.yml passed while pimesh check fails"
fi
grep -q "pimesh check did not pass within 5 s" "$work/check.log" && grep -q "can query the Kubernetes API" "$work/check.log" ||
    { tail -n 30 "$work/check.log"; fail "the failure does not carry pimesh check's output"; }
rm "$work/pi4/root/unreachable.kubeconfig"

echo "== reset.yml: the roots are as debootstrap made them"
run_playbook "$work/reset2.log" reset.yml "${inv[@]}"
same_as_before pi4
same_as_before pi3
echo "site.sh passed"
