"""System-wide CPU accounting for the benchmarks: where did the machine's CPU go?

A tool call costs CPU in many processes, not only ours: the orchestrator, dockerd and
containerd (API calls, the attach proxy), the containerd shims, the sandbox's own processes
(agent, bash, the command) and the kernel. ``SystemMeter`` measures a window of work and
splits the machine's CPU time (``/proc/stat``: everything but idle/iowait/steal) into:

- ``orchestrator``: this process (``/proc/self/stat`` utime+stime, all threads);
- ``engine``: dockerd, containerd and the containerd shims, read from ``/proc/<pid>/stat``.
  Shims come and go with containers, so a background thread samples them and keeps the last
  value seen of each one that exited (what a shim burns between its last sample and its exit
  is missed: at most one sampling interval per sandbox);
- ``sandboxes``: the containers' cgroup (cgroup v1 ``cpuacct/docker/cpuacct.usage``, v2
  ``docker/cpu.stat`` or ``system.slice``): a parent cgroup's counter keeps what removed
  children used, so sandboxes removed during the window count;
- ``others`` (only with ``containers=``): long-lived processes that are none of the above -
  other work sharing the machine (another user's tests and their containers) - read from
  ``/proc/<pid>/stat`` at both ends of the window, plus the meter's own sampling thread;
- ``rest``: the remainder - kernel work outside those (softirqs, the filesystem), short-lived
  helpers such as ``runc`` and, without ``containers=``, other processes on the machine.

``SystemMeter(containers=f)``, ``f`` returning the ids of the containers under measure, narrows
``sandboxes`` to those containers' own cgroups and the shims to theirs (sampled like the shims,
the last value seen of a removed one kept), so a shared Docker host's other containers land in
``others`` instead. dockerd and containerd serve everyone: their CPU is ``engine`` whatever asked.

Linux only; on other systems ``available()`` is False and the benches leave these figures out.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_ENGINE_NAMES = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
#: cgroup counters (nanoseconds for v1 cpuacct.usage, microseconds for v2 usage_usec)
_CGROUP_V1 = (
    Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage"),
    Path("/sys/fs/cgroup/cpu,cpuacct/docker/cpuacct.usage"),
)
_CGROUP_V2 = (Path("/sys/fs/cgroup/docker/cpu.stat"), Path("/sys/fs/cgroup/system.slice/cpu.stat"))


def available() -> bool:
    return Path("/proc/stat").exists() and Path("/proc/self/stat").exists()


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent doing anything (all cores, since boot)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    values = [int(v) for v in fields]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    # counted in user/nice
    busy = values[0] + values[1] + values[2] + values[5] + values[6]
    return busy / _CLK_TCK


def _proc_cpu(pid: int | str) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: fields start after the last ")"
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _proc_name(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _engine_pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and _proc_name(p) in _ENGINE_NAMES]


def _shim_container(pid: str) -> str | None:
    """The container id a containerd shim serves (``-id <id>`` on its command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    for flag, value in itertools.pairwise(argv):
        if flag == b"-id":
            return value.decode(errors="replace")
    return None


def container_cpu_seconds(container_id: str) -> float | None:
    """Cumulative CPU seconds of one container's cgroup, or None when not found."""
    for path in (
        f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",  # cgroup v1
        f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage",
    ):
        try:
            return int(Path(path).read_text()) / 1e9
        except (OSError, ValueError):
            continue
    for path in (
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat",  # v2, systemd
        f"/sys/fs/cgroup/docker/{container_id}/cpu.stat",  # v2, cgroupfs
    ):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) / 1e6
    return None


