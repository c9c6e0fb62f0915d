"""Benchmarks run as ``agentic-rollout bench <name>``; each prints JSON, then one key=value line.

Every figure is a ratio against a baseline measured in the same run on the same machine; the
targets live in the issues and docs/benchmarks.md, never in timed test assertions.
"""
