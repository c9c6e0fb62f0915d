"""A Harbor task folder, read and checked.

::

    task-name/
      instruction.md        the prompt
      task.toml             [agent] / [verifier] timeout_sec, [environment] cpus, memory_mb
                            (or memory = "2G"), storage_mb, allow_internet, docker_image,
                            build_timeout_sec; [metadata] anything
      environment/          Dockerfile and its build context (or docker_image in task.toml)
      tests/test.sh         the verifier; writes /logs/verifier/reward.txt or reward.json
      solution/solve.sh     the oracle (optional)

A folder whose subfolders are tasks is a dataset of them. A task that cannot run (no
instruction, no tests/test.sh, no environment) is refused with the reason; keys of task.toml
this reader does not know are ignored, as Harbor ignores them.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.exceptions import TaskError
from orchestrator.tasks import Task

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_AGENT_TIMEOUT = 600.0
DEFAULT_VERIFIER_TIMEOUT = 600.0
DEFAULT_BUILD_TIMEOUT = 600.0
IMAGE_REPO = "agentic-rollout/harbor"


class HarborTask(BaseModel):
    name: str
    path: Path
    instruction: str
    agent_timeout: float = DEFAULT_AGENT_TIMEOUT
    verifier_timeout: float = DEFAULT_VERIFIER_TIMEOUT
    build_timeout: float = DEFAULT_BUILD_TIMEOUT
    cpus: float | None = None
    memory_mb: int | None = None
    storage_mb: int | None = None
    allow_internet: bool = False
    #: a prebuilt image named in task.toml (used as it is, never pulled)
    docker_image: str | None = None
    verifier_env: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def tests_dir(self) -> Path:
        return self.path / "tests"

    @property
    def solution_dir(self) -> Path:
        return self.path / "solution"

    @property
    def environment_dir(self) -> Path:
        return self.path / "environment"

    @property
    def has_solution(self) -> bool:
        return (self.solution_dir / "solve.sh").is_file()

    def image_tag(self) -> str:
        """The prebuilt image, or a tag that hashes the environment's build context (a changed
        Dockerfile gets a new tag instead of a stale image)."""
        if self.docker_image:
            return self.docker_image
        digest = hashlib.sha256()
        for f in sorted(p for p in self.environment_dir.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(self.environment_dir)).encode() + b"\0")
            digest.update(f.read_bytes() + b"\0")
        slug = re.sub(r"[^a-z0-9_.-]+", "-", self.name.lower()).strip("-.") or "task"
        return f"{IMAGE_REPO}-{slug}:{digest.hexdigest()[:12]}"

    def sandbox_overrides(self) -> dict[str, Any]:
        """Docker sandbox settings from task.toml. Network stays ``none`` whatever the task
        allows: sandboxes get a network only when the operator configures one."""
        values: dict[str, Any] = {"image": self.image_tag()}
        if self.cpus:
            values["cpus"] = float(self.cpus)
        if self.memory_mb:
            values["memory"] = f"{int(self.memory_mb)}m"
        if self.storage_mb:  # the Docker backend's per-sandbox disk limit (storage-opt size)
            values["disk"] = f"{int(self.storage_mb)}m"
        return values

    def to_task(self) -> Task:
        return Task(
            id=self.name,
            prompt=self.instruction,
            sandbox=self.sandbox_overrides(),
            metadata={"harbor": {"path": str(self.path), **self.metadata}},
        )


def _size_mb(value: Any, key: str, where: Path) -> int:
    """``2048`` (MB) or Harbor's older ``"2G"`` / ``"512M"`` strings."""
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(value), re.I)
    if not m:
        raise TaskError(f"{where}: [environment] {key} = {value!r} is not a size like 2048 or '2G'")
    scale = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def load_harbor_task(path: str | Path) -> HarborTask:
    """Read one task folder; :class:`TaskError` names what is missing or malformed."""
    p = Path(path).resolve()
    if not p.is_dir():
        raise TaskError(f"harbor task {p} is not a folder")
    name = p.name
    instruction_file = p / "instruction.md"
    if not instruction_file.is_file():
        raise TaskError(f"harbor task {name}: no instruction.md in {p}")
    if not (p / "tests").is_dir():
        raise TaskError(
            f"harbor task {name}: no tests/ folder: the verifier (tests/test.sh) is what gives "
            "the reward"
        )
    if not (p / "tests" / "test.sh").is_file():
        raise TaskError(f"harbor task {name}: tests/ has no test.sh (the verifier's entry point)")
    config: dict[str, Any] = {}
    toml_file = p / "task.toml"
    if toml_file.is_file():
        try:
            config = tomllib.loads(toml_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise TaskError(f"harbor task {name}: task.toml is not valid TOML: {exc}") from None
    env = config.get("environment") or {}
    agent = config.get("agent") or {}
    verifier = config.get("verifier") or {}
    docker_image = env.get("docker_image")
    if not docker_image and not (p / "environment" / "Dockerfile").is_file():
        raise TaskError(
            f"harbor task {name}: no environment/Dockerfile and no [environment] docker_image "
            "in task.toml: nothing to run the agent in"
        )
    memory = env.get("memory_mb", env.get("memory"))
    storage = env.get("storage_mb", env.get("storage"))
    try:
        return HarborTask(
            name=name,
            path=p,
            instruction=instruction_file.read_text(encoding="utf-8"),
            agent_timeout=float(agent.get("timeout_sec", DEFAULT_AGENT_TIMEOUT)),
            verifier_timeout=float(verifier.get("timeout_sec", DEFAULT_VERIFIER_TIMEOUT)),
            build_timeout=float(env.get("build_timeout_sec", DEFAULT_BUILD_TIMEOUT)),
            cpus=env.get("cpus"),
            memory_mb=None if memory is None else _size_mb(memory, "memory", toml_file),
            storage_mb=None if storage is None else _size_mb(storage, "storage", toml_file),
            allow_internet=bool(env.get("allow_internet", False)),
            docker_image=docker_image,
            verifier_env={str(k): str(v) for k, v in (verifier.get("env") or {}).items()},
            metadata=dict(config.get("metadata") or {}),
        )
    except (TypeError, ValueError) as exc:
        raise TaskError(f"harbor task {name}: task.toml: {exc}") from None


def load_harbor_tasks(path: str | Path) -> tuple[list[HarborTask], list[str]]:
    """A task folder, or a folder of task folders (a dataset): good tasks and one message per
    task that cannot run."""
    p = Path(path)
    if not p.is_dir():
        raise TaskError(f"harbor path {p} is not a folder")
    if (p / "instruction.md").exists() or (p / "task.toml").exists():
        return [load_harbor_task(p)], []
    tasks: list[HarborTask] = []
    errors: list[str] = []
    for sub in sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")):
        try:
            tasks.append(load_harbor_task(sub))
        except TaskError as exc:
            errors.append(str(exc))
    if not tasks and not errors:
        raise TaskError(f"{p} is neither a Harbor task (no instruction.md) nor a folder of them")
    return tasks, errors
