"""LLM clients and retries against a real HTTP server on 127.0.0.1, through the real SDKs."""

from __future__ import annotations

import asyncio
import time

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
from .llm_server import anthropic_message, openai_completion, scripted_server

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
    summary = await AgenticRollout(config).run(["a", "b"])
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
