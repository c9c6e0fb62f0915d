"""The Kubernetes backend against the API double with a real cluster's behaviours switched on
(tests/k8s_double.py): TLS with packed frames, v5/v4, the frame limit, idle timeouts, dropped
and half-open streams, API restarts, throttling with Retry-After, a create that commits then
504s, slow starts and image-pull back-off, admission, capacity, eviction, deadlines, channel-3
start errors, starting pods next to running ones, and the authenticated direct-TCP channel."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.exceptions import SandboxConnectionError, SandboxStartError
from orchestrator.sandbox.kubernetes import (
    ANNOTATION_SANDBOX_ID,
    KubernetesSandboxConfig,
    load_configuration,
)

from .conftest import kube_config as _kube_config

pytestmark = pytest.mark.docker
NS = "agentic-rollout"
V4 = "v4.channel.k8s.io"


@pytest.fixture
def double(kube_double: Any) -> Iterator[Any]:
    """The session's double with every switch off again after the test."""
    kube_double.reset()
    try:
        yield kube_double
    finally:
        kube_double.reset()


@pytest.fixture(scope="module")
def tls_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.k8s_double import KubeDouble

    with KubeDouble(tls=True) as d:
        d.kubeconfig_path = d.kubeconfig(tmp_path_factory.mktemp("kube-tls"))
        yield d


def kube_config(double: Any, **kwargs: Any) -> KubernetesSandboxConfig:
    """The suite's config, with room for a slow Docker behind the double (pods start when the
    container does)."""
    kwargs.setdefault("startup_timeout", 300)
    return _kube_config(double, **kwargs)  # type: ignore[no-any-return]


def pods_of_run(double: Any) -> list[str]:
    return [name for (ns, name) in double.pods if ns == NS]


# ---- transport: TLS, protocols, frames


async def test_tls_with_several_frames_per_record_and_v5(tls_double: Any) -> None:
    """wss with a self-signed CA; output split in 7-byte frames packed into one TLS record each
    (the client bug kubernetes-client/python#2414 stalls such replies when poll() is used)."""
    tls_double.pack_frames = 7
    cfg = kube_config(tls_double, heartbeat_interval=0)
    from kubernetes.stream import ws_client

    # recent clients (37.x) offer v5 first (and a 1.30+ server takes it); 30-32 offer only v4
    expected = "v5.channel.k8s.io" if hasattr(ws_client, "V5_CHANNEL_PROTOCOL") else V4
    async with cfg.build() as sb:
        assert sb.protocol == expected
        for i in range(5):
            t0 = time.monotonic()
            assert (await sb.run(f"echo reply-{i}")).output == f"reply-{i}\n"
            assert time.monotonic() - t0 < 5  # a stalled frame would wait for the call timeout
        data = bytes(range(256)) * 400
        await sb.write_file("/tmp/blob", data)
        assert await sb.read_file("/tmp/blob") == data
    assert tls_double.negotiated[-1] == expected


async def test_legacy_v4_server(double: Any) -> None:
    double.legacy_v4 = True
    async with kube_config(double, heartbeat_interval=0).build() as sb:
        assert sb.protocol == "v4.channel.k8s.io"
        assert (await sb.run("echo v4")).output == "v4\n"


async def test_writes_are_chunked_under_the_frame_limit(double: Any) -> None:
    """A real API server closes the stream on a frame over 32 MiB; scaled down here: a 3 MiB
    limit and a 6 MiB file (8 MiB of base64 in one RPC frame)."""
    double.frame_limit = 3 << 20
    payload = bytes(range(256)) * (6 << 12)
    async with kube_config(double, heartbeat_interval=0, max_ws_frame=1 << 20).build() as sb:
        first = len(double.frames_in)
        await sb.write_file("/tmp/big", payload)
        assert await sb.read_file("/tmp/big") == payload
        sizes = double.frames_in[first:]
        assert max(sizes) <= 1 << 20 and sum(sizes) > len(payload)
        assert (await sb.run("echo alive")).output == "alive\n"


