"""Open a Docker sandbox and use the agent's primitives (the README's 10-line example, grown).

.venv/bin/python examples/sandbox_quickstart.py [--image IMAGE] [--backend docker|local]
"""

from __future__ import annotations

import argparse
import asyncio

from orchestrator import sandbox_config


async def main(backend: str, image: str) -> None:
    values = {"type": backend, **({"image": image} if backend == "docker" else {})}
    async with sandbox_config(values).build() as sb:
        print(f"{sb.describe()} ready in {sb.ready_seconds * 1000:.0f} ms")
        await sb.run("mkdir -p demo && cd demo && git init -q && export GREETING=hello")
        r = await sb.run('echo "$GREETING from $(pwd)"; python3 --version')
        print(r.output, end="")
        await sb.write_file("demo/app.py", "def add(a, b):\n    return a - b\n")
        hits = await sb.search("demo", r"return a - b", include=["*.py"])
        print("search:", [(m.path, m.line) for m in hits.matches])
        slow = await sb.run("echo partial; sleep 60", timeout=1)
        print(f"timeout: timed_out={slow.timed_out} output={slow.output!r}")
        print("session still usable:", (await sb.run("echo $GREETING")).output.strip())
        for _ in range(100):
            await sb.run("true")
        print(f"100 x `true`: p50 {sb.rpc.latency_stats('session.run')['p50_ms']:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="docker", choices=["docker", "local"])
    parser.add_argument("--image", default="agentic-rollout/sandbox:latest")
    args = parser.parse_args()
    asyncio.run(main(args.backend, args.image))
