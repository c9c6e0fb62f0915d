"""Seed README, "4. 多模型支持": the OpenAI and Claude functions as written (imports changed),
pointed at a loopback server by the SDKs' own environment variables (OPENAI_BASE_URL,
ANTHROPIC_BASE_URL), each driving a rollout."""

import asyncio
import importlib
import sys

from orchestrator import AgenticRollout, AgenticRolloutConfig

config = AgenticRolloutConfig(agent_type="react", max_steps=4)


def claude_client_class():  # type: ignore[no-untyped-def]
    """The seed's ``workers.tools.claude_llm_client.ClaudeAPIClient``, wherever ours lives."""
    for module in ("orchestrator.llm", "orchestrator"):
        cls = getattr(importlib.import_module(module), "ClaudeAPIClient", None)
        if cls is not None:
            return cls
    return None


# OpenAI API
async def openai_llm_func(messages, **kwargs):  # type: ignore[no-untyped-def]
    import openai

    client = openai.AsyncOpenAI(api_key="your-key")
    response = await client.chat.completions.create(model="gpt-4", messages=messages, **kwargs)
    return response.choices[0].message.content


# Claude API
async def claude_llm_func(messages, **kwargs):  # type: ignore[no-untyped-def]
    ClaudeAPIClient = claude_client_class()
    client = ClaudeAPIClient(api_key="your-key")
    return await client.generate(messages, **kwargs)


async def main(which: str) -> None:
    func = openai_llm_func if which == "openai" else claude_llm_func
    if which == "claude" and claude_client_class() is None:
        print("claude: no ClaudeAPIClient")
        return
    # 与任何兼容LLM一起使用
    rollout = AgenticRollout(config=config, llm_generate_func=func)
    trajectory = await rollout.agent.run_trajectory(
        prompt={"content": "What is 6 * 7?"}, llm_generate_func=func, request_id=which
    )
    print(which, trajectory.status.value, trajectory.get_final_response())
    print(which, [s.content for s in trajectory.get_tool_results()])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
