#!/bin/bash
# Generate the shim's containerd messages from containerd's own .proto files.
#
# Usage: gen-shim-protos.sh PYTHON OUT_ROOT
#   PYTHON    a python with grpcio-tools (the virtualenv's)
#   OUT_ROOT  the source root the package lives in (src): modules go to
#             OUT_ROOT/virtcontainers/shim/_gen, which is never committed.
#
# The .proto files come from Debian's Go source packages of containerd 1.6
# and its libraries: downloaded and unpacked (never installed: they pull in
# systemd) into $VC_PROTO_CACHE, one directory per package version.  Each file
# is copied under virtcontainers/shim/_gen/ with its imports renamed to match,
# so that the generated modules import each other inside our package; the
# protobuf package names, and so the type URLs on the wire, stay containerd's.
set -euo pipefail
python=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")  # absolute, not resolved: a venv's python is a link
out_root=$(realpath -m "$2")
cache=${VC_PROTO_CACHE:-/var/cache/virtcontainers/protos}
gen=virtcontainers/shim/_gen
packages=(
    golang-github-containerd-containerd-dev
    golang-github-containerd-cgroups-dev
    golang-github-gogo-protobuf-dev
)
# Source path (under usr/share/gocode/src/github.com) -> path under $gen.
protos=(
    containerd/containerd/runtime/v2/task/shim.proto:containerd/runtime/v2/task/shim.proto
    containerd/containerd/api/types/mount.proto:containerd/api/types/mount.proto
    containerd/containerd/api/types/task/task.proto:containerd/api/types/task/task.proto
    containerd/containerd/api/events/task.proto:containerd/api/events/task.proto
    containerd/containerd/api/services/ttrpc/events/v1/events.proto:containerd/api/services/ttrpc/events/v1/events.proto
    containerd/containerd/protobuf/plugin/fieldpath.proto:containerd/protobuf/plugin/fieldpath.proto
    containerd/cgroups/stats/v1/metrics.proto:cgroups/stats/v1/metrics.proto
    containerd/cgroups/v2/stats/metrics.proto:cgroups/v2/stats/metrics.proto
    gogo/protobuf/gogoproto/gogo.proto:gogoproto/gogo.proto
)

version_of() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n1
}

# The unpacked package's directory, downloaded on first use of this version.
unpacked() {
    local pkg=$1 version
    version=$(version_of "$pkg")
    if [ -z "$version" ]; then
        apt-get update -qq
        version=$(version_of "$pkg")
    fi
    if [ -z "$version" ]; then
        echo "gen-shim-protos: apt knows no package $pkg" >&2
        return 1
    fi
    local dir="$cache/${pkg}_${version}"
    if [ ! -d "$dir" ]; then
        local work
        work=$(mktemp -d)
        # Stale lists can name a version the mirror no longer serves: refresh once.
        if ! (cd "$work" && apt-get download -qq "$pkg=$version" 2>/dev/null); then
            apt-get update -qq
            version=$(version_of "$pkg")
            dir="$cache/${pkg}_${version}"
            (cd "$work" && apt-get download -qq "$pkg=$version")
        fi
        mkdir -p "$cache"
        dpkg-deb -x "$work"/*.deb "$work/tree"
        mv "$work/tree" "$dir"
        rm -rf "$work"
    fi
    echo "$dir"
}

roots=()
for pkg in "${packages[@]}"; do
    roots+=("$(unpacked "$pkg")/usr/share/gocode/src/github.com")
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for entry in "${protos[@]}"; do
    source=${entry%%:*}
    target="$stage/$gen/${entry#*:}"
    found=""
    for root in "${roots[@]}"; do
        [ -f "$root/$source" ] && found="$root/$source"
    done
    if [ -z "$found" ]; then
        echo "gen-shim-protos: $source is in none of ${packages[*]}" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$target")"
    sed -e "s#\"github.com/containerd/containerd/#\"$gen/containerd/#" \
        -e "s#\"github.com/containerd/cgroups/#\"$gen/cgroups/#" \
        -e "s#\"gogoproto/gogo.proto\"#\"$gen/gogoproto/gogo.proto\"#" \
        "$found" >"$target"
done

rm -rf "${out_root:?}/$gen"
mkdir -p "$out_root/$gen"
(cd "$stage" && find "$gen" -name '*.proto' -print0 | xargs -0 \
    "$python" -m grpc_tools.protoc -I. --python_out="$out_root" --pyi_out="$out_root")
# Regular packages, so that mypy and setuptools see them as the code's own.
find "$out_root/$gen" -type d -exec touch {}/__init__.py \;
