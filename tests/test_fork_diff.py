"""Fork by filesystem diff (the agent's ``fs.diff`` / ``fs.apply``, orchestrator/sandbox/fork.py)
against real Docker containers and the Kubernetes API double: what a setup writes anywhere is
carried (files, deletions, links, modes, holes), and a hostile parent - or a crafted stream -
cannot make a child write outside its own filesystem's carried trees."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.exceptions import InvalidParamsError, SnapshotTooLargeError, UnsafeArchiveError
from orchestrator.sandbox.base import Sandbox
from tests.conftest import docker_config, kube_config

pytestmark = pytest.mark.docker

# a setup that writes all over the filesystem, the way a package install does
SETUP = r"""
set -e
mkdir -p /workspace/proj && cd /workspace/proj
echo data > data.txt
echo site > /usr/local/lib/added-by-setup.txt
rm /etc/issue                                   # an image file deleted
rm -r /usr/share/doc/bash                       # an image directory deleted
echo replaced > /etc/debian_version             # an image file rewritten in place
mkdir -p /opt/tree/a/b && echo deep > /opt/tree/a/b/c.txt
ln /workspace/proj/data.txt /workspace/proj/hard.txt
ln -s /etc/passwd /workspace/proj/to-passwd     # points out of the work directory
ln -s /nonexistent/x /workspace/proj/dangling
mkfifo /workspace/proj/fifo
printf 'nl' > "/workspace/proj/new
line.txt"
echo secret > /workspace/proj/mode600 && chmod 600 /workspace/proj/mode600
cp /bin/true /workspace/proj/suid && chmod 4755 /workspace/proj/suid
truncate -s 64M /workspace/proj/sparse.bin && echo tail >> /workspace/proj/sparse.bin
cd /opt/tree && export DIFF_MARK=carried
"""

CHECK = r"""
cd /workspace/proj
cat data.txt /usr/local/lib/added-by-setup.txt /opt/tree/a/b/c.txt /etc/debian_version
test ! -e /etc/issue && echo issue-gone
test ! -e /usr/share/doc/bash && echo doc-gone
test -e /usr/share/doc && echo doc-parent-kept
[ "$(stat -c %i data.txt)" = "$(stat -c %i hard.txt)" ] && echo hardlinked
readlink to-passwd dangling
test -p fifo && echo fifo
cat "new
line.txt"; echo
stat -c '%a %u:%g' mode600 data.txt suid
echo "sparse $(stat -c %s sparse.bin) $(($(stat -c %b sparse.bin) * 512 < 8388608)) $(tail -c 5 sparse.bin)"
"""

EXPECTED = [
    "data",
    "site",
    "deep",
    "replaced",
    "issue-gone",
    "doc-gone",
    "doc-parent-kept",
    "hardlinked",
    "/etc/passwd",
    "/nonexistent/x",
    "fifo",
    "nl",
    "600 0:0",
    "644 0:0",
    "4755 0:0",
    f"sparse {64 * 1024 * 1024 + 5} 1 tail",
]


async def _check(child: Sandbox) -> None:
    out = await child.run(CHECK, session="check")
    assert out.output.splitlines() == EXPECTED, out.output
    cwd = await child.run('pwd; echo "$DIFF_MARK"')
    assert cwd.output.splitlines() == ["/opt/tree", "carried"]


async def test_docker_fork_by_diff_carries_the_whole_filesystem() -> None:
    async with docker_config(workdir="/workspace").build() as parent:
        assert (await parent.run(SETUP)).ok
        children = await parent.fork(2, method="diff")
        try:
            for child in children:
                # the parent's image, not a committed one
                assert child.config.image == parent.config.image  # type: ignore[attr-defined]
                await _check(child)
            # independent: a change in one is in neither the other nor the parent
            await children[0].write_file("/opt/tree/only-0", "x")
            assert not await children[1].exists("/opt/tree/only-0")
            assert not await parent.exists("/opt/tree/only-0")
        finally:
            for child in children:
                await child.close()


async def test_docker_fork_into_started_blanks_carries_everything_and_a_fork_of_a_fork() -> None:
    cfg = docker_config(workdir="/workspace")
    async with cfg.build() as parent, cfg.build() as blank, cfg.build() as grandchild:
        assert (await parent.run(SETUP)).ok
        (child,) = await parent.fork(1, into=[blank])
        await _check(child)
        # what was put into the child is part of its own changes since it started
        assert (await child.run("echo second > /opt/second.txt")).ok
        (g,) = await child.fork(1, into=[grandchild])
        await _check(g)
        assert await g.read_text("/opt/second.txt") == "second\n"


async def test_docker_diff_snapshot_starts_sandboxes_later() -> None:
    from orchestrator.sandbox import sandbox_config

    async with docker_config(workdir="/workspace").build() as parent:
        assert (await parent.run(SETUP)).ok
        snap = await parent.snapshot(method="diff")
    try:
        assert snap.kind == "diff" and snap.archive and snap.image is None
        async with sandbox_config({}, from_snapshot=snap).build() as child:
            await _check(child)
    finally:
        await snap.delete()


async def test_kubernetes_fork_by_diff_carries_the_whole_filesystem(kube_double: Any) -> None:
    async with kube_config(kube_double, workdir="/workspace").build() as parent:
        assert (await parent.run(SETUP)).ok
        (child,) = await parent.fork(1)
        try:
            await _check(child)
        finally:
            await child.close()


# ---- hostile: a crafted stream sent straight to a child's fs.apply


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], dirs: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, (info, data) in enumerate(members):
            if i == 0:
                import json

                info.pax_headers = {"AGENTIC.dirs": json.dumps(dirs)}
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


async def _apply(child: Sandbox, data: bytes) -> Any:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    return await child.rpc.upload(
        "fs.apply", {"include": ["/workspace"], "max_bytes": 1 << 20}, chunks()
    )


# who pid 1 is (the agent) and what the channel mount holds; not its State, which is
# "R" or "S" by chance depending on whether it is serving a call at that instant
_AGENT_AND_CHANNEL = (
    "grep -E '^(Name|Umask|Pid|PPid|Uid|Gid):' /proc/1/status; ls /.agentic-rollout 2>&1 | wc -l"
)


async def test_crafted_streams_cannot_write_outside_the_child() -> None:
    async with docker_config(workdir="/workspace").build() as child:
        before = await child.run(_AGENT_AND_CHANNEL)
        assert "Name:\tpython3" in before.output and "Pid:\t1\n" in before.output
        unsafe = [
            # a symlink to the kernel's tree, then a file "through" it
            [
                (_member("workspace/evil", tarfile.SYMTYPE, "/proc/self"), None),
                (_member("workspace/evil/mem"), b"x"),
            ],
            # a symlink to a directory, then a file under it (would land in /etc)
            [
                (_member("workspace/up", tarfile.SYMTYPE, "../etc"), None),
                (_member("workspace/up/pwned"), b"x"),
            ],
            [(_member("../escape"), b"x")],
            [(_member("workspace/a/../../escape"), b"x")],
            [(_member("/etc/absolute"), b"x")],
            [(_member("proc/sys/kernel/hostname"), b"x")],
            [(_member("dev/shm/x"), b"x")],
            [(_member("etc/hostname"), b"x")],  # a bind mount of a host file
            # a hard link to a file the archive did not carry
            [(_member("workspace/shadow", tarfile.LNKTYPE, "etc/shadow"), None)],
        ]
        for members in unsafe:
            with pytest.raises(UnsafeArchiveError):
                await _apply(child, _tar(members, {}))
                pytest.fail(f"applied: {[m.name for m, _ in members]}")
        assert not await child.exists("/etc/pwned")
        assert not await child.exists("/escape")
        assert not await child.exists("/etc/absolute")
        assert not await child.exists("/workspace/shadow")
        # a device node in the stream is skipped; a "whiteout" list of / that omits the
        # kernel trees and the channel mount leaves them (and the agent) alone
        dev = _member("workspace/null", tarfile.CHRTYPE)
        dev.devmajor, dev.devminor = 1, 3
        names = (await child.run("ls -A /")).output.split()
        kept = [n for n in names if n not in ("proc", "sys", "dev", ".agentic-rollout")]
        result = await _apply(
            child, _tar([(dev, None), (_member("workspace/ok.txt"), b"ok")], {"/": kept})
        )
        assert result["skipped"] == 1
        assert not await child.exists("/workspace/null")
        assert await child.read_text("/workspace/ok.txt") == "ok"
        after = await child.run(_AGENT_AND_CHANNEL)
        assert after.output == before.output  # the agent, /proc and the channel: untouched
        assert (await child.run("echo alive")).output.strip() == "alive"


async def test_hostile_parent_tree_stays_inside_the_children() -> None:
    # symlinks pointing out, a directory swapped for a symlink to /etc, a huge sparse file
    async with docker_config(workdir="/workspace").build() as parent:
        tree = (
            "mkdir -p /workspace/w && ln -s / /workspace/w/root && ln -s /etc /workspace/link && "
            "mkdir -p /opt/x && rm -r /opt/x && ln -s /etc /opt/x"
        )
        assert (await parent.run(tree)).ok
        cfg = docker_config(workdir="/workspace")
        async with cfg.build() as blank:
            (child,) = await parent.fork(1, into=[blank])
            out = await child.run(
                "readlink /workspace/w/root /workspace/link /opt/x; ls /etc | wc -l"
            )
            assert out.output.split()[:3] == ["/", "/etc", "/etc"]
            assert int(out.output.split()[3]) > 10  # /etc itself untouched
        assert (await parent.run("truncate -s 5G /opt/huge.bin")).ok
        with pytest.raises(SnapshotTooLargeError, match=r"/opt/huge\.bin.*max_snapshot_bytes"):
            await parent.fork(2, method="diff")


async def test_a_bad_scope_is_refused_by_both_methods_and_the_agent_keeps_answering() -> None:
    """fs.diff and fs.apply read their scope the same way: a relative ``include`` or a missing
    ``max_bytes`` is a specific InvalidParamsError, nothing is walked or written, and the same
    sandbox answers the next call."""
    async with docker_config(workdir="/workspace").build() as box:

        async def no_chunks() -> AsyncIterator[bytes]:
            if False:  # pragma: no cover - an empty stream
                yield b""

        async def ignore(_: bytes) -> None:
            return None

        for params, message in (
            ({"include": ["workspace"], "max_bytes": 1}, "'include' must be a list of absolute"),
            ({"include": "/workspace", "max_bytes": 1}, "'include'"),
            ({"include": ["/workspace"]}, "'max_bytes'"),
        ):
            with pytest.raises(InvalidParamsError, match=message):
                await box.rpc.call("fs.diff", params, timeout=30, on_chunk=ignore)
            with pytest.raises(InvalidParamsError, match=message):
                await box.rpc.upload("fs.apply", params, no_chunks(), timeout=30)
        assert (await box.run("echo alive")).output == "alive\n"
