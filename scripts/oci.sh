#!/usr/bin/env bash
# `make oci`: the filter as an OCI image that Istio's WasmPlugin pulls, in an
# OCI image layout directory (default target/oci/tollgate-filter, or $1).
#
# The image is the "compat" variant of the Wasm image specification
# (https://github.com/solo-io/wasm/blob/master/spec/spec-compat.md): a
# standard OCI image whose one layer (application/vnd.oci.image.layer.v1.tar+gzip)
# holds plugin.wasm, and whose manifest says module.wasm.image/variant=compat.
# Istio's agent unpacks exactly that (pkg/wasm/imagefetcher.go,
# extractOCIStandardImage), and so does Kubernetes' image volume
# (deploy/kubernetes/gateway.yaml), which the custom-media-type "oci" variant
# would not serve.
#
# Built with umoci (Debian's package; installed here when missing): it writes
# an OCI image layout without a container engine or a registry, neither of
# which this project's machines have. Push the result with any OCI tool,
# e.g. `skopeo copy oci:target/oci/tollgate-filter:0.1.0 docker://REGISTRY/tollgate/filter:0.1.0`.
set -euo pipefail
cd "$(dirname "$0")/.."

layout=${1:-target/oci/tollgate-filter}
tag=$(sed -n 's/^version = "\(.*\)"$/\1/p' filter/Cargo.toml | head -1)
wasm=target/wasm32-wasip1/release/tollgate_filter.wasm

if ! command -v umoci >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "oci: installing umoci (Debian)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq umoci >/dev/null
    else
        echo "oci: umoci not found: install it (\`apt-get install umoci\`)" >&2
        exit 1
    fi
fi
if [ ! -f "$wasm" ]; then
    cargo build --release --locked -p tollgate-filter --target wasm32-wasip1
fi

bundle=$(mktemp -d)
trap 'rm -rf "$bundle"' EXIT

rm -rf "$layout"
mkdir -p "$(dirname "$layout")"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci config --image "$layout:$tag" \
    --manifest.annotation module.wasm.image/variant=compat \
    --config.label org.opencontainers.image.title=tollgate-filter \
    --config.label "org.opencontainers.image.version=$tag"
# One repack, one layer: the compat variant has exactly one. (Debian's umoci
# 0.4.7 `insert` writes a tar cut short after the file's last byte, with no
# padding and no end-of-archive blocks; `repack` writes a whole one.)
umoci unpack --rootless --image "$layout:$tag" "$bundle/image"
cp "$wasm" "$bundle/image/rootfs/plugin.wasm"
umoci repack --image "$layout:$tag" "$bundle/image"
umoci gc --layout "$layout"
echo "oci: $layout:$tag ($(stat -c %s "$wasm") bytes of plugin.wasm)"
