#!/usr/bin/env bash
# Build the sandbox images with no image registry.
#
#   1. debootstrap a Debian minbase rootfs (with python3, git, ripgrep, patch...) from the
#      Debian mirror this machine's apt already uses, and `docker import` it as the base tag;
#   2. `docker build` the default sandbox image FROM that base (no network needed);
#   3. `docker build` a python-less test image (used to test the "no python3" error).
# Every step is skipped when its tag already exists. Tags carry a hash of their inputs so a
# changed Dockerfile or package list produces a new tag instead of reusing a stale one.
#
# Users with registry access can skip step 1:  docker build --build-arg BASE=debian:bookworm-slim \
#     -t agentic-rollout/sandbox:latest -f sandbox_images/Dockerfile .
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
suite="${DEBIAN_SUITE:-bookworm}"
packages="python3,python3-pytest,git,ripgrep,patch,procps,ca-certificates,less,diffutils,findutils,xz-utils,file"
base_hash=$(printf '%s %s v2' "$suite" "$packages" | sha256sum | cut -c1-12)
base_tag="agentic-rollout/base:${suite}-${base_hash}"

have() { docker image inspect "$1" >/dev/null 2>&1; }

mirror() {
  # First Debian mirror from deb822 sources or one-line sources.list.
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  echo "${DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

if have "$base_tag"; then
  echo "base image $base_tag exists, skipping debootstrap"
else
  command -v debootstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
  root=$(mktemp -d /var/tmp/agentic-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap $suite from $(mirror) into $root"
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$(mirror)" >/tmp/agentic-debootstrap.log 2>&1 \
    || { tail -n 30 /tmp/agentic-debootstrap.log; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # mktemp -d made the rootfs 0700: the tar's "./" entry carries that mode, and btrfs (unlike
  # overlay2) gives it to the container's "/" - a non-root user could then exec nothing
  chmod 0755 "$root"
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base_tag" >/dev/null
  rm -rf "$root"; trap - EXIT
fi

# Inputs of the sandbox image: Dockerfile + the in-sandbox agent it bakes in.
img_hash=$( (echo "$base_tag"; cat "$here/Dockerfile"; find "$repo/orchestrator/sandbox/agent" -name '*.py' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-12)
img_tag="agentic-rollout/sandbox:${img_hash}"
if have "$img_tag"; then
  echo "sandbox image $img_tag exists"
else
  docker build -q --network none --build-arg BASE="$base_tag" -t "$img_tag" -f "$here/Dockerfile" "$repo" >/dev/null
fi
docker tag "$img_tag" agentic-rollout/sandbox:latest

nopy_tag="agentic-rollout/nopython:${img_hash}"
if ! have "$nopy_tag"; then
  printf 'FROM %s\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3* && rm -rf /opt/agentic\n' "$img_tag" \
    | docker build -q --network none -t "$nopy_tag" - >/dev/null
fi
docker tag "$nopy_tag" agentic-rollout/nopython:latest
echo "images ready: agentic-rollout/sandbox:latest ($img_tag) agentic-rollout/nopython:latest"