async def test_one_oversized_frame_is_what_kills_the_stream(double: Any) -> None:
    """The failure the chunking prevents: a frame over the limit closes the stream (1009)."""
    double.frame_limit = 3 << 20
    async with kube_config(double, heartbeat_interval=0, max_ws_frame=8 << 20).build() as sb:
        with pytest.raises(SandboxConnectionError):
            await sb.write_file("/tmp/big", b"x" * (6 << 20))


# ---- idle timeouts, dropped and half-open streams


async def test_idle_timeout_without_heartbeat_closes_the_stream(double: Any) -> None:
    async with kube_config(double, heartbeat_interval=0).build() as sb:
        double.idle_timeout = 1.0  # after the start: a loaded machine may start slowly
        await asyncio.sleep(2.5)
        with pytest.raises(SandboxConnectionError):
            await sb.run("echo late")


async def test_heartbeat_keeps_an_idle_stream_open(double: Any) -> None:
    async with kube_config(double, heartbeat_interval=0.3, heartbeat_timeout=5).build() as sb:
        double.idle_timeout = 1.5
        await asyncio.sleep(4)
        assert (await sb.run("echo still here")).output == "still here\n"


async def test_black_hole_is_detected_by_the_heartbeat_and_close_does_not_block(
    double: Any,
) -> None:
    cfg = kube_config(double, heartbeat_interval=0.5, heartbeat_timeout=1.0)
    sb = await cfg.build().start()
    pending = asyncio.create_task(sb.run("sleep 100", timeout=100))
    await asyncio.sleep(0.3)
    assert double.drop_streams("blackhole", sb.name) == 1
    t0 = time.monotonic()
    with pytest.raises(SandboxConnectionError, match="half-open"):
        await pending
    assert time.monotonic() - t0 < 0.5 + 1.0 + 3  # interval + timeout, plus slack
    t0 = time.monotonic()
    await sb.close()  # the transport does not wait on the black hole; only the delete remains
    assert time.monotonic() - t0 < 10
    assert ("agentic-rollout", sb.name) not in double.pods


async def test_heartbeat_does_not_kill_a_healthy_stream_busy_with_a_large_write(
    double: Any,
) -> None:
    """A ping's reply queues behind a large write on the same stream; on a slow link that
    write outlasts the heartbeat timeout. The frames going out and the peer acknowledging
    our bytes are signs of life: the write completes."""
    double.stdin_rate = 2_000_000  # ~2 s for the write below; a reply-based heartbeat 1.3 s
    cfg = kube_config(double, heartbeat_interval=0.3, heartbeat_timeout=1.0)
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB: 4 MiB of base64 on the stream
    async with cfg.build() as sb:
        t0 = time.monotonic()
        await sb.write_file("/tmp/big.bin", data)
        took = time.monotonic() - t0
        assert sb.lost is None
        assert (await sb.stat("/tmp/big.bin")).size == len(data)
    assert took > 1.3  # the write did outlast the heartbeat's allowance (else nothing shown)


async def test_large_write_on_a_black_holed_stream_fails_within_the_heartbeat_bound(
    double: Any,
) -> None:
    """A write in flight when the path goes dark: no frame goes out, nothing is acknowledged,
    nothing comes back - half-open within interval + timeout + what the buffers may hold
    (16 MiB at 1 MB/s), not the write's own stall timeout (60 s + 1 s per MB: 92 s)."""
    cfg = kube_config(double, heartbeat_interval=0.5, heartbeat_timeout=1.0)
    sb = await cfg.build().start()
    try:
        double.stdin_rate = 2_000_000  # the write is still going when the path goes dark
        data = bytes(range(256)) * (24 * 4096)  # 24 MiB
        writing = asyncio.create_task(sb.write_file("/tmp/big.bin", data))
        await asyncio.sleep(1.0)
        assert double.drop_streams("blackhole", sb.name) == 1
        t0 = time.monotonic()
        with pytest.raises(SandboxConnectionError, match="half-open"):
            await asyncio.wait_for(writing, 120)
        assert time.monotonic() - t0 < 0.5 + 1.0 + 16.8 + 10  # the bound above, plus slack
        assert sb.lost is not None and "no sign of life" in sb.lost
    finally:
        await sb.close()
    assert (NS, sb.name) not in double.pods


