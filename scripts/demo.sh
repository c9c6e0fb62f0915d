#!/usr/bin/env bash
# The main job, offline: set up (Docker engine, images, venv, llama.cpp, SmolLM2), then run a
# small batch of real rollouts - llama.cpp on 127.0.0.1, the OpenAI SDK, Docker sandboxes -
# and write the trajectories to ./demo-output/trajectories.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/agentic-rollout demo --output "${1:-demo-output}"
