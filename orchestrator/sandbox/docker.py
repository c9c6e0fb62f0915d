"""Docker backend: a container per trajectory whose main process is the in-sandbox agent.

Lifecycle (all blocking SDK calls run in threads): create the container with safe defaults
(network none, cap_drop ALL, no-new-privileges, memory/cpu/pids limits, labels for the
reaper) running ``python3 -c BOOTSTRAP`` as its PID 1 (the agent reaps orphans as init);
attach to its stdin/stdout; start it;
stream the agent's source in over that same socket (any image with python3 works: no rebuild,
no network, no put_archive); wait for its ping. No ``docker exec`` is involved: an exec costs
~50 ms on its own, the container's own stream is free. With StdinOnce the agent sees EOF when
the orchestrator goes away, so the container stops even after a SIGKILL; ``gc.py`` removes it.
The container is removed in ``close()``, which ``async with`` always calls.

Transport (``transport: socket``, the default): dockerd stays out of the data path. The host
listens on a unix socket in a per-sandbox directory (``transport.UnixChannel``) bind-mounted
read-only at ``/.agentic-rollout``; the agent gets a per-sandbox secret on the attach stream,
connects, proves it, and says so on the attach stream; the host stops listening and the RPC
runs on that socket (the attach stream then only carries stderr). Where the directory cannot be
made or mounted (a remote daemon, a daemon that sees another filesystem, a runtime directory
of the wrong owner) it falls back to the attach stream and warns once; ``info()`` and the
diagnosis say which transport a sandbox uses.

Disk: the writable layer is capped by ``disk`` (``storage_opt size``: btrfs, zfs, overlay2 on
xfs with ``pquota``). On an engine that cannot enforce it, an explicit ``disk`` is a
ConfigError naming the storage driver; the default warns once per daemon and runs unlimited.
On btrfs the limit means "what this sandbox writes" only under simple quotas, which dockerd
20.10 loses on a restart: before each create with a limit the quota mode is read from this
host's sysfs and anything else is a ConfigError naming the fix (``btrfs_quota``).
Logs: the ``local`` log driver with ``log_max_size``, so what the agent writes to its stdout
and stderr can never fill the host's disk (``_diagnose`` still reads the tail).

Each sandbox owns its own ``docker.APIClient``: a shared client's connection pool serialises
hundreds of concurrent sandboxes and ties their lifetimes together.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator.exceptions import ConfigError, SandboxStartError
from orchestrator.sandbox import btrfs_quota
from orchestrator.sandbox.base import ManagedSandboxConfig, Sandbox
from orchestrator.sandbox.docker_http import (
    DockerHTTP,
    DockerHTTPError,
    DockerURLError,
    unix_socket_path,
)
from orchestrator.sandbox.labels import (
    LABEL_EXPIRES,
    LABEL_KIND,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_RUN,
    owner_process_labels,
)
from orchestrator.sandbox.transport import (
    CHANNEL_MOUNT,
    CHANNEL_SOCKET,
    DockerAttachTransport,
    SocketTransport,
    Transport,
    UnixChannel,
    runtime_root,
)

log = logging.getLogger(__name__)

_version_lock = threading.Lock()
_api_versions: dict[str, str] = {}
#: daemon URL -> storage driver that refused a disk limit (warned once, then not asked again)
_disk_unsupported: dict[str, str] = {}
#: daemon URL -> (storage driver, data root), from `docker info` once per daemon
_engine_storage: dict[str, tuple[str, str]] = {}
#: daemon URLs warned that the btrfs quota mode of their data root cannot be read here
_disk_unverified: set[str] = set()
#: daemon URLs warned that the default disk limit misses a read_only sandbox's workdir volume
_disk_read_only_warned: set[str] = set()
#: Default size of a sandbox's writable layer (README, "Sandboxes").
DEFAULT_DISK = "10g"
#: why sandboxes fell back to the attach stream, each said once per process
_fallbacks_warned: set[str] = set()


def daemon_url(base_url: str | None = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_api(base_url: str | None = None, timeout: float = 120.0) -> Any:
    """A low-level Docker client; the API version is negotiated once per daemon."""
    import docker

    url = daemon_url(base_url)
    with _version_lock:
        version = _api_versions.get(url)
    if version is None:
        probe = docker.APIClient(base_url=url, version="auto", timeout=timeout)
        version = str(probe.api_version)
        probe.close()
        with _version_lock:
            _api_versions[url] = version
    client = docker.APIClient(base_url=url, version=version, timeout=timeout)
    # never look for HTTP proxies in the environment: requests did so on every call (a third
    # of the CPU of each Docker API call) and a local socket is never proxied
    client.trust_env = False
    return client


async def remove_snapshot_image(image: str, *, docker_host: str | None) -> bool:
    """Remove a snapshot image (orchestrator/sandbox/fork.py): True once it is gone, False when
    a later snapshot's image depends on it; in use or daemon down: logged, ``gc`` reaps it."""

    def remove() -> bool:
        api = docker_api(docker_host)
        try:
            api.remove_image(image, force=False, noprune=False)
        except Exception as exc:  # in use, daemon down: gc reaps it later
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                return True  # pruned with the image committed on top of it
            if "dependent child images" in str(exc):
                return False
            log.warning("snapshot image %s not removed (%s); gc reaps it", image, exc)
        finally:
            api.close()
        return True

    return await asyncio.to_thread(remove)


