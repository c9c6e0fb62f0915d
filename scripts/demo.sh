#!/usr/bin/env bash
# The main job on this machine, offline: set up, then run the example against local Docker.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/sandbox_quickstart.py "$@"
