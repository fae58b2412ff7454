"""An OpenAI Agents SDK agent on the board, through ``quorumboard mcp`` (MCPServerStdio).

The board's MCP server runs as its own process (the Agents SDK and quorumboard need not share an
environment) and is given an explicit environment, as every MCP host does: the endpoints and
the cluster secret must be passed in ``env`` or the server never sees them.

    export QUORUMBOARD_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    export QUORUMBOARD_SECRET=...            # if the cluster has one
    export OPENAI_API_KEY=...
    python examples/openai_agents_board.py --agent writer-1 --task tasks/intro

``--base-url`` points the agent at any OpenAI-compatible chat-completions server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from agents.mcp import MCPServerStdio
from openai import AsyncOpenAI

from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

INSTRUCTIONS = """You work on a shared blackboard with other agents, through the board_* tools.
To do task {task}: board_claim it (ttl_s 60); write your result to results/{name} with
board_put, passing claim="{task}"; then board_release the task. If a write is refused, read the
error's first line and its hint, and act on it."""


def board_server(agent: str) -> MCPServerStdio:
    """``quorumboard mcp --agent AGENT`` as a stdio subprocess, with its environment spelled
    out (the same as the host config in examples/mcp-host-config.json)."""
    env = {"QUORUMBOARD_ENDPOINTS": os.environ["QUORUMBOARD_ENDPOINTS"]}
    args = ["-m", "quorumboard.consensus.cli", "mcp", "--agent", agent]
    if os.environ.get("QUORUMBOARD_SECRET"):
        env["QUORUMBOARD_SECRET"] = os.environ["QUORUMBOARD_SECRET"]
        args += ["--secret-env", "QUORUMBOARD_SECRET"]
    # board_wait may hold a call for up to 25 s: allow for it.
    return MCPServerStdio({"command": sys.executable, "args": args, "env": env},
                          name="quorumboard", client_session_timeout_seconds=30)


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agent", default="writer-1")
    p.add_argument("--task", default="tasks/intro")
    p.add_argument("--model", default="gpt-4.1-mini")
    p.add_argument("--base-url", default=None, help="an OpenAI-compatible API (default OpenAI)")
    p.add_argument("--max-turns", type=int, default=8)
    args = p.parse_args()
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    async with board_server(args.agent) as server:
        client = AsyncOpenAI(base_url=args.base_url,
                             api_key=os.environ.get("OPENAI_API_KEY", "not-needed-locally"))
        agent = Agent(name=args.agent, mcp_servers=[server],
                      instructions=INSTRUCTIONS.format(task=args.task,
                                                       name=args.task.rsplit("/", 1)[-1]),
                      model=OpenAIChatCompletionsModel(model=args.model, openai_client=client))
        result = await Runner.run(agent, f"Do task {args.task}.", max_turns=args.max_turns)
        print(json.dumps({"final_output": str(result.final_output)}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