class DockerSandboxConfig(ManagedSandboxConfig):
    """Settings of the Docker backend; ``build()`` makes a sandbox (shared fields: the base)."""

    type: Literal["docker"] = "docker"
    image: str = "agentic-rollout/sandbox:latest"
    network: str = Field("none", description="Docker network mode; 'none' unless a task needs more")
    memory: str = Field("2g", description="memory limit (docker syntax: 512m, 2g)")
    cpus: float = Field(1.0, gt=0, description="CPU quota in cores")
    pids_limit: int = Field(512, gt=0, description="max processes (fork bombs stop here)")
    user: str | None = Field(None, description="user for the agent and commands, e.g. '1000:1000'")
    workdir: str | None = Field(None, description="working directory (created if missing)")
    init: bool = Field(
        False,
        description="run docker-init as PID 1; by default the agent is PID 1 itself (it reaps "
        "orphans, and `kill -9 -1` inside the sandbox cannot kill it)",
    )
    runtime: str | None = Field(None, description="OCI runtime, e.g. 'runsc' for gVisor")
    read_only: bool = Field(
        False,
        description="read-only root filesystem; /tmp becomes a tmpfs and the workdir an anonymous "
        "volume holding the image's content (removed with the container)",
    )
    tmpfs: dict[str, str] = Field(default_factory=dict, description="path -> mount options")
    tmp_size: str = Field("512m", description="size of the /tmp tmpfs when read_only")
    docker_host: str | None = Field(None, description="daemon URL; default DOCKER_HOST / socket")
    name_prefix: str = "agentic"
    disk: str | None = Field(
        DEFAULT_DISK,
        description="size limit of the container's writable layer (storage_opt size); "
        "None: unlimited. Set explicitly, an engine that cannot enforce it is a ConfigError",
    )
    log_max_size: str = Field(
        "1m", description="most bytes dockerd keeps of the agent's stdout/stderr (local driver)"
    )
    transport: Literal["socket", "attach"] = Field(
        "socket",
        description="'socket': RPC over a unix socket in a per-sandbox host directory "
        "bind-mounted into the sandbox (dockerd out of the data path; falls back to 'attach', "
        "with a warning, where it cannot be used); 'attach': over the container's attach stream",
    )
    runtime_dir: str | None = Field(
        None,
        description="host directory (0700, ours) for the sandboxes' socket directories; "
        "default $XDG_RUNTIME_DIR/agentic-rollout or /tmp/agentic-rollout-<uid>",
    )

    def build(self, **overrides: Any) -> DockerSandbox:
        return DockerSandbox(self.with_overrides(overrides))


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_memory(value: str) -> int:
    """Docker-style size ('512m', '2g', '1.5GiB', '1048576') to bytes."""
    m = _MEMORY.match(value)
    if m is None:
        raise ConfigError(f"invalid memory size {value!r} (use e.g. 512m or 2g)")
    return int(
        float(m.group(1))
        * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    )


def _storage_opt(container_config: dict[str, Any]) -> Any:
    return container_config.get("HostConfig", {}).get("StorageOpt")


def _bind_refused(message: str) -> bool:
    """Whether a create error is the engine refusing the channel's bind mount ("invalid mount
    config for type "bind": bind source path does not exist", ...)."""
    text = message.lower()
    return "bind" in text and ("mount" in text or "source" in text)


