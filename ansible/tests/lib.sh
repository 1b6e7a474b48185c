# Shared by the Ansible tests (ansible/tests/*.sh); source it.
#
# The boards are arm64 Debian bookworm root filesystems made by debootstrap
# on this machine, driven through Ansible's community.general.chroot
# connection; their arm64 programs (python3 for Ansible's modules, the
# pimesh binaries) run under qemu-user-static through binfmt_misc.
set -euo pipefail

ANSIBLE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$ANSIBLE_DIR/.." && pwd)
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-$REPO_DIR/target}")
export ANSIBLE_CONFIG=$ANSIBLE_DIR/ansible.cfg
# The tests' roots, logs and the cached root tarball live here.
mkdir -p "$TARGET_DIR/ansible"
# What debootstrap puts in a board's root beyond minbase, as Raspberry Pi
# OS has them: python3 and python3-apt (Ansible's modules, its apt module),
# systemd (units are enabled as on a board), iptables and kmod.
readonly ROOT_PACKAGES=python3,python3-apt,systemd,systemd-sysv,iptables,kmod,ca-certificates
readonly ROOT_SUITE=bookworm
readonly ROOT_MIRROR=${PIMESH_DEBIAN_MIRROR:-http://deb.debian.org/debian}

fail() {
    echo "error: $*" >&2
    exit 1
}

# Registers qemu-aarch64 with binfmt_misc (mounting it when needed), so
# that a chroot into an arm64 root runs its programs.
ensure_binfmt() {
    local bf=/proc/sys/fs/binfmt_misc
    if [[ ! -e $bf/register ]]; then
        mount -t binfmt_misc binfmt_misc "$bf"
    fi
    if [[ ! -e $bf/qemu-aarch64 ]]; then
        # Debian's own registration (qemu-user-static): F flag, so the
        # interpreter need not exist inside the root.
        cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$bf/register"
    fi
    grep -q enabled "$bf/qemu-aarch64" || fail "qemu-aarch64 binfmt is registered but disabled"
}

# Prints the path of a tarball of a fresh arm64 bookworm root, made by
# debootstrap once per machine (cached in the target directory, keyed by
# the package list) and reused.
root_tarball() {
    local key tarball work
    key=$(echo "$ROOT_SUITE $ROOT_PACKAGES gencaches" | sha256sum | cut -c1-12)
    tarball=$TARGET_DIR/ansible/debian-$ROOT_SUITE-arm64-$key.tar
    if [[ ! -s $tarball ]]; then
        mkdir -p "$TARGET_DIR/ansible"
        work=$(mktemp -d "$TARGET_DIR/ansible/debootstrap.XXXXXX")
        echo "debootstrap: arm64 $ROOT_SUITE with $ROOT_PACKAGES (once per machine)" >&2
        debootstrap --arch=arm64 --variant=minbase --include="$ROOT_PACKAGES" \
            "$ROOT_SUITE" "$work/root" "$ROOT_MIRROR" >"$work/log" 2>&1 ||
            { tail -n 30 "$work/log" >&2; rm -rf "$work"; fail "debootstrap failed"; }
        # Drop the downloaded .debs: the roots need not carry them.
        rm -rf "$work"/root/var/cache/apt/archives/*.deb
        # apt's package caches, as on a board where apt has run (Ansible's
        # apt module would write them otherwise).
        chroot "$work/root" apt-cache gencaches >/dev/null
        tar -C "$work/root" --numeric-owner -cf "$tarball.part.$$" .
        mv "$tarball.part.$$" "$tarball"
        rm -rf "$work"
    fi
    echo "$tarball"
}

# make_board DIR MODEL CMDLINE_PATH: a board's root in DIR, unpacked from
# root_tarball, with what a Raspberry Pi OS image has that debootstrap does
# not make: /proc/device-tree/model (MODEL; empty for a board that is not a
# Pi) and the kernel command line at CMDLINE_PATH (/boot/firmware/cmdline.txt
# on bookworm images, /boot/cmdline.txt on older ones). /proc is not mounted
# in these roots, so the model is a plain file there.
make_board() {
    local dir=$1 model=$2 cmdline=$3
    mkdir -p "$dir"
    tar -C "$dir" -xf "$(root_tarball)"
    if [[ -n $model ]]; then
        mkdir -p "$dir/proc/device-tree"
        printf '%s\0' "$model" >"$dir/proc/device-tree/model"
    fi
    mkdir -p "$(dirname "$dir$cmdline")"
    echo "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait" \
        >"$dir$cmdline"
}

# snapshot DIR: every path in the root with its type, mode, owner and size,
# sorted; for before/after comparisons. Left out: /root/.ansible, the
# working directory Ansible itself leaves on every host it manages
# (remote_tmp), which no role adds.
snapshot() {
    (cd "$1" && find . -xdev \( -path ./root/.ansible \) -prune -o -printf '%y %m %U:%G %s %p\n' | sort)
}

# write_inventory FILE GROUPS...: not a helper; each test writes its own
# inventory (see site.sh), naming the roots with
#   ansible_connection: community.general.chroot
#   ansible_host: /path/to/root

# run_playbook LOG PLAYBOOK ARGS...: ansible-playbook from ansible/, output
# to LOG (and shown on failure); prints the PLAY RECAP.
run_playbook() {
    local log=$1
    shift
    if ! (cd "$ANSIBLE_DIR" && ansible-playbook "$@") >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        return 1
    fi
    sed -n '/PLAY RECAP/,$p' "$log"
}

# assert_changed LOG HOST N: the recap of LOG says HOST had changed=N
# (N may be a regex such as '[1-9][0-9]*').
assert_changed() {
    local log=$1 host=$2 n=$3
    grep -Eq "^$host +: ok=[0-9]+ +changed=$n +unreachable=0 +failed=0" "$log" ||
        { sed -n '/PLAY RECAP/,$p' "$log" >&2; fail "$host: expected changed=$n in $log"; }
}
