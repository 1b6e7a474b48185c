#!/usr/bin/env bash
# Builds pimesh's container images from the cross-compiled static binaries,
# without a registry or a Docker engine (images/README.md):
#
#   sudo images/build.sh [--out DIR] [ARCH...]      ARCH: arm64 arm amd64 (default: all)
#
# Two images, `FROM scratch`, one per binary: ghcr.io/pimesh/pimesh-proxy
# (pimesh-proxy, whose `init` subcommand is the init container) and
# ghcr.io/pimesh/pimesh (the controller), tagged with the workspace version.
# Writes to DIR (default target/images):
#   oci/                                 OCI layout, one multi-arch index per image
#   pimesh-airgap-images-ARCH.tar[.zst]  docker-archive with both images, for
#                                        k3s's /var/lib/rancher/k3s/agent/images/
#   digests.txt                          every digest, to compare two builds
# Reproducible: file times and the created date come from SOURCE_DATE_EPOCH
# (default: the commit time of HEAD), owners and modes are fixed.
# buildah and podman (for the multi-image docker-archive) run on their own
# vfs storage in a temporary directory beside DIR, removed at the end; DIR
# is replaced only when everything is built.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly REPOSITORY=ghcr.io/pimesh
readonly SOURCE=https://github.com/pimesh/pimesh
# The proxy's uid is Linkerd's 2102, which `pimesh-proxy init` exempts from
# redirection (lite-controller/src/inject/patch.rs PROXY_UID); the controller
# runs as 65532 (distroless's "nonroot"). The init container runs as root
# with NET_ADMIN through its pod securityContext, not through the image.
readonly PROXY_USER=2102:2102
readonly CONTROLLER_USER=65532:65532
readonly KNOWN_ARCHS="arm64 arm amd64"

usage() {
    echo "usage: $0 [--out DIR] [ARCH...]   (ARCH: $KNOWN_ARCHS; default all)" >&2
    exit 64
}

# ARCH → Rust target, OCI platform (os/arch[/variant]), and the command that
# builds its binaries (README "Building for the boards").
triple() {
    case $1 in
        arm64) echo aarch64-unknown-linux-musl ;;
        arm) echo armv7-unknown-linux-musleabihf ;;
        amd64) echo x86_64-unknown-linux-musl ;;
    esac
}
variant() {
    case $1 in
        arm) echo v7 ;;
        *) echo "" ;;
    esac
}
build_cmd() {
    local t
    t=$(triple "$1")
    case $1 in
        arm) echo "RUSTC_BOOTSTRAP=1 cargo zigbuild --release --target $t -Zbuild-std=std,panic_abort -p $2" ;;
        *) echo "cargo build --release --target $t -p $2" ;;
    esac
}

out=""
archs=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --out)
            [[ $# -ge 2 ]] || usage
            out=$2
            shift 2
            ;;
        -h | --help) usage ;;
        -*) usage ;;
        *)
            if [[ " $KNOWN_ARCHS " != *" $1 "* ]]; then
                echo "error: unknown architecture '$1'; known: $KNOWN_ARCHS" >&2
                exit 64
            fi
            archs+=("$1")
            shift
            ;;
    esac