def _process_table() -> dict[str, tuple[str, float]]:
    """pid -> (start time, CPU seconds) of every process now (the start time tells a reused
    pid from the same process)."""
    table: dict[str, tuple[str, float]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        table[pid] = (fields[19], (int(fields[11]) + int(fields[12])) / _CLK_TCK)
    return table


def _in_containers(pid: str, ids: set[str]) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return False
    return any(cid in text for cid in ids)


def sandboxes_cpu_seconds() -> float | None:
    """Cumulative CPU seconds of all Docker containers' cgroups, or None when not found."""
    for path in _CGROUP_V1:
        if path.exists():
            return int(path.read_text()) / 1e9
    for path in _CGROUP_V2:
        if path.exists():
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    return None


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds of one measured window, whole machine and by where it went."""

    wall: float
    total: float
    orchestrator: float
    engine: float
    sandboxes: float
    rest: float
    others: float = 0.0

    def per(self, n: int) -> dict[str, float]:
        """Milliseconds per unit of work (a tool call, a sandbox life cycle)."""
        n = max(1, n)
        return {
            "total_ms": self.total / n * 1000,
            "orchestrator_ms": self.orchestrator / n * 1000,
            "engine_ms": self.engine / n * 1000,
            "sandboxes_ms": self.sandboxes / n * 1000,
            "others_ms": self.others / n * 1000,
            "rest_ms": self.rest / n * 1000,
        }


class SystemMeter:
    """Measure one window: ``with SystemMeter() as m: ...`` then ``m.split``.

    ``containers``: called from the sampling thread, the ids of the containers this window is
    about (see the module's docstring); must not block (read attributes, do not ask dockerd).
    """

    def __init__(
        self,
        sample_interval: float = 0.2,
        containers: Callable[[], Iterable[str | None]] | None = None,
    ) -> None:
        self.sample_interval = sample_interval
        self.containers = containers
        self._engine_start: dict[str, float] = {}
        self._engine_last: dict[str, float] = {}
        self._box_start: dict[str, float] = {}
        self._box_last: dict[str, float] = {}
        self._ids: set[str] = set()
        self._sampler_cpu = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = False
        self.split: CpuSplit | None = None

    def _sample_engine(self) -> None:
        if self.containers is not None:
            self._ids.update(c for c in self.containers() if c)
        for pid in _engine_pids():
            # another container's shim is not this window's engine work (it is others')
            shim = _proc_name(pid).startswith("containerd-shim")
            if self.containers is not None and shim and _shim_container(pid) not in self._ids:
                continue
            cpu = _proc_cpu(pid)
            if cpu is None:
                continue
            with self._lock:
                # a shim first seen inside the window started inside it: all its CPU counts
                self._engine_start.setdefault(pid, cpu if not self._started else 0.0)
                self._engine_last[pid] = cpu
        for cid in list(self._ids):
            box = container_cpu_seconds(cid)
            if box is None:
                continue
            with self._lock:
                self._box_start.setdefault(cid, box if not self._started else 0.0)
                self._box_last[cid] = box

    def _loop(self) -> None:
        while not self._stop.wait(self.sample_interval):
            t0 = time.thread_time()
            self._sample_engine()
            self._sampler_cpu += time.thread_time() - t0

    def __enter__(self) -> SystemMeter:
        self._sample_engine()
        self._started = True
        self._procs0 = _process_table() if self.containers is not None else {}
        self._t0 = time.perf_counter()
        self._machine0 = machine_busy_seconds()
        self._self0 = _proc_cpu("self") or 0.0
        self._sandboxes0 = sandboxes_cpu_seconds() or 0.0
        self._thread = threading.Thread(target=self._loop, name="sysstat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample_engine()
        wall = time.perf_counter() - self._t0
        total = machine_busy_seconds() - self._machine0
        orchestrator = (_proc_cpu("self") or 0.0) - self._self0 - self._sampler_cpu
        with self._lock:
            engine = sum(self._engine_last[p] - self._engine_start[p] for p in self._engine_last)
            boxes = sum(self._box_last[c] - self._box_start[c] for c in self._box_last)
        if self.containers is None:
            sandboxes = (sandboxes_cpu_seconds() or 0.0) - self._sandboxes0
            others = 0.0
        else:
            sandboxes = boxes
            others = self._sampler_cpu + self._others()
        rest = total - orchestrator - engine - sandboxes - others
        self.split = CpuSplit(wall, total, orchestrator, engine, sandboxes, rest, others)

    def _others(self) -> float:
        """CPU of the processes alive at both ends that are not ours, the engine's we counted
        or inside the measured containers."""
        # dockerd, containerd and our shims are in _engine_last: engine, counted
        skip = set(self._engine_last) | {str(os.getpid())}
        seconds = 0.0
        for pid, (started, cpu) in _process_table().items():
            before = self._procs0.get(pid)
            if before is None or before[0] != started or pid in skip:
                continue
            if cpu > before[1] and not _in_containers(pid, self._ids):
                seconds += cpu - before[1]
        return seconds


def cgroup_memory(container_id: str) -> int | None:
    """Bytes charged to one container's memory cgroup (its processes, page cache, tmpfs):
    the memory a live sandbox costs the machine; None when the cgroup is not found."""
    for path in (
        f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes",  # cgroup v1
        f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current",  # v2, systemd
        f"/sys/fs/cgroup/docker/{container_id}/memory.current",  # v2, cgroupfs
    ):
        try:
            return int(Path(path).read_text())
        except (OSError, ValueError):
            continue
    return None