async def test_black_holed_exec_handshake_fails_the_start_in_bounded_time(double: Any) -> None:
    """stream() has no connect timeout: the handshake is bounded by api_timeout per try and
    the retry budget overall; the pod is deleted and no API thread stays blocked."""
    from orchestrator.sandbox import kubernetes as k8s

    double.blackhole_handshakes = True
    cfg = kube_config(double, heartbeat_interval=0, api_timeout=2, api_retry_budget=3)
    sb = cfg.build()
    t0 = time.monotonic()
    with pytest.raises(SandboxStartError, match="exec handshake: no answer within 2s"):
        # without the bound this waits forever: the outer timeout turns that into a failure
        await asyncio.wait_for(sb.start(), 120)
    assert time.monotonic() - t0 < 60  # api_timeout per try within the 3 s budget, + the start
    assert (NS, sb.name) not in double.pods
    double.blackhole_handshakes = False
    # the abandoned handshake threads ended (websocket timeout): the API pool is free
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and k8s.api_pool()._work_queue.qsize():
        await asyncio.sleep(0.1)
    async with kube_config(double, heartbeat_interval=0).build() as again:
        assert (await again.run("echo ok")).output == "ok\n"


@pytest.mark.parametrize("how", ["clean", "reset"])
async def test_dropped_stream_fails_pending_calls_at_once(double: Any, how: str) -> None:
    async with kube_config(double, heartbeat_interval=0).build() as sb:
        pending = asyncio.create_task(sb.run("sleep 100", timeout=100))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        double.drop_streams(how, sb.name)
        with pytest.raises(SandboxConnectionError, match="pod phase Running"):
            await pending
        assert time.monotonic() - t0 < 6


async def test_api_server_restart_during_start(double: Any) -> None:
    """Connection refused for 1.5 s while the sandbox is being created: retried, not failed."""
    restarted = double.restart(1.5)
    async with kube_config(double, heartbeat_interval=0, api_retry_budget=20).build() as sb:
        assert (await sb.run("echo back")).output == "back\n"
    assert restarted.is_alive()  # still serving (serve_forever)


# ---- throttling and retries


async def test_429_and_503_with_retry_after_on_every_call(double: Any) -> None:
    from tests.k8s_double import Fault

    double.faults += [
        Fault(429, retry_after=1, method="POST", path_contains="/pods", count=2),
        Fault(503, retry_after=1, method="GET", path_contains="/pods/", count=2),
        Fault(429, retry_after=1, path_contains="/exec", count=1),
        Fault(503, method="DELETE", count=1),
    ]
    sb = kube_config(double, heartbeat_interval=0).build()
    async with sb:
        assert (await sb.run("echo ok")).output == "ok\n"
    assert double.faults == []  # every fault was met and retried through
    assert (NS, sb.name) not in double.pods


async def test_create_that_commits_then_504s_is_adopted_not_duplicated(double: Any) -> None:
    double.commit_then_504 = 1
    before = set(pods_of_run(double))
    sb = kube_config(double, heartbeat_interval=0).build()
    async with sb:
        mine = [n for n in pods_of_run(double) if n not in before]
        assert mine == [sb.name]
        notes = double.pods[(NS, sb.name)]["metadata"]["annotations"]
        assert notes[ANNOTATION_SANDBOX_ID] == sb.sandbox_id
        assert (await sb.run("echo adopted")).output == "adopted\n"
    assert set(pods_of_run(double)) == before