done
[[ ${#archs[@]} -gt 0 ]] || read -ra archs <<<"$KNOWN_ARCHS"

for tool in buildah podman zstd git; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool not found (Debian: apt-get install buildah podman zstd git)" >&2
        exit 1
    }
done
[[ $(id -u) -eq 0 ]] || { echo "error: run as root (buildah's vfs storage keeps file owners)" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-target}
out=${out:-$target_dir/images}
version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[[ -n $version ]] || { echo "error: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
revision=$(git rev-parse HEAD)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# Every binary first: a missing one stops the build before anything is made.
for arch in "${archs[@]}"; do
    for pkg_bin in pimesh-proxy:pimesh-proxy pimesh-controller:pimesh; do
        bin="$target_dir/$(triple "$arch")/release/${pkg_bin#*:}"
        [[ -x $bin ]] || {
            echo "error: $bin is missing; build it with: $(build_cmd "$arch" "${pkg_bin%%:*}")" >&2
            exit 1
        }
    done
done

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.images.XXXXXX")
cleanup() {
    # vfs layers are plain directories; buildah leaves no mounts with vfs.
    rm -rf "$work"
}
trap cleanup EXIT
stage="$work/out"
mkdir -p "$stage/oci"
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
bah() { buildah "${store[@]}" "$@"; }
# podman's own configuration stays out of the way: no registries, no
# networks, nothing from /etc/containers beyond the defaults.
pod() { podman "${store[@]}" --cgroup-manager cgroupfs --events-backend none "$@"; }

# image NAME BINARY USER ARCH: commits one single-platform image, echoes its id.
image() {
    local name=$1 bin=$2 user=$3 arch=$4 ctr
    ctr=$(bah from --quiet scratch)
    bah copy --quiet --chown 0:0 --chmod 0755 "$ctr" \
        "$target_dir/$(triple "$arch")/release/$bin" "/$bin" >/dev/null
    bah config --os linux --arch "$arch" --variant "$(variant "$arch")" \
        --user "$user" --entrypoint "[\"/$bin\"]" --workingdir / \
        --created-by "images/build.sh: COPY $bin /$bin" \
        --label "org.opencontainers.image.title=$name" \
        --label "org.opencontainers.image.version=$version" \
        --label "org.opencontainers.image.source=$SOURCE" \
        --label "org.opencontainers.image.licenses=Apache-2.0" \
        --label "org.opencontainers.image.revision=$revision" \
        --label "org.opencontainers.image.created=$created" \
        "$ctr"
    bah commit --quiet --rm --format oci --timestamp "$SOURCE_DATE_EPOCH" \
        "$ctr" "localhost/$name:$version-$arch"
}

names=(pimesh-proxy pimesh)
declare -A ids
for arch in "${archs[@]}"; do
    ids[pimesh-proxy/$arch]=$(image pimesh-proxy pimesh-proxy "$PROXY_USER" "$arch")
    ids[pimesh/$arch]=$(image pimesh pimesh "$CONTROLLER_USER" "$arch")
    # The per-architecture docker-archive names the images by their real
    # references, as k3s's airgap tarballs do: the tags move to this arch's
    # images for the save (an image name is unique in the storage).
    refs=()
    for name in "${names[@]}"; do
        bah tag "${ids[$name/$arch]}" "$REPOSITORY/$name:$version"
        refs+=("$REPOSITORY/$name:$version")
    done
    tarball="$stage/pimesh-airgap-images-$arch.tar"
    pod save --quiet --multi-image-archive --format docker-archive -o "$tarball" "${refs[@]}"
    zstd --quiet -19 -T0 "$tarball" -o "$tarball.zst"
done

# One multi-arch index per image, into one OCI layout. The local list names
# differ from the references, which the single images carry above.
for name in "${names[@]}"; do
    list="localhost/$name-index:$version"
    bah manifest create "$list" >/dev/null
    for arch in "${archs[@]}"; do
        bah manifest add "$list" "${ids[$name/$arch]}" >/dev/null
    done
    bah manifest push --quiet --all --format oci "$list" \
        "oci:$stage/oci:$REPOSITORY/$name:$version"
done

{
    echo "# pimesh $version images, revision $revision, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
    python3 - "$stage/oci" <<'EOF'
import json, sys, os
root = sys.argv[1]
def blob(d):
    return json.load(open(os.path.join(root, "blobs", *d.split(":"))))
for m in json.load(open(os.path.join(root, "index.json")))["manifests"]:
    print(m["annotations"]["org.opencontainers.image.ref.name"], "index", m["digest"])
    for p in blob(m["digest"])["manifests"]:
        plat = p["platform"]
        name = "/".join(x for x in (plat["os"], plat["architecture"], plat.get("variant")) if x)
        print("  ", name, p["digest"])
EOF
    (cd "$stage" && sha256sum -- *.tar *.tar.zst)
} >"$stage/digests.txt"

rm -rf "$out"
mv "$stage" "$out"
cat "$out/digests.txt"