def _storage_opt_refused(message: str, container_config: dict[str, Any]) -> bool:
    """Whether a create error is the engine refusing the disk limit (overlay2 without xfs
    pquota: "--storage-opt is supported only for overlay over xfs with 'pquota' mount
    option"; other drivers: "... not supported" / "Storage Opt ... ")."""
    text = message.lower()
    return bool(_storage_opt(container_config)) and (
        "storage-opt" in text or "storage opt" in text or "storageopt" in text
    )


class DockerSandbox(Sandbox):
    backend: ClassVar[str] = "docker"

    def __init__(self, config: DockerSandboxConfig) -> None:
        name = f"{config.name_prefix}-{config.run_id}-{uuid.uuid4().hex[:8]}"
        super().__init__(name=name, startup_timeout=config.startup_timeout, limits=config.limits)
        self.config = config
        self.container_id: str | None = None
        self._api: Any = None
        self._attach_sock: Any = None
        self._http: DockerHTTP | None = None
        self._channel: UnixChannel | None = None
        #: the RPC's transport: "socket" (direct) or "attach"; with why, when it fell back
        self.transport_kind = "attach"
        self.transport_note: str | None = None
        self._memory = parse_memory(config.memory)
        self._disk = parse_memory(config.disk) if config.disk else None
        parse_memory(config.log_max_size)  # a typo fails here, not at create
        #: seconds spent in container create + start alone
        self.raw_start_seconds: float | None = None

    def describe(self) -> str:
        return f"docker sandbox {self.name} (image {self.config.image})"

    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "1",
            LABEL_OWNER: self.config.owner,
            LABEL_RUN: self.config.run_id,
            LABEL_EXPIRES: str(int(time.time() + self.config.ttl)),
            **owner_process_labels(),
            **self.config.labels,
        }

    async def _open(self) -> Transport:
        self._channel = self._make_channel()
        try:
            sock = await asyncio.to_thread(self._create_and_attach)
        except (SandboxStartError, ConfigError):
            raise
        except DockerURLError as exc:
            raise ConfigError(str(exc)) from exc
        except Exception as exc:  # requests/urllib3/socket errors: the daemon is not answering
            host = self.config.docker_host or "the local Docker socket"
            raise SandboxStartError(
                f"{self.describe()}: Docker daemon unreachable at {host}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        attach = await DockerAttachTransport.from_socket(sock)
        if self._channel is None:
            return attach
        return await self._connect_direct(attach, self._channel)

    def _make_channel(self) -> UnixChannel | None:
        """The per-sandbox socket directory, or None (attach stream) with the reason noted."""
        if self.config.transport != "socket":
            return None
        if self.agent_override is not None:
            # another agent (tests of a compromised one) speaks on the attach stream it was
            # written for; the RPC reader and its limits are the same code on both transports
            self.transport_note = "a replacement agent (agent_override) uses the attach stream"
            return None
        if unix_socket_path(daemon_url(self.config.docker_host)) is None:
            self._fall_back("remote", "the Docker daemon is not on a local unix socket")
            return None
        try:
            return UnixChannel(runtime_root(self.config.runtime_dir), self.name)
        except OSError as exc:
            self._fall_back("dir", f"cannot create the socket directory: {exc}")
            return None

    def _fall_back(self, kind: str, reason: str) -> None:
        self.transport_kind = "attach"
        self.transport_note = f"fell back to the attach stream: {reason}"
        key = f"{daemon_url(self.config.docker_host)}:{kind}"
        if key not in _fallbacks_warned:
            _fallbacks_warned.add(key)
            log.warning(
                "Docker sandboxes use the attach stream instead of a direct socket (%s); "
                "every RPC byte goes through dockerd",
                reason,
            )

    async def _connect_direct(
        self, attach: DockerAttachTransport, channel: UnixChannel
    ) -> Transport:
        """Stream the agent and the secret in; the agent says on the attach stream whether it
        connected; if so, take its connection (proving the secret) and stop listening."""
        await attach.write(b"".join(self.agent_payload()) + channel.secret_line)
        self.agent_injected = True
        try:
            line = await asyncio.wait_for(attach.read_line(), self.startup_timeout)
        except asyncio.TimeoutError:
            line = b""
        if not line:  # the agent died or hangs: start()'s ping reports it with a diagnosis
            channel.close()
            return attach
        try:
            status = json.loads(line)
        except ValueError:
            status = None
        if not isinstance(status, dict) or "direct" not in status:
            channel.close()
            raise SandboxStartError(
                f"{self.describe()}: the agent's first line is not its transport status: "
                f"{line[:200]!r}"
            )
        if status["direct"] is not True:
            channel.close()
            self._fall_back("connect", f"the agent could not connect: {status.get('reason')}")
            return attach
        try:
            reader, writer = await channel.accept(timeout=10.0)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SandboxStartError(
                f"{self.describe()}: the agent said it connected to {channel.path} but no "
                f"connection proved the sandbox's secret: {exc}"
            ) from exc
        self.transport_kind = "socket"
        return SocketTransport(reader, writer, attach)

    async def info(self) -> dict[str, Any]:
        result = await super().info()
        result["transport"] = self.transport_kind
        if self.transport_note:
            result["transport_note"] = self.transport_note
        return result

    def host_config(self, api: Any) -> Any:
        """The isolation defaults and limits of this sandbox (also the benchmark's baseline)."""
        cfg = self.config
        return api.create_host_config(
            network_mode=cfg.network,
            mem_limit=self._memory,
            memswap_limit=self._memory,
            nano_cpus=int(cfg.cpus * 1e9),
            pids_limit=cfg.pids_limit,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=cfg.init,
            runtime=cfg.runtime,
            read_only=cfg.read_only,
            tmpfs=self._tmpfs() or None,
            mounts=self._mounts(),
            storage_opt=self._storage_opt(),
            log_config={
                "Type": "local",
                "Config": {"max-size": cfg.log_max_size, "max-file": "1", "compress": "false"},
            },
        )

    def _storage_opt(self) -> dict[str, str] | None:
        if self._disk is None or daemon_url(self.config.docker_host) in _disk_unsupported:
            return None
        return {"size": str(self._disk)}

    def _check_disk_enforced(self, api: Any) -> None:
        """Before a create with a disk limit: on btrfs the limit counts only what the sandbox
        writes under simple quotas (``btrfs_quota``); any other mode is a ConfigError, raised
        before the create so that dockerd never gets to turn full qgroups on itself. With
        ``read_only`` the workdir is an anonymous volume, which the limit does not cover."""
        url = daemon_url(self.config.docker_host)
        if self.config.read_only and self.config.workdir:
            self._disk_not_covered(url)
        storage = _engine_storage.get(url)
        if storage is None:
            info = api.info()
            storage = (str(info.get("Driver", "")), str(info.get("DockerRootDir", "")))
            with _version_lock:
                _engine_storage[url] = storage
        driver, root = storage
        if driver != "btrfs":
            return  # the other drivers refuse a size they cannot enforce (_disk_refused)
        mode = btrfs_quota.quota_mode(root)
        if mode == "squota":
            return
        if mode is None:  # an engine on another host: its limits are trusted as they are
            with _version_lock:
                first = url not in _disk_unverified
                _disk_unverified.add(url)
            if first:
                log.warning(
                    "cannot read from this host whether the btrfs quotas under %s (data root "
                    "of %s) are simple quotas; its disk limits count the image too unless they "
                    "are (run scripts/setup.sh on that host)",
                    root,
                    url,
                )
            return
        disk = str(self.config.disk)
        raise ConfigError(f"{self.describe()}: {btrfs_quota.not_enforced(mode, root, disk)}")

    def _disk_refused(self, api: Any, detail: str) -> None:
        """The engine cannot enforce ``disk``: an explicit limit is a configuration error; the
        default warns once per daemon (the sandbox runs without a disk limit)."""
        try:
            driver = str(api.info().get("Driver", "unknown"))
        except Exception:
            driver = "unknown"
        if "disk" in self.config.model_fields_set:
            raise ConfigError(
                f"disk={self.config.disk!r} cannot be enforced: the Docker engine's storage "
                f"driver {driver!r} refuses a size limit ({detail}); use btrfs, zfs or "
                "overlay2 on xfs with pquota (scripts/setup.sh), or set disk: null"
            )
        url = daemon_url(self.config.docker_host)
        with _version_lock:
            first = url not in _disk_unsupported
            _disk_unsupported[url] = driver
        if first:
            log.warning(
                "Docker storage driver %r cannot limit a container's disk (%s): sandboxes on "
                "%s run WITHOUT the default %s disk limit; a command can fill the host's disk",
                driver,
                detail,
                url,
                DEFAULT_DISK,
            )

    def _disk_not_covered(self, url: str) -> None:
        detail = (
            f"with read_only, the workdir {self.config.workdir!r} is an anonymous volume "
            "outside the writable layer, which the disk limit does not cover"
        )
        if "disk" in self.config.model_fields_set:
            raise ConfigError(
                f"disk={self.config.disk!r} cannot be enforced: {detail}; drop read_only or "
                "workdir, or set disk: null"
            )
        with _version_lock:
            first = url not in _disk_read_only_warned
            _disk_read_only_warned.add(url)
        if first:
            log.warning(
                "sandboxes on %s: %s - a command can fill the host's disk there", url, detail
            )

    def _tmpfs(self) -> dict[str, str]:
        tmpfs = dict(self.config.tmpfs)
        if self.config.read_only:
            tmpfs.setdefault("/tmp", f"rw,nosuid,nodev,size={self.config.tmp_size}")
        return tmpfs

    def _mounts(self) -> list[Any] | None:
        from docker.types import Mount

        mounts = []
        if self.config.read_only and self.config.workdir:
            # an anonymous volume: Docker fills it with the image's content at that path
            mounts.append(Mount(target=self.config.workdir, source=None, type="volume"))
        if self._channel is not None:
            # read-only: the sandbox can connect to the socket, never add or replace a file
            mounts.append(
                Mount(
                    target=CHANNEL_MOUNT,
                    source=str(self._channel.dir),
                    type="bind",
                    read_only=True,
                )
            )
        return mounts or None

    def _command(self) -> list[str]:
        argv = self.agent_argv(self.config.python)
        if self._channel is not None:
            argv += ["--connect", f"{CHANNEL_MOUNT}/{CHANNEL_SOCKET}"]
        return argv

    def _container_config(self, api: Any) -> dict[str, Any]:
        cfg = self.config
        container_config: dict[str, Any] = api.create_container_config(
            image=cfg.image,
            command=self._command(),
            user=cfg.user or "",
            working_dir=cfg.workdir,
            environment=cfg.env or None,
            labels=self.labels(),
            host_config=self.host_config(api),
            network_disabled=cfg.network == "none",
            stdin_open=True,
        )
        container_config["StdinOnce"] = True  # stdin closes when we detach: the agent exits
        return container_config

    def _create_and_attach(self) -> socket.socket:
        """Create, attach, start: one code path, plain HTTP on the daemon's socket (see
        docker_http for why not docker-py, which only builds the configs here)."""
        cfg = self.config
        self._api = api = docker_api(cfg.docker_host)
        if self._storage_opt() is not None:
            self._check_disk_enforced(api)
        container_config = self._container_config(api)
        self._http = http = DockerHTTP(daemon_url(cfg.docker_host), api.api_version)
        t0 = time.perf_counter()
        try:
            self.container_id = self._create(http, api, container_config)
        except DockerHTTPError as exc:
            if exc.status == 404 and "image" in exc.message.lower():
                raise SandboxStartError(self._image_missing(exc.message)) from exc
            raise SandboxStartError(f"{self.describe()}: create failed: {exc.message}") from exc
        try:
            self._attach_sock = sock = http.attach(self.container_id)
            http.start(self.container_id)
        except DockerHTTPError as exc:
            raise SandboxStartError(self._start_failure(exc)) from exc
        self.raw_start_seconds = time.perf_counter() - t0
        return sock

    def _create(self, http: DockerHTTP, api: Any, container_config: dict[str, Any]) -> str:
        """Create the container; what the engine refuses but we can do without (the disk
        limit's default, the channel's bind mount) is dropped and the create retried."""
        for _ in range(3):
            try:
                return http.create(container_config, self.name)
            except DockerHTTPError as exc:
                if _storage_opt_refused(exc.message, container_config):
                    self._disk_refused(api, exc.message)
                    del container_config["HostConfig"]["StorageOpt"]
                elif self._channel is not None and _bind_refused(exc.message):
                    # a daemon that does not see our filesystem (another host, a VM, a
                    # different mount namespace): no direct socket, the attach stream works
                    self._channel.close()
                    self._channel = None
                    self._fall_back("bind", f"the engine cannot mount it: {exc.message}")
                    container_config = self._container_config(api)
                else:
                    raise
        return http.create(container_config, self.name)

    def _image_missing(self, detail: object) -> str:
        return (
            f"image {self.config.image!r} not found locally and cannot be pulled here; build it "
            f"(agentic-rollout build-images) or pass an existing image: {detail}"
        )

    def _start_failure(self, exc: Exception) -> str:
        text = str(getattr(exc, "explanation", None) or exc)
        if "executable file not found" in text or "no such file or directory" in text.lower():
            return (
                f"image {self.config.image!r} has no {self.config.python!r} on PATH; the "
                f"in-sandbox agent needs python3 >= 3.8 in the image ({text})"
            )
        return f"{self.describe()}: start failed: {text}"

    def _inspect_state(self) -> dict[str, Any] | None:
        if self._api is None or self.container_id is None:
            return None
        try:
            state: dict[str, Any] = self._api.inspect_container(self.container_id)["State"]
            return state
        except Exception:
            return None

    async def _diagnose(self) -> str | None:
        return await asyncio.to_thread(self._diagnose_sync)

    def _diagnose_sync(self) -> str | None:
        state = self._inspect_state()
        if self.transport_kind == "socket":
            # the socket closes the instant the agent dies, before dockerd has seen the exit
            # (the attach stream only ended after it): wait for it, within the RPC client's
            # budget for a diagnosis (rpc.DIAGNOSE_S)
            for _ in range(30):
                if state is None or not state.get("Running"):
                    break
                time.sleep(0.05)
                state = self._inspect_state()
        if state is None:
            return f"container {self.name} no longer exists"
        if state.get("Running"):
            return (
                f"the stream to container {self.name} closed while it still runs "
                f"(transport: {self.transport_kind})"
            )
        code = state.get("ExitCode")
        oom = " (OOM killed)" if state.get("OOMKilled") else ""
        status = state.get("Status")
        text = f"container {self.name} is not running: status {status}, exit code {code}{oom}"
        text += f" (transport: {self.transport_kind})"
        logs = self._logs_tail()
        if code == 127 or ("exec " in logs and "failed" in logs):
            text = (
                f"image {self.config.image!r} has no {self.config.python!r} to run the "
                f"in-sandbox agent (needs python3 >= 3.8): {text}"
            )
        if logs:
            text += f"; container log: {logs}"
        return text

    def _logs_tail(self) -> str:
        try:
            # stderr only: stdout is the RPC stream, whose frames say nothing about a death
            raw = self._api.logs(self.container_id, stdout=False, stderr=True, tail=5)
        except Exception:
            return ""
        return str(raw.decode("utf-8", "replace")).strip()[-500:]

    async def _teardown(self) -> None:
        await asyncio.to_thread(self._remove)

    def _remove(self) -> None:
        if self._attach_sock is not None:
            try:
                self._attach_sock.close()
            except OSError:
                pass
        if self._channel is not None:
            self._channel.close()
        if self._api is None:
            return
        try:
            if self.container_id is not None and self._http is not None:
                try:
                    self._http.remove(self.container_id)
                except DockerHTTPError as exc:
                    if exc.status != 404:
                        raise
        except Exception as exc:  # daemon down or restarting: never mask the trajectory's outcome
            if "already in progress" not in str(exc):
                log.warning(
                    "could not remove %s (%s: %s); `agentic-rollout gc` will reap it",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
        finally:
            if self._http is not None:
                self._http.close()
            self._api.close()

    async def commit_snapshot(self) -> tuple[str, Callable[[str], Awaitable[bool]]]:
        """``docker commit`` of this container (paused meanwhile, so the layer is consistent):
        the image id of a snapshot (orchestrator/sandbox/fork.py), labelled like a sandbox
        plus ``agentic-rollout.kind=snapshot`` so ``gc`` reaps it, and the coroutine that
        removes it (fork.py imports no backend)."""
        if self._api is None or self.container_id is None:
            raise SandboxStartError(f"{self.describe()} has no container to snapshot")
        labels = {**self.labels(), LABEL_KIND: "snapshot"}
        result = await asyncio.to_thread(
            self._api.commit, self.container_id, conf={"Labels": labels}, pause=True
        )
        # a client of its own: the snapshot outlives this sandbox (and its closed client)
        deleter = functools.partial(remove_snapshot_image, docker_host=self.config.docker_host)
        return str(result["Id"]), deleter

    async def kill(self) -> None:
        """Kill the container now (fault injection and tests); close() still removes it."""
        if self.container_id is not None:
            await asyncio.to_thread(self._api.kill, self.container_id)