async def test_409_of_someone_elses_pod_gets_a_new_name(double: Any) -> None:
    cfg = kube_config(double, heartbeat_interval=0)
    first = await cfg.build().start()
    try:
        second = cfg.build()
        second.name = first.name  # the name is taken, by a pod that is not ours
        async with second:
            assert second.name != first.name
            assert (await second.run("echo renamed")).output == "renamed\n"
    finally:
        await first.close()


# ---- pod start: slow phases, image pulls, admission, capacity


async def test_image_pull_backoff_tolerated_until_the_pull_succeeds(double: Any) -> None:
    from .conftest import SANDBOX_IMAGE

    double.pull_backoff[SANDBOX_IMAGE] = 2.0
    double.start_delay = 0.5
    async with kube_config(double, heartbeat_interval=0, image_pull_timeout=30).build() as sb:
        assert (await sb.run("echo pulled")).output == "pulled\n"


async def test_image_that_never_pulls_fails_at_the_pull_deadline_with_the_error(
    double: Any,
) -> None:
    sb = kube_config(double, image="agentic-rollout/not-there:1", image_pull_timeout=1.5).build()
    t0 = time.monotonic()
    with pytest.raises(
        SandboxStartError,
        match=r"image 'agentic-rollout/not-there:1' did not pull within 1.5s "
        r"\(ErrImagePull: .*not-there.*Failed to pull image",
    ):
        await sb.start()
    assert time.monotonic() - t0 < 10
    assert (NS, sb.name) not in double.pods


async def test_pod_security_rejection_is_not_reported_as_rbac(double: Any) -> None:
    double.pod_security = "baseline"
    sb = kube_config(double, pod_template={"spec": {"hostNetwork": True}}).build()
    with pytest.raises(SandboxStartError, match=r"PodSecurity admission.*hostNetwork=true") as err:
        await sb.start()
    assert "RBAC" not in str(err.value)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'pods "x" is forbidden: exceeded quota: compute, requested: cpu=1, used: cpu=8, '
            "limited: cpu=8",
            r"rejected by a ResourceQuota: .*exceeded quota: compute",
        ),
        (
            'admission webhook "policy.example.com" denied the request: images must be signed',
            r"create pods forbidden \(admission webhook\?\): .*images must be signed",
        ),
    ],
)
async def test_quota_and_webhook_rejections_are_told_apart_from_rbac(
    double: Any, message: str, expected: str
) -> None:
    double.deny_create_pods = message
    sb = kube_config(double, heartbeat_interval=0).build()
    with pytest.raises(SandboxStartError, match=expected) as err:
        await sb.start()
    assert "RBAC" not in str(err.value)
    assert not [name for (ns, name) in double.pods if name == sb.name]


async def test_ephemeral_storage_capacity_leaves_the_next_pod_pending(double: Any) -> None:
    double.ephemeral_capacity = 15 << 30  # one 10Gi sandbox fits, two do not
    async with kube_config(double, heartbeat_interval=0).build():
        with pytest.raises(SandboxStartError, match="Insufficient ephemeral-storage"):
            await kube_config(double, startup_timeout=1.5).build().start()


async def test_pending_pod_starts_once_storage_is_freed(double: Any) -> None:
    """The backend's pending path: a pod that does not fit waits (Unschedulable is not a
    failure before startup_timeout) and starts when a finished sandbox frees its storage."""
    double.ephemeral_capacity = 15 << 30  # one 10Gi sandbox fits, two do not
    first = await kube_config(double, heartbeat_interval=0).build().start()
    second = kube_config(double, heartbeat_interval=0).build()
    starting = asyncio.create_task(second.start())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pod = double.pods.get((NS, second.name)) or {}
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c.get("reason") == "Unschedulable" for c in conditions):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the second pod was never reported Unschedulable")
        await asyncio.sleep(1.0)  # the backend keeps waiting on a pending pod
        assert not starting.done()
        await first.close()
        await asyncio.wait_for(starting, 120)
        assert (await second.run("echo ok")).output == "ok\n"
    finally:
        await first.close()
        if not starting.done():
            starting.cancel()
        await second.close()
    assert (NS, second.name) not in double.pods


