"""Fork and snapshot (orchestrator/sandbox/fork.py) against the real Docker engine and the
Kubernetes API double: files, cwd and env carried; children independent of the parent and of
each other; snapshot images labelled and reaped by gc; bad inputs fail specifically and leave
nothing behind."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import docker
import pytest

from orchestrator import admission
from orchestrator.exceptions import ConfigError, ForkError, SnapshotTooLargeError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.base import Sandbox
from orchestrator.sandbox.docker import LABEL_MANAGED, LABEL_RUN
from orchestrator.sandbox.fork import LABEL_KIND
from orchestrator.sandbox.gc import reap_snapshot_images
from tests.conftest import docker_config, kube_config
from tests.test_agent_sandbox import as_double  # noqa: F401 - the agent-sandbox double

pytestmark = pytest.mark.docker

PREPARE = (
    "mkdir -p /workspace/proj/sub && echo prepared > /workspace/proj/state.txt && "
    "cd /workspace/proj/sub && export FORK_MARK='a b=c' && PLAIN=unexported"
)


async def _prepare(parent: Sandbox) -> None:
    assert (await parent.run(PREPARE)).ok
    # a second session with its own cwd and env
    assert (await parent.run("cd /workspace/proj && export OTHER=2", session="other")).ok


async def _check_child(child: Sandbox, parent: Sandbox) -> None:
    assert await child.read_text("/workspace/proj/state.txt") == "prepared\n"
    out = await child.run('pwd; echo "$FORK_MARK|${PLAIN:-unset}"')
    assert out.output.splitlines() == ["/workspace/proj/sub", "a b=c|unset"]
    other = await child.run('pwd; echo "$OTHER"', session="other")
    assert other.output.splitlines() == ["/workspace/proj", "2"]
    assert child.name != parent.name


async def _check_independent(parent: Sandbox, children: list[Sandbox]) -> None:
    a, b = children[0], children[1]
    await a.write_file("/workspace/proj/only-a", "a")
    await a.run("export FORK_MARK=changed-in-a; cd /")
    await parent.write_file("/workspace/proj/only-parent", "p")
    assert not await b.exists("/workspace/proj/only-a")
    assert not await parent.exists("/workspace/proj/only-a")
    assert not await a.exists("/workspace/proj/only-parent")
    assert not await b.exists("/workspace/proj/only-parent")
    assert (await b.run('pwd; echo "$FORK_MARK"')).output.splitlines() == [
        "/workspace/proj/sub",
        "a b=c",
    ]


def _image_exists(image: str) -> bool:
    client = docker.from_env()
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


async def test_docker_fork_by_image_carries_filesystem_cwd_env_and_children_are_independent() -> (
    None
):
    async with docker_config().build() as parent:
        await _prepare(parent)
        # outside the work directory: the image snapshot carries the whole writable layer
        assert (await parent.run("echo sys > /opt/outside.txt")).ok
        children = await parent.fork(2, method="image")
        try:
            image = children[0].config.image  # type: ignore[attr-defined]
            assert image.startswith("sha256:") and _image_exists(image)
            for child in children:
                await _check_child(child, parent)
                assert await child.read_text("/opt/outside.txt") == "sys\n"
            await _check_independent(parent, children)
        finally:
            for child in children:
                await child.close()
        # the fork's image goes with its last child
        assert not _image_exists(image)


async def test_docker_snapshot_starts_many_later_and_gc_reaps_it() -> None:
    run_id = f"pytest-fork-{uuid.uuid4().hex[:6]}"
    async with docker_config(run_id=run_id, ttl=3).build() as parent:
        await _prepare(parent)
        snap = await parent.snapshot()
    assert snap.kind == "image" and snap.image is not None
    labels = docker.from_env().images.get(snap.image).labels
    assert labels[LABEL_MANAGED] == "1" and labels[LABEL_KIND] == "snapshot"
    assert labels[LABEL_RUN] == run_id
    # the parent is gone; the snapshot still starts sandboxes, with overrides
    cfg = sandbox_config({"memory": "256m"}, from_snapshot=snap)
    async with cfg.build() as child:
        await _check_child(child, parent)
        assert child.config.memory == "256m"  # type: ignore[attr-defined]
        api = docker.APIClient()
        await asyncio.sleep(max(0.0, float(labels["agentic-rollout.expires"]) - time.time() + 1))
        # expired but in use: gc leaves it
        reaped = reap_snapshot_images(
            api, now=time.time(), run_id=None, everything=False, dry_run=False
        )
        mine = [r for r in reaped if snap.image.removeprefix("sha256:").startswith(r.container_id)]
        assert mine and mine[0].reason == "expired" and not mine[0].removed
    reaped = reap_snapshot_images(
        api, now=time.time(), run_id=None, everything=False, dry_run=False
    )
    assert any(
        r.removed for r in reaped if snap.image.removeprefix("sha256:").startswith(r.container_id)
    )
    assert not _image_exists(snap.image)
    await snap.delete()  # idempotent after gc


async def test_gc_reaps_a_snapshot_whose_orchestrator_is_gone() -> None:
    import subprocess

    # a process that existed and is gone: its pid in the labels, as after a SIGKILL
    dead = subprocess.Popen(["true"])
    dead.wait()
    async with docker_config().build() as sb:
        labels = {**sb.labels(), LABEL_KIND: "snapshot", "agentic-rollout.pid": str(dead.pid)}
        api = docker.APIClient()
        image = api.commit(sb.container_id, conf={"Labels": labels})["Id"]  # type: ignore[attr-defined]
    try:
        reaped = reap_snapshot_images(
            api, now=time.time(), run_id=None, everything=False, dry_run=False
        )
        mine = [r for r in reaped if image.removeprefix("sha256:").startswith(r.container_id)]
        assert mine and mine[0].removed and mine[0].reason.startswith("orphaned")
        assert not _image_exists(image)
    finally:
        if _image_exists(image):
            api.remove_image(image)


async def test_from_snapshot_bad_inputs() -> None:
    async with docker_config().build() as parent:
        snap = await parent.snapshot()
    try:
        with pytest.raises(ConfigError, match="kubernetes"):
            sandbox_config({"type": "kubernetes"}, from_snapshot=snap)
        with pytest.raises(ConfigError, match="image"):
            sandbox_config({"image": "x"}, from_snapshot=snap)
        with pytest.raises(ConfigError, match="imagee"):
            sandbox_config({"imagee": "x"}, from_snapshot=snap)
        with pytest.raises(ConfigError, match="Snapshot"):
            sandbox_config({}, from_snapshot="sha256:abc")
    finally:
        await snap.delete()
    with pytest.raises(ForkError, match="deleted"):
        sandbox_config({}, from_snapshot=snap).build()


async def test_fork_bad_n_dead_parent_and_admission() -> None:
    sb = docker_config().build()
    with pytest.raises(ForkError, match="not started"):
        await sb.fork(1)
    async with sb:
        with pytest.raises(ForkError, match="n must be an integer >= 1, got 0"):
            await sb.fork(0)
        with pytest.raises(ForkError, match="got -2"):
            await sb.fork(-2)
        limit = admission.controller("docker").settings.max_live
        with pytest.raises(ForkError, match=f"max_live={limit}"):
            await sb.fork(limit)
        await sb.kill()  # type: ignore[attr-defined]
        with pytest.raises(ForkError, match=r"dead|not answering"):
            await sb.fork(1)
    with pytest.raises(ForkError, match="closed"):
        await sb.fork(1)
    assert admission.controller("docker").live == 0


async def test_fork_partial_failure_removes_children_and_snapshot() -> None:
    ctl = admission.controller("docker")
    saved = ctl.settings
    async with docker_config().build() as parent, docker_config().build() as other:
        await _prepare(parent)
        # room for exactly one more sandbox: the first child starts, the second is refused
        ctl.configure(saved.model_copy(update={"max_live": ctl.live + 1, "queue_timeout": 1.0}))
        try:
            with pytest.raises(ForkError, match="1 of 2 children failed to start") as info:
                await parent.fork(2)
        finally:
            ctl.configure(saved)
        assert ctl.live == 2
        assert other.name
    client = docker.from_env()
    run = parent.config.run_id  # type: ignore[attr-defined]
    left = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run}"})
    assert [c.name for c in left if c.name in str(info.value)] == []
    images = client.images.list(filters={"label": [f"{LABEL_KIND}=snapshot", f"{LABEL_RUN}={run}"]})
    assert images == []


async def test_fork_into_started_blanks_copies_the_workdir() -> None:
    async with docker_config().build() as parent, docker_config().build() as blank:
        await _prepare(parent)
        await blank.write_file("/workspace/stale.txt", "from the image")
        (child,) = await parent.fork(1, into=[blank])
        assert child is blank
        await _check_child(child, parent)
        assert not await child.exists("/workspace/stale.txt")  # the work dir is the parent's
        with pytest.raises(ForkError, match="other than the parent"):
            await parent.fork(1, into=[parent])


async def test_kubernetes_fork_portable(kube_double: Any) -> None:
    async with kube_config(kube_double, workdir="/workspace").build() as parent:
        await _prepare(parent)
        children = await parent.fork(2)
        try:
            for child in children:
                assert child.backend == "kubernetes"
                await _check_child(child, parent)
            await _check_independent(parent, children)
        finally:
            for child in children:
                await child.close()
        for child in children:
            assert ("agentic-rollout", child.name) not in kube_double.pods


async def test_kubernetes_snapshot_size_cap_fails_fast_and_leaks_nothing(
    kube_double: Any,
) -> None:
    async with kube_config(kube_double, workdir="/workspace").build() as parent:
        # 5 GB of apparent size (sparse: no disk used) in the work directory
        assert (await parent.run("truncate -s 5G /workspace/huge.bin")).ok
        pods = set(kube_double.pods)
        folder = os.path.join(__import__("tempfile").gettempdir(), "agentic-rollout-snapshots")
        before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        t0 = time.monotonic()
        with pytest.raises(SnapshotTooLargeError, match=r"/workspace/huge\.bin.*1\.0 GiB"):
            await parent.fork(3)
        assert time.monotonic() - t0 < 30  # measured, not streamed (5 GB would take minutes)
        with pytest.raises(SnapshotTooLargeError, match="max_snapshot_bytes"):
            await parent.snapshot(max_snapshot_bytes=1 << 20)
        assert set(kube_double.pods) == pods
        after = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        assert after == before


async def test_local_backend_refuses_to_fork(local_sandbox: Any) -> None:
    with pytest.raises(ForkError, match="no isolation"):
        await local_sandbox.fork(1)


async def test_group_rollout_runs_setup_once_and_each_sample_in_its_own_fork(
    tmp_path: Any,
) -> None:
    from tests.conftest import SANDBOX_IMAGE, TEST_RUN_ID

    await _group_rollout(
        tmp_path, {"type": "docker", "image": SANDBOX_IMAGE, "run_id": TEST_RUN_ID}
    )


async def test_group_rollout_on_kubernetes_prestarts_the_forks(
    tmp_path: Any, kube_double: Any
) -> None:
    values = kube_config(kube_double, workdir="/workspace").model_dump(mode="json")
    await _group_rollout(tmp_path, values)


async def _group_rollout(tmp_path: Any, sandbox: dict[str, Any]) -> None:
    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.runner import AgenticRollout
    from orchestrator.tasks import Task
    from orchestrator.testing import ScriptedLLM, tool_call

    probe = (
        "cat /workspace/token; echo; wc -l < /workspace/setup-runs; pwd; echo $GROUP_ENV; "
        "touch /workspace/sample-$RANDOM$RANDOM; ls /workspace | grep -c sample-"
    )
    script = [tool_call("bash", {"command": probe}), lambda m: m[-1]["content"]]
    llm = ScriptedLLM.by_prompt({"group task": script})
    config = AgenticRolloutConfig(
        agent_type="tool",
        group_size=3,
        concurrent_requests=2,
        trajectory_save_path=str(tmp_path / "out.jsonl"),
        sandbox=sandbox,
    )
    setup = [
        # a random token: n setups would leave n different tokens in the samples
        "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /workspace/token",
        "echo ran >> /workspace/setup-runs",
        "mkdir -p /workspace/w && cd /workspace/w && export GROUP_ENV=carried",
    ]
    tasks = [
        Task(id="g1", prompt="group task one", setup=setup),
        Task(id="g2", prompt="group task two", setup=setup),
        Task(id="solo", prompt="group task solo"),  # no setup: plain samples, no fork
    ]
    summary = await AgenticRollout(config, llm_client=llm).run(tasks)
    by_id = {t.request_id: t for t in summary.trajectories}
    assert sorted(by_id) == sorted(f"{g}#{i}" for g in ("g1", "g2", "solo") for i in range(3))
    tokens = {}
    for g in ("g1", "g2"):
        answers = [by_id[f"{g}#{i}"].get_final_response() or "" for i in range(3)]
        lines = [a.splitlines() for a in answers]
        # one setup: the same token, one line in setup-runs, its cwd and env in every sample
        assert len({ln[0] for ln in lines}) == 1, answers
        assert all(ln[1:5] == ["1", "/workspace/w", "carried", "1"] for ln in lines), answers
        tokens[g] = lines[0][0]
        groups = [by_id[f"{g}#{i}"].metadata["group"] for i in range(3)]
        assert [x["index"] for x in groups] == [0, 1, 2]
        assert {x["id"] for x in groups} == {g} and {x["size"] for x in groups} == {3}
        assert all(x["forked"] for x in groups) and len({x["parent"] for x in groups}) == 1
        # the children start during the setup (on every backend), then take its changes
        assert {x["prestarted"] for x in groups} == {True}
        # each sample in its own sandbox (a fork), none of them the parent
        sandboxes = {by_id[f"{g}#{i}"].metadata["sandbox"] for i in range(3)}
        assert len(sandboxes) == 3 and groups[0]["parent"] not in sandboxes
    assert tokens["g1"] != tokens["g2"]
    solo = [by_id[f"solo#{i}"] for i in range(3)]
    assert all("forked" not in t.metadata["group"] for t in solo)
    assert summary.by_status == {"completed": 9}


async def test_agent_sandbox_fork_portable(as_double: Any) -> None:  # noqa: F811
    from tests.test_agent_sandbox import cfg, wait_pool_ready

    await wait_pool_ready(as_double, "pool", 2)
    async with cfg(as_double).build() as parent:
        await _prepare(parent)
        children = await parent.fork(2)
        try:
            for child in children:
                assert type(child) is type(parent)
                assert child.settings.type == "agent-sandbox"  # type: ignore[attr-defined]
                await _check_child(child, parent)
            await _check_independent(parent, children)
        finally:
            for child in children:
                await child.close()
        # size cap on this path too: refused before any claim is made
        assert (await parent.run("truncate -s 5G /workspace/huge.bin")).ok
        with pytest.raises(SnapshotTooLargeError):
            await parent.fork(2)


async def test_docker_read_only_sandbox_forks_through_the_work_directory() -> None:
    # the work directory is a volume, outside the committed layer: the archive path carries it
    async with docker_config(read_only=True, workdir="/workspace").build() as parent:
        await _prepare(parent)
        (child,) = await parent.fork(1)
        try:
            await _check_child(child, parent)
            assert child.config.image == parent.config.image  # type: ignore[attr-defined]
        finally:
            await child.close()
