#!/usr/bin/env bash
# The whole test suite on this machine: setup, lint, types, the layer contracts (import-linter,
# see [tool.importlinter] in pyproject.toml), then pytest against real Docker.
# Under CI=true a skipped Docker test counts as a failure (see tests/conftest.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export TESTCONTAINERS_RYUK_DISABLED=true
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest -q -rfEs "$@"
