"""Harbor tasks: the task-directory format shared by Harbor, Terminal-Bench 2, SkyRL, NeMo Gym
and Prime's verifiers.

``task.py`` reads a task folder (``instruction.md``, ``task.toml``, ``environment/``, ``tests/``,
optional ``solution/``); ``run.py`` builds the environment image offline, runs an agent (or the
oracle) in it, then the verifier in the same sandbox; ``orchestrator/cli/harbor.py`` wires
``run harbor:PATH`` and ``harbor validate``. Nothing here imports Docker or an LLM SDK at import
time.
"""