# ---- graceful delete, eviction, deadline, start errors


async def test_teardown_deletes_at_once_even_where_deletes_are_graceful(double: Any) -> None:
    double.graceful = True
    async with kube_config(double, heartbeat_interval=0).build() as sb:
        name = sb.name
    assert (NS, name) not in double.pods


async def test_eviction_mid_call_names_the_eviction(double: Any) -> None:
    async with kube_config(double, heartbeat_interval=0).build() as sb:
        pending = asyncio.create_task(sb.run("sleep 100", timeout=100))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(double.evict, NS, sb.name, "The node was low on resource: memory.")
        with pytest.raises(SandboxConnectionError, match="Evicted: The node was low on resource"):
            await pending


async def test_active_deadline_ends_the_pod(double: Any) -> None:
    # the deadline counts from the pod's creation: on a slow Docker it may end the start
    with pytest.raises((SandboxConnectionError, SandboxStartError), match="DeadlineExceeded"):
        async with kube_config(double, heartbeat_interval=0, ttl=10).build() as sb:
            await sb.run("sleep 60", timeout=60)


async def test_exec_start_error_arrives_on_channel_3_and_is_reported(double: Any) -> None:
    sb = kube_config(double, python="python-nope").build()
    with pytest.raises(SandboxStartError, match=r"exec status: .*python-nope"):
        await sb.start()
    assert (NS, sb.name) not in double.pods


async def test_exec_container_name_is_checked_and_taken_from_the_spec(double: Any) -> None:
    sb = kube_config(double, heartbeat_interval=0).build()
    sb.container = "wrong"  # what a hard-coded name does on a pod named otherwise (kodo)
    async with sb:
        assert sb.container == "sandbox"  # taken from the running pod's spec
        assert (await sb.run("echo named")).output == "named\n"
        with pytest.raises(SandboxStartError, match="container wrong is not valid"):
            sb.container = "wrong"
            await sb._attach()


# ---- starting pods do not starve running ones


async def test_running_sandbox_answers_while_many_pods_are_starting(double: Any) -> None:
    double.start_delay = 4.0
    async with kube_config(double, heartbeat_interval=0).build() as running:
        starting = [
            asyncio.create_task(kube_config(double, heartbeat_interval=0).build().start())
            for _ in range(12)
        ]
        await asyncio.sleep(0.5)  # they are all polling their Pending pods now
        done_at = []
        for i in range(20):
            await running.write_file(f"/tmp/f{i}", f"{i}")
            done_at.append(time.monotonic())
        assert not any(t.done() for t in starting)  # every call finished before any pod ran
        for sb in await asyncio.gather(*starting):
            await sb.close()


# ---- configuration and ownership


def test_kubeconfig_is_loaded_once_per_process(kube_double: Any) -> None:
    cfg = kube_config(kube_double)
    assert load_configuration(cfg) is load_configuration(cfg.model_copy(update={"ttl": 60}))


def test_kubeconfig_that_does_not_load_is_a_clear_error(tmp_path: Any) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: [")
    with pytest.raises(SandboxStartError, match=r"cannot load the Kubernetes configuration from"):
        load_configuration(KubernetesSandboxConfig(kubeconfig=str(bad)))


def test_owner_reference_to_the_orchestrator_pod_in_cluster(monkeypatch: Any) -> None:
    import kubernetes_validate

    monkeypatch.setenv("POD_NAME", "agentic-rollout-run-abc12")
    monkeypatch.setenv("POD_UID", "0f0e0d0c-0000-1111-2222-333344445555")
    pod = KubernetesSandboxConfig(in_cluster=True).pod_manifest("agentic-x", "id1")
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    assert pod["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "agentic-rollout-run-abc12",
            "uid": "0f0e0d0c-0000-1111-2222-333344445555",
        }
    ]
    assert "ownerReferences" not in KubernetesSandboxConfig().pod_manifest("agentic-x")["metadata"]


