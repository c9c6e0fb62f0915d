"""``bench races``: the agent's known kill and flood races, repeated, outcomes counted.

Each scenario is a race between the sandbox's own processes and the agent: which side wins
varies from run to run, so a test sees a bad outcome only now and then. Here each one is
repeated ``rounds`` times in real Docker and every outcome is counted; a correct agent has 0
in every ``leaked``/``lost`` count whichever side wins.

- ``background_bomb``: ``:(){ :|:& };:`` under a 128-process limit, then ``echo clean``. The
  bomb is ended either when its own command's result is made (it hit the limit before) or by
  the watchdog afterwards; either way the next output must be exactly ``clean``.
- ``lost_jobs``: a command leaves two jobs and fills the process limit; the agent kills what it
  left, and bash's report of the killed jobs ("Killed sleep 100") must be in that command's
  output, never in the next one's.
- ``kill_minus_one``: ``kill -9 -1`` in one session, then a command in another session whose
  bash it killed: the command must run (in a fresh bash), never come back empty.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from orchestrator.sandbox.docker import DockerSandboxConfig

#: forks sleepers until the pids limit refuses one, then says how many (also used by the tests)
FORKER = """
import os, time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(100)
        os._exit(0)
    n += 1
print("forked", n)
"""


def _config(image: str, **kwargs: Any) -> DockerSandboxConfig:
    values: dict[str, Any] = {"image": image, "memory": "256m", "pids_limit": 128}
    values.update(kwargs)
    return DockerSandboxConfig(**values)


async def _background_bomb(image: str) -> str:
    async with _config(image).build() as box:
        first = await box.run(":(){ :|:& };:", timeout=10)
        path = "leftovers" if first.note else "watchdog"
        if first.note is None:
            for _ in range(300):
                if (await box.info())["pids_guard_kills"] >= 1:
                    break
                await asyncio.sleep(0.1)
            else:
                path = "not_ended"
        r = await box.run("echo clean")
        return f"{path}_clean" if r.output == "clean\n" else f"{path}_leaked"


async def _lost_jobs(image: str) -> str:
    async with _config(image).build() as box:
        await box.write_file("/tmp/forker.py", FORKER)
        first = await box.run("sleep 100 & sleep 101 & python3 /tmp/forker.py", timeout=60)
        reported = first.output.count("Killed")
        r = await box.run("echo clean")
        if r.output != "clean\n":
            return "leaked"
        return "reported" if reported >= 2 else "not_reported"


async def _kill_minus_one(image: str, rounds: int) -> collections.Counter[str]:
    outcomes: collections.Counter[str] = collections.Counter()
    async with _config(image, memory="512m", pids_limit=256).build() as box:
        for _ in range(rounds):
            await box.run("sleep 300 &", session="victim")
            await box.run("kill -9 -1; echo survived", timeout=10)
            v = await box.run("echo fresh", session="victim")
            if v.output != "fresh\n" or v.session_ended:
                outcomes["lost"] += 1
            else:
                outcomes["restarted" if v.session_restarted else "survived"] += 1
    return outcomes


async def run(rounds: int = 20, image: str = "agentic-rollout/sandbox:latest") -> dict[str, Any]:
    t0 = time.monotonic()
    bomb: collections.Counter[str] = collections.Counter()
    jobs: collections.Counter[str] = collections.Counter()
    for _ in range(rounds):
        bomb[await _background_bomb(image)] += 1
        jobs[await _lost_jobs(image)] += 1
    kill = await _kill_minus_one(image, rounds * 5)  # cheap rounds: one sandbox
    return {
        "rounds": rounds,
        "background_bomb": dict(bomb),
        "lost_jobs": dict(jobs),
        "kill_minus_one": dict(kill),
        "bad": sum(n for k, n in bomb.items() if not k.endswith("_clean"))
        + sum(n for k, n in jobs.items() if k != "reported")
        + kill["lost"],
        "seconds": round(time.monotonic() - t0, 1),
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"races_rounds={result['rounds']}"]
    for scenario in ("background_bomb", "lost_jobs", "kill_minus_one"):
        for outcome, n in sorted(result[scenario].items()):
            lines.append(f"races_{scenario}_{outcome}={n}")
    lines.append(f"races_bad={result['bad']}")
    return lines
