#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl) from source through the Go module proxy, once per machine: into
# ${CARGO_TARGET_DIR:-target}/kube/<kubernetes version>/bin, reused while the
# four binaries are there. Prints that directory on stdout.
#
#   lab/kube/build.sh            # build (or reuse) and print the bin dir
#   lab/kube/build.sh --print    # only print where the binaries go
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac

version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$here/go.mod")
[[ -n $version && -n $etcd_version ]] || { echo "build.sh: no versions in $here/go.mod" >&2; exit 1; }
bin=$target/kube/$version-etcd-$etcd_version/bin
if [[ ${1:-} == --print ]]; then
    echo "$bin"
    exit 0
fi

if [[ -x $bin/etcd && -x $bin/kube-apiserver && -x $bin/kube-controller-manager && -x $bin/kubectl ]]; then
    echo "build.sh: kubernetes $version and etcd $etcd_version present in $bin" >&2
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: go not found (Go >= 1.24 is needed to build the test control plane)" >&2; exit 1; }
tmp=$bin.tmp.$$
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
echo "build.sh: building kubernetes $version and etcd $etcd_version into $bin (first time: ~15 min on 2 cores)" >&2
cd "$here"
# -trimpath: no local paths in the binaries; CGO off: static, as upstream builds.
# -ldflags: no symbol tables (-s -w), and the version the API server reports
# (/version, kubectl version), as the Kubernetes release build stamps it.
export CGO_ENABLED=0
stamp=k8s.io/component-base/version
ldflags="-s -w -X $stamp.gitVersion=$version -X $stamp.gitMajor=1 -X $stamp.gitMinor=$(cut -d. -f2 <<<"$version")"
ldflags+=" -X $stamp.gitTreeState=clean -X $stamp.buildDate=1970-01-01T00:00:00Z"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$version"
go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl \
    ./cmd/etcd
mkdir -p "$(dirname "$bin")"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$bin"
