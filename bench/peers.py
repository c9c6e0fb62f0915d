"""Peers for ``bench rpc --peers``: SWE-ReX's server in a container of the same image.

SWE-ReX (the SWE-agent runtime) is installed from PyPI on the host into a folder
(``~/.cache/agentic-rollout/swerex-<version>``, once) and copied into the container before it
starts: the container itself has no network. Its server runs with host networking bound to
127.0.0.1 (no bridge network), and the benchmark talks to it through SWE-ReX's own client
(``RemoteRuntime``), imported from that folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orchestrator.exceptions import AgenticRolloutError
from orchestrator.sandbox.docker import docker_api

SWEREX_VERSION = "1.4.0"
CONTAINER_DIR = "/opt/swerex"


def swerex_dir() -> Path:
    """The host folder with swe-rex (and aiohttp, its client's HTTP library) installed."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentic-rollout"
    target = base / f"swerex-{SWEREX_VERSION}"
    if (target / "swerex").is_dir():
        return target
    tmp = base / f".swerex-{SWEREX_VERSION}-{os.getpid()}"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    cmd += ["--target", str(tmp), f"swe-rex=={SWEREX_VERSION}", "aiohttp"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise AgenticRolloutError(f"cannot install swe-rex into {tmp}: {out.stderr[-2000:]}")
    tmp.rename(target)
    return target


def _tar(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if "__pycache__" in path.parts or path.parts[-1] == "bin":
                continue
            tar.add(path, arcname=f"swerex/{path.relative_to(folder)}", recursive=False)
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _import_client(folder: Path) -> tuple[Any, Any, Any, Any]:
    if str(folder) not in sys.path:
        sys.path.append(str(folder))  # after ours: the venv's versions win where both exist
    from swerex.runtime.abstract import BashAction, Command, CreateBashSessionRequest
    from swerex.runtime.remote import RemoteRuntime

    return RemoteRuntime, BashAction, Command, CreateBashSessionRequest


class SweRex:
    """A running SWE-ReX server and a client with one bash session."""

    def __init__(self, runtime: Any, bash_action: Any, command: Any, container: str) -> None:
        self.runtime = runtime
        self._bash_action = bash_action
        self._command = command
        self.container = container

    async def run_in_session(self, cmd: str) -> str:
        obs = await self.runtime.run_in_session(self._bash_action(command=cmd, timeout=60))
        return str(obs.output)

    async def execute(self, cmd: str) -> str:
        out = await self.runtime.execute(self._command(command=cmd, shell=True, timeout=60))
        return str(out.stdout)


@contextlib.asynccontextmanager
async def swerex_server(
    image: str, *, memory: str = "1g", labels: dict[str, str] | None = None
) -> AsyncIterator[SweRex]:
    folder = await asyncio.to_thread(swerex_dir)
    runtime_cls, bash_action, command, session_request = _import_client(folder)
    port = _free_port()
    token = secrets.token_hex(16)
    code = (
        f"import sys; sys.path.insert(0, {CONTAINER_DIR!r}); "
        "sys.argv = ['swerex-remote', '--host', '127.0.0.1', "
        f"'--port', '{port}', '--auth-token', '{token}']; "
        "from swerex.server import main; main()"
    )
    api = docker_api(None)
    cid: str | None = None
    try:
        host_config = api.create_host_config(
            network_mode="host",  # bound to 127.0.0.1 inside: loopback only, no bridge
            mem_limit=memory,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=512,
        )
        cid = (
            await asyncio.to_thread(
                api.create_container,
                image,
                command=["python3", "-c", code],
                host_config=host_config,
                labels=labels or {},
                working_dir="/workspace",
            )
        )["Id"]
        parent = os.path.dirname(CONTAINER_DIR)
        await asyncio.to_thread(api.put_archive, cid, parent, _tar(folder))
        await asyncio.to_thread(api.start, cid)
        runtime = runtime_cls(host="http://127.0.0.1", port=port, auth_token=token, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await runtime.is_alive(timeout=1)).is_alive:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                logs = api.logs(cid, tail=30).decode(errors="replace")
                raise AgenticRolloutError(f"SWE-ReX server did not come up: {logs}")
            await asyncio.sleep(0.2)
        await runtime.create_session(session_request())
        try:
            yield SweRex(runtime, bash_action, command, cid)
        finally:
            with contextlib.suppress(Exception):
                await runtime.close()
    finally:
        if cid is not None:
            await asyncio.to_thread(api.remove_container, cid, force=True)
        api.close()
