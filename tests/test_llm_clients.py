"""LLM clients and retries against a real HTTP server on 127.0.0.1, through the real SDKs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import (
    LLMConnectionError,
    LLMRateLimitError,
    LLMRequestError,
    LLMRetryableError,
)
from orchestrator.llm import (
    AnthropicClient,
    ClaudeAPIClient,
    OpenAIClient,
    RetryPolicy,
    classify_exception,
    generate_with_retries,
    to_anthropic,
)
from orchestrator.local_llm import free_port
from orchestrator.runner import AgenticRollout
from orchestrator.trajectory import RetryRecord, TrajectoryStatus

from .conftest import SANDBOX_IMAGE, TEST_RUN_ID
from .llm_server import (
    ANTHROPIC_MESSAGES_KEYS,
    OPENAI_CHAT_KEYS,
    anthropic_message,
    openai_completion,
    scripted_server,
    strict_body,
)

FAST = RetryPolicy(max_attempts=6, initial_wait=0.01, max_wait=0.05, max_total_seconds=60)
MESSAGES = [{"role": "user", "content": "hi"}]


async def test_transient_failures_are_retried_and_recorded() -> None:
    script = [
        ("status", 429),
        ("status", 500),
        ("hang", 3),
        ("garbage", None),
        ("ok", openai_completion("hello")),
    ]
    with scripted_server(script) as server:
        client = OpenAIClient("m", base_url=server.base_url, api_key="k", timeout=1.0)
        records: list[RetryRecord] = []
        response = await generate_with_retries(
            client, MESSAGES, policy=FAST, on_retry=records.append, max_tokens=10
        )
        await client.close()
    assert response.content == "hello" and response.usage.total_tokens == 18
    assert [r.attempt for r in records] == [1, 2, 3, 4]
    kinds = [r.error.split(":")[0] for r in records]
    assert kinds == ["LLMRateLimitError", "LLMServerError", "LLMTimeoutError", "LLMResponseError"]
    assert len(server.requests) == 5 and server.requests[0]["body"]["max_tokens"] == 10


async def test_bad_request_fails_fast() -> None:
    with scripted_server([("status", 400), ("ok", openai_completion())]) as server:
        client = OpenAIClient("m", base_url=server.base_url, api_key="k")
        records: list[RetryRecord] = []
        t0 = time.monotonic()
        with pytest.raises(LLMRequestError, match="scripted 400") as info:
            await generate_with_retries(client, MESSAGES, policy=FAST, on_retry=records.append)
        await client.close()
    assert info.value.status == 400 and records == [] and len(server.requests) == 1
    assert time.monotonic() - t0 < 2


async def test_retries_give_up_with_the_last_error() -> None:
    with scripted_server([("status", 429)] * 10) as server:
        client = OpenAIClient("m", base_url=server.base_url, api_key="k")
        with pytest.raises(LLMRateLimitError):
            await generate_with_retries(
                client,
                MESSAGES,
                policy=RetryPolicy(max_attempts=3, initial_wait=0.01, max_wait=0.02),
            )
        await client.close()
    assert len(server.requests) == 3


async def test_openai_tool_calls_parsed() -> None:
    calls = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "bash", "arguments": '{"command": "ls"}'},
        }
    ]
    with scripted_server([("ok", openai_completion(None, calls))]) as server:
        client = OpenAIClient("m", base_url=server.base_url, api_key="k")
        tools = [
            {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
        ]
        response = await client.generate(MESSAGES, tools=tools, temperature=0.0, stop=None)
        await client.close()
    assert (
        response.tool_calls[0].name == "bash"
        and response.tool_calls[0].arguments == '{"command": "ls"}'
    )
    assert server.requests[0]["body"]["tools"] == tools and "stop" not in server.requests[0]["body"]


async def test_anthropic_client_tool_use_round_trip() -> None:
    reply = anthropic_message(
        [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "tu1", "name": "bash", "input": {"command": "ls"}},
        ]
    )
    with scripted_server([("status", 529), ("ok", reply)]) as server:
        client = AnthropicClient("claude", base_url=server.root_url, api_key="k")
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "list"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "tu0",
                        "type": "function",
                        "function": {"name": "bash", "arguments": '{"command": "pwd"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tu0", "content": "/"},
        ]
        records: list[RetryRecord] = []
        response = await generate_with_retries(
            client,
            messages,
            policy=FAST,
            on_retry=records.append,
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "bash",
                        "description": "d",
                        "parameters": {"type": "object"},
                    },
                }
            ],
        )
        await client.close()
    assert records[0].error.startswith("LLMServerError")
    assert (
        response.content == "Let me look."
        and response.tool_calls[0].arguments == '{"command": "ls"}'
    )
    body = server.requests[-1]["body"]
    assert body["system"] == "be brief" and body["max_tokens"] == 1024
    assert body["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "tu0",
        "name": "bash",
        "input": {"command": "pwd"},
    }
    assert body["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "tu0",
        "content": "/",
    }
    assert body["tools"][0]["input_schema"] == {"type": "object"}


def test_to_anthropic_merges_consecutive_roles() -> None:
    system, msgs = to_anthropic(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    )
    assert system is None and msgs == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


def test_classify_foreign_exceptions() -> None:
    assert isinstance(classify_exception(TimeoutError("x")), LLMRetryableError)
    assert isinstance(classify_exception(ConnectionRefusedError("x")), LLMConnectionError)
    assert isinstance(classify_exception(RuntimeError("x")), LLMRequestError)


@pytest.mark.docker
async def test_unreachable_endpoint_fails_the_trajectory_and_cleans_up() -> None:
    port = free_port()  # nothing listens there
    config = AgenticRolloutConfig(
        agent_type="react",
        save_trajectories=False,
        llm={"base_url": f"http://127.0.0.1:{port}/v1", "api_key": "k", "timeout": 2},
        retry={"max_attempts": 3, "initial_wait": 0.01, "max_wait": 0.02},
        sandbox={"type": "docker", "image": SANDBOX_IMAGE, "run_id": TEST_RUN_ID},
    )
    # without the preflight (which would stop the run before any sandbox: test_preflight.py)
    summary = await AgenticRollout(config).run(["a", "b"], preflight=False)
    for traj in summary.trajectories:
        assert traj.status == TrajectoryStatus.ERROR
        assert traj.errors[-1].type == "LLMConnectionError"
        assert len(traj.retries) == 2
    assert len(summary.infrastructure_failures) == 2
    await asyncio.sleep(0)
    client = docker.from_env()
    left = client.containers.list(all=True, filters={"label": f"agentic-rollout.run={TEST_RUN_ID}"})
    client.close()
    assert left == []


# ---- through the real SDKs, against a server that refuses bodies the real APIs refuse

ANTHROPIC_STRICT = strict_body(ANTHROPIC_MESSAGES_KEYS, ("model", "messages", "max_tokens"))
OPENAI_STRICT = strict_body(OPENAI_CHAT_KEYS, ("model", "messages"))


async def test_anthropic_client_sends_sampling_in_the_body_with_the_installed_sdk() -> None:
    reply = anthropic_message([{"type": "text", "text": "fine"}])
    with scripted_server([("ok", reply)], check=ANTHROPIC_STRICT) as server:
        client = AnthropicClient("claude", base_url=server.root_url, api_key="k")
        response = await client.generate(
            [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
            max_tokens=7,
            temperature=0.3,
            top_p=0.9,
            stop=["\nObservation:"],
        )
        await client.close()
    assert server.refused == [] and response.content == "fine"
    body = server.requests[0]["body"]
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["max_tokens"] == 7
    assert body["stop_sequences"] == ["\nObservation:"] and body["system"] == "s"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


async def test_anthropic_trajectory_runs_end_to_end_through_the_sdk(tmp_path: Path) -> None:
    """`--provider anthropic` as the CLI builds it: config -> make_client -> the react agent
    (which passes temperature and stop sequences every turn)."""
    script = [
        ("ok", anthropic_message([{"type": "text", "text": "pong"}])),  # the preflight's request
        ("ok", anthropic_message([{"type": "text", "text": "Final Answer: 4"}])),
    ]
    with scripted_server(script, check=ANTHROPIC_STRICT) as server:
        config = AgenticRolloutConfig(
            agent_type="react",
            sandbox={"type": "none"},
            trajectory_save_path=str(tmp_path / "t.jsonl"),
            temperature=0.2,
            llm={
                "provider": "anthropic",
                "model": "claude",
                "base_url": server.root_url,
                "api_key": "k",
            },
        )
        summary = await AgenticRollout(config).run([{"id": "a", "prompt": "2+2?", "answer": "4"}])
    assert server.refused == []
    traj = summary.trajectories[0]
    assert traj.status == TrajectoryStatus.COMPLETED and traj.reward == 1.0, traj.errors
    assert server.requests[0]["body"]["max_tokens"] == 1  # the preflight: one token
    assert server.requests[1]["body"]["temperature"] == 0.2


async def test_openai_client_body_is_what_the_api_accepts() -> None:
    with scripted_server([("ok", openai_completion("x"))], check=OPENAI_STRICT) as server:
        client = OpenAIClient("m", base_url=server.base_url, api_key="k")
        await client.generate(
            MESSAGES,
            max_tokens=5,
            temperature=0.1,
            top_p=0.5,
            stop=["\n"],
            seed=3,
            unknown_option=1,
        )
        await client.close()
    assert server.refused == []
    body = server.requests[0]["body"]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        5,
        0.1,
        0.5,
        ["\n"],
        3,
    )


async def test_claude_api_client_under_the_seed_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed README's Claude block, imports changed: ClaudeAPIClient(api_key=...) and
    `await client.generate(messages, **kwargs)` as the llm_generate_func."""
    script = [
        ("ok", anthropic_message([{"type": "text", "text": "Final Answer: 360"}])),
    ]
    with scripted_server(script, check=ANTHROPIC_STRICT) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.root_url)

        async def claude_llm_func(messages: list[dict[str, Any]], **kwargs: Any) -> Any:
            client = ClaudeAPIClient(api_key="your-key")
            return await client.generate(messages, **kwargs)

        config = AgenticRolloutConfig(
            agent_type="react", sandbox={"type": "none"}, save_trajectories=False
        )
        rollout = AgenticRollout(config=config, llm_generate_func=claude_llm_func)
        trajectory = await rollout.agent.run_trajectory(
            prompt={"content": "15 * 24?"}, llm_generate_func=claude_llm_func, request_id="m"
        )
    assert server.refused == []
    assert trajectory.get_final_response() == "360"
    body = server.requests[0]["body"]
    assert body["model"] == ClaudeAPIClient.DEFAULT_MODEL and body["temperature"] == 0.7
    assert server.requests[0]["path"] == "/v1/messages"
    direct = ClaudeAPIClient(api_key="k", model="claude-x", base_url="http://127.0.0.1:9")
    assert direct.model == "claude-x" and isinstance(direct, AnthropicClient)


async def test_connection_errors_name_the_url() -> None:
    port = free_port()
    client = OpenAIClient("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="k", timeout=2)
    with pytest.raises(LLMConnectionError, match=f"http://127.0.0.1:{port}/v1"):
        await client.generate(MESSAGES)
    with pytest.raises(
        LLMConnectionError,
        match=rf"LLM endpoint http://127.0.0.1:{port}/v1/ "
        r"\(model 'm'\) did not answer a one-token request",
    ):
        await client.check()
    await client.close()
