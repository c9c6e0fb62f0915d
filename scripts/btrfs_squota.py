"""Keep a mounted btrfs filesystem on *simple* quotas (squota, Linux >= 6.7).

Docker's btrfs storage driver enforces `--storage-opt size=` with a qgroup limit on each
container's subvolume. Simple quotas charge an extent only to the subvolume that wrote it, so a
container's limit counts exactly what the container wrote, and a snapshot costs nothing to
create or drop. Full ("classic") qgroups instead count every extent a subvolume references:
a container's limit also counts the image it shares (a limit below the image refuses to start,
one above it leaves only the difference), and every removal walks the shared extents' back
references (btrfs_qgroup_trace_subtree: minutes per `docker rm`, dockerd stalled).

Why this has to run more than once: dockerd 20.10 (Debian bookworm) turns quotas OFF when it
stops (btrfs driver Cleanup -> BTRFS_QUOTA_CTL_DISABLE), and its next container with a size
turns them on again in FULL mode (BTRFS_QUOTA_CTL_ENABLE). So after any dockerd restart that
did not go through scripts/setup.sh the filesystem ends up on full qgroups. This script puts it
back on simple quotas, safely while dockerd runs (dockerd only sets limits, it never asks for a
mode again), and re-applies the limits dockerd recorded for existing containers (switching
modes drops every qgroup). Extents written before the switch are charged to nobody.

btrfs-progs in Debian bookworm (6.2) cannot enable simple quotas (`--simple` came in 6.7), so
this issues the ioctls itself. Idempotent: does nothing when simple quotas are on.

usage: python3 btrfs_squota.py MOUNTPOINT [DRIVER_HOME]
  DRIVER_HOME: dockerd's btrfs driver directory (default MOUNTPOINT/btrfs), whose quotas/<id>
  files hold the size of each limited subvolume subvolumes/<id>.
"""

import fcntl
import os
import struct
import sys
import uuid
from pathlib import Path

# ioctl numbers from linux/btrfs.h (_IOR/_IOW/_IOWR on magic 0x94)
BTRFS_IOC_FS_INFO = 0x8400941F  # _IOR(31, struct btrfs_ioctl_fs_info_args: 1024 bytes)
BTRFS_IOC_QUOTA_CTL = 0xC0109428  # _IOWR(40, {u64 cmd; u64 status;})
BTRFS_IOC_QGROUP_LIMIT = 0x8030942B  # _IOR(43, {u64 qgroupid; struct btrfs_qgroup_limit})
QUOTA_DISABLE = 2
QUOTA_ENABLE_SIMPLE = 4
QGROUP_LIMIT_MAX_RFER = 1


def sysfs_dir(fd: int) -> Path:
    """/sys/fs/btrfs/<fsid> of the filesystem ``fd`` is on (FS_INFO: no udev/blkid needed)."""
    args = bytearray(1024)
    fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, args)
    # struct btrfs_ioctl_fs_info_args: u64 max_id; u64 num_devices; u8 fsid[16]; ...
    return Path("/sys/fs/btrfs") / str(uuid.UUID(bytes=bytes(args[16:32])))


def mode(sysfs: Path) -> str:
    """'squota', 'qgroup' (full accounting) or 'disabled'."""
    qgroups = sysfs / "qgroups"
    if not qgroups.is_dir():
        return "disabled"
    path = qgroups / "mode"
    return path.read_text().strip() if path.exists() else "qgroup"  # no 'mode' before 6.7


def ctl(fd: int, cmd: int) -> None:
    fcntl.ioctl(fd, BTRFS_IOC_QUOTA_CTL, struct.pack("QQ", cmd, 0))


def reapply_limits(home: Path) -> int:
    """Limit every existing subvolume dockerd recorded a size for; returns how many."""
    quotas = home / "quotas"
    done = 0
    for record in sorted(quotas.iterdir()) if quotas.is_dir() else []:
        subvolume = home / "subvolumes" / record.name
        try:
            size = int(record.read_text().strip())
            fd = os.open(subvolume, os.O_RDONLY | os.O_DIRECTORY)
        except (OSError, ValueError):
            continue  # removed meanwhile, or not a size record
        try:
            # struct btrfs_ioctl_qgroup_limit_args: qgroupid 0 = the subvolume fd is in;
            # btrfs_qgroup_limit {flags, max_rfer, max_excl, rsv_rfer, rsv_excl}
            limit = struct.pack("QQQQQQ", 0, QGROUP_LIMIT_MAX_RFER, size, 0, 0, 0)
            fcntl.ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, limit)
            done += 1
        finally:
            os.close(fd)
    return done


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    mountpoint = sys.argv[1]
    home = Path(sys.argv[2] if len(sys.argv) == 3 else os.path.join(mountpoint, "btrfs"))
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sysfs = sysfs_dir(fd)
        before = mode(sysfs)
        if before == "squota":
            return 0
        if before != "disabled":
            ctl(fd, QUOTA_DISABLE)
        ctl(fd, QUOTA_ENABLE_SIMPLE)
    finally:
        os.close(fd)
    after = mode(sysfs)
    if after != "squota":
        print(f"btrfs quotas on {mountpoint}: {before} -> {after}, not squota", file=sys.stderr)
        return 1
    limited = reapply_limits(home)
    print(
        f"btrfs quotas on {mountpoint}: {before} -> squota ({limited} container limits re-applied)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
