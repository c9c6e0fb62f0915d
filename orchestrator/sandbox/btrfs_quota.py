"""Whether a btrfs Docker engine's per-container disk limit means what it says.

Docker's btrfs storage driver enforces ``storage_opt size`` with a qgroup limit on the
container's subvolume. Only *simple* quotas (squota, Linux >= 6.7) make that limit count what
the container itself wrote. Under full ("classic") qgroups it also counts the image the
container shares: a limit below the image's size refuses to start ("Failed to limit qgroup:
disk quota exceeded"), one above it leaves only the difference, and every removal walks the
shared extents (minutes per ``docker rm``, dockerd stalled).

dockerd 20.10 (Debian bookworm) turns quotas OFF when it stops and, at its next container with a
size, turns them on in FULL mode: after a dockerd restart that skipped ``scripts/setup.sh`` the
engine silently ends up on full qgroups. So the Docker backend reads the mode before each
create with a limit, from this host's ``/sys/fs/btrfs`` (world-readable; one small read), and
refuses anything but squota - before the create, so that it never makes dockerd turn full
qgroups on. ``scripts/setup.sh`` (``scripts/btrfs_squota.py``) switches a running engine back.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

MOUNTINFO = "/proc/self/mountinfo"
SYS_FS_BTRFS = "/sys/fs/btrfs"

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def btrfs_sysfs_dir(
    path: str, *, mountinfo: str = MOUNTINFO, sys_fs_btrfs: str = SYS_FS_BTRFS
) -> Path | None:
    """``/sys/fs/btrfs/<fsid>`` of the btrfs filesystem holding ``path`` as this host sees it;
    None when the mount that holds ``path`` here is not btrfs, or no such mount is visible (an
    engine on another host or in another mount namespace)."""
    best: tuple[str, str, str] | None = None  # mount point, fs type, source
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <type>
        #  <source> <super options>"
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        mount = _unescape(fields[4])
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) >= len(best[0])):
            best = (mount, tail[0], _unescape(tail[1]))  # the last of equal mounts is on top
    if best is None or best[1] != "btrfs":
        return None
    device = os.path.basename(os.path.realpath(best[2]))  # /dev/mapper/x -> dm-0
    try:
        filesystems = sorted(Path(sys_fs_btrfs).iterdir())
    except OSError:
        return None
    for fs in filesystems:
        if (fs / "devices" / device).exists():
            return fs
    return None


@functools.cache  # the filesystem under an engine's data root does not change while we run
def _located(data_root: str) -> Path | None:
    return btrfs_sysfs_dir(data_root, mountinfo=MOUNTINFO, sys_fs_btrfs=SYS_FS_BTRFS)


def quota_mode_of(sysfs: Path) -> str:
    """'squota', 'qgroup' (full accounting) or 'disabled'."""
    qgroups = sysfs / "qgroups"
    if not qgroups.is_dir():
        return "disabled"
    try:
        return (qgroups / "mode").read_text().strip()
    except FileNotFoundError:
        return "qgroup"  # kernels before 6.7 have full qgroups only, and no 'mode' file


def quota_mode(data_root: str) -> str | None:
    """The quota mode of the btrfs filesystem holding ``data_root``; None when it cannot be
    read from this host."""
    sysfs = _located(data_root)
    return None if sysfs is None else quota_mode_of(sysfs)


def not_enforced(mode: str, data_root: str, disk: str) -> str:
    """Why ``disk`` would not be enforced as configured under ``mode`` (not 'squota')."""
    fix = (
        "run `scripts/setup.sh` as root, which switches the engine to simple quotas without "
        "restarting dockerd, or set disk: null"
    )
    if mode == "disabled":
        return (
            f"disk={disk!r} cannot be enforced: btrfs quotas are off on the Docker engine's "
            f"data root {data_root} (dockerd 20.10 turns them off when it stops), and creating "
            "this sandbox would make dockerd turn on full qgroups, whose limits count the "
            f"image too and whose removals take minutes; {fix}"
        )
    return (
        f"disk={disk!r} would not be enforced as configured: the Docker engine's data root "
        f"{data_root} is on btrfs quota mode {mode!r}, not simple quotas ('squota'), so a "
        "sandbox's limit would also count the image it shares (a limit below the image's "
        "size refuses to start, one above it leaves only the difference) and every removal "
        "walks the shared extents (minutes). dockerd 20.10 turns quotas off when it stops "
        f"and full qgroups on at its next container with a size; {fix}"
    )
