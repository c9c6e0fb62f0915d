"""The seed README's "custom agent" block (section 2), unchanged apart from its imports.

Kept verbatim (only ``workers.core.*`` became ``agents.base`` / ``orchestrator.trajectory``) so
the tests that run it - through ``AgenticRollout``, the CLI's ``--agent
tests.seed.custom_agent:CustomReasoningAgent`` and a direct ``run_trajectory`` call - keep the
seed's promise that this is how a custom agent is written.
"""
# ruff: noqa
# fmt: off

from agents.base import BaseAgent
from orchestrator.trajectory import Trajectory, TrajectoryStep, StepType

class CustomReasoningAgent(BaseAgent):
    async def run_trajectory(self, prompt, llm_generate_func, request_id, **kwargs):
        trajectory = Trajectory(request_id=request_id)
        
        # 添加初始观察
        obs_step = TrajectoryStep(
            step_type=StepType.OBSERVATION,
            content=str(prompt.get('content', prompt))
        )
        trajectory.add_step(obs_step)
        
        # 自定义推理逻辑
        while self.should_continue(trajectory):
            # 生成LLM响应
            messages = self.format_messages_for_llm(trajectory)
            response = await llm_generate_func(messages)
            
            # 解析并添加步骤
            step = self.parse_llm_output(response)
            trajectory.add_step(step)
            
            # 如需要，处理工具调用
            if step.tool_name:
                result_step = await self.execute_tool_call(
                    step.tool_name, step.tool_args, trajectory
                )
                trajectory.add_step(result_step)
        
        self.finalize_trajectory(trajectory)
        return trajectory

# 使用自定义智能体
agent = CustomReasoningAgent(max_steps=8)