# ---- direct TCP: an authenticated channel


async def test_direct_tcp_refuses_a_second_client_without_the_secret(double: Any) -> None:
    from orchestrator.local_llm import free_port

    port = free_port()
    cfg = kube_config(
        double,
        connect="tcp",
        tcp_port=port,
        tcp_listen_host="127.0.0.1",
        heartbeat_interval=0,
        pod_template={"spec": {"hostNetwork": True}},
    )
    async with cfg.build() as sb:
        assert (await sb.run("echo first")).output == "first\n"

        def intruder(proof: str | None) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                f = s.makefile("rb")
                hello = json.loads(f.readline())
                assert "challenge" in hello
                if proof is None:  # no handshake at all: straight to an RPC
                    s.sendall(b'{"id":"x-1","method":"exec","params":{"command":"id"}}\n')
                else:
                    s.sendall((json.dumps({"auth": proof}) + "\n").encode())
                return f.read()  # everything until the agent drops us

        assert await asyncio.to_thread(intruder, "0" * 64) == b""
        assert await asyncio.to_thread(intruder, None) == b""
        assert (await sb.run("echo still mine")).output == "still mine\n"


async def test_api_rate_bounds_every_request_of_the_pod_backend(double: Any) -> None:
    """Creates, status polls, exec handshakes, deletes and the retries of 429s all wait for
    the process-wide API limit: the double never counts more than api_rate in any second,
    and counts exactly the requests the limiter let out."""
    from bench.control_plane import max_window
    from orchestrator import admission
    from tests.k8s_double import Fault

    ctl = admission.controller("kubernetes")
    saved = ctl.settings
    admission.configure("kubernetes", {"api_rate": 4, "api_burst": 2})
    sent: list[float] = []
    ctl.api.record = sent
    double.faults.append(Fault(429, retry_after=1, method="POST", path_contains="/pods", count=2))
    first = len(double.request_times)
    try:

        async def one() -> None:
            async with kube_config(double, heartbeat_interval=0).build() as sb:
                assert (await sb.run("echo ok")).output.strip() == "ok"

        await asyncio.gather(*(one() for _ in range(4)))
    finally:
        ctl.api.record = None
        ctl.configure(saved)
    seen = double.request_times[first:]
    assert len(seen) == len(sent) >= 4 * 3  # create, a poll, the exec handshake, delete each
    assert max_window(seen) <= 4


@pytest.mark.parametrize("heartbeat", [True, False])
async def test_warm_pool_across_an_idle_timeout(double: Any, heartbeat: bool) -> None:
    """A pooled sandbox idles until someone needs it: with the heartbeat its stream outlives
    the server's idle deadline and it is handed out; without, the closed stream is noticed
    and a fresh sandbox is handed out instead of a dead one."""
    from orchestrator.sandbox.pool import WarmPool

    beat = {"heartbeat_interval": 0.3, "heartbeat_timeout": 5} if heartbeat else {}
    values = {
        "type": "kubernetes",
        **kube_config(double, heartbeat_interval=0).model_dump(exclude_unset=True),
        **beat,
    }
    async with WarmPool(1, max_starting=1) as pool:
        pool.warm(values)
        deadline = time.monotonic() + 120
        while pool.ready(values) < 1:
            assert time.monotonic() < deadline, "the pool never filled"
            await asyncio.sleep(0.05)
        double.idle_timeout = 1.0
        await asyncio.sleep(2.5)
        double.idle_timeout = None
        sandbox = await pool.acquire(values)
        try:
            assert (await sandbox.run("echo after idle")).output == "after idle\n"
        finally:
            await sandbox.close()
        if heartbeat:
            assert (pool.stats.hits, pool.stats.discarded) == (1, 0)
        else:  # the dead one skipped; the fresh one a refill or a start of its own
            assert pool.stats.discarded == 1 and pool.stats.hits + pool.stats.misses == 1
