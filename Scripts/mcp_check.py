#!/usr/bin/env python3
"""Drives a Starling node's MCP server with the official MCP Python SDK (PyPI `mcp`).

    mcp_check.py http URL                 # Streamable HTTP, e.g. http://127.0.0.1:8400/mcp
    mcp_check.py stdio STARLING API       # `STARLING mcp --api API`, over stdio

The node must run with a policy that allows `python3` and denies `sh`. Checks, in one MCP
session: the tool list; `run` of python3 -c 'print(6*7)' gives 42; a 20-task swarm and its
results; a task the policy denies is a tool error and the session goes on; a bad swarm id is a
tool error; sessions and an effect that replays. Prints one JSON object; exits 1 with the
reason on the first failed check.
"""
import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

TOOLS = {"run", "spawn_swarm", "swarm_status", "cancel_swarm", "session_create",
         "session_checkpoint", "session_get", "act", "members"}


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def checks(session):
    report = {}
    await session.initialize()

    listed = await session.list_tools()
    names = {t.name for t in listed.tools}
    check(names == TOOLS, f"tools/list named {sorted(names)}")
    for tool in listed.tools:
        check(tool.description and len(tool.description) > 20, f"{tool.name} has no description")
        check(tool.inputSchema.get("type") == "object", f"{tool.name}'s schema is not an object schema")
    report["tools"] = sorted(names)

    answer = await session.call_tool("run", {"argv": ["python3", "-c", "print(6*7)"]})
    check(not answer.isError, f"run failed: {text(answer)}")
    result = answer.structuredContent
    check(result["stdout"].strip() == "42" and result["exitCode"] == 0, f"run answered {result}")
    check(json.loads(text(answer))["stdout"].strip() == "42", "run's text content is not its TaskResult")
    report["run"] = {"stdout": result["stdout"].strip(), "node": result["node"]}

    tasks = [{"id": f"sq{i}", "argv": ["python3", "-c", f"print({i}*{i})"]} for i in range(20)]
    spawned = await session.call_tool("spawn_swarm", {"tasks": tasks})
    check(not spawned.isError, f"spawn_swarm failed: {text(spawned)}")
    swarm = spawned.structuredContent["id"]
    status = await session.call_tool("swarm_status", {"id": swarm, "waitSeconds": 300})
    check(not status.isError, f"swarm_status failed: {text(status)}")
    s = status.structuredContent
    check(s["state"] == "done" and s["total"] == 20 and s["succeeded"] == 20, f"the swarm ended {s['state']} with {s['succeeded']}/{s['total']}")
    outputs = {t["id"]: t["result"]["stdout"].strip() for t in s["tasks"]}
    check(outputs == {f"sq{i}": str(i * i) for i in range(20)}, f"the swarm's results are {outputs}")
    report["swarm"] = {"id": swarm, "succeeded": s["succeeded"], "nodes": sorted({t["result"]["node"] for t in s["tasks"]})}

    denied = await session.call_tool("run", {"argv": ["sh", "-c", "echo not allowed"]})
    check(denied.isError, f"a task the policy denies was not a tool error: {text(denied)}")
    check("allow" in text(denied) or "denied" in text(denied), f"the denial does not say why: {text(denied)}")
    report["denied"] = text(denied)

    bad = await session.call_tool("swarm_status", {"id": "not-a-swarm"})
    check(bad.isError, "a bad swarm id was not a tool error")
    missing = await session.call_tool("cancel_swarm", {"id": "0123456789abcdef"})
    check(missing.isError and "no swarm" in text(missing), f"cancelling no swarm: {text(missing)}")

    # The session still works after the errors.
    again = await session.call_tool("run", {"argv": ["python3", "-c", "print(6*7)"]})
    check(not again.isError and again.structuredContent["stdout"].strip() == "42", f"run after the errors: {text(again)}")
    members = await session.call_tool("members", {})
    check(not members.isError and len(members.structuredContent["members"]) >= 1, f"members: {text(members)}")
    report["members"] = sorted(m["name"] for m in members.structuredContent["members"])

    created = await session.call_tool("session_create", {})
    check(not created.isError, f"session_create: {text(created)}")
    sid = created.structuredContent["id"]
    saved = await session.call_tool("session_checkpoint", {"id": sid, "state": {"step": 1, "notes": ["a"]}})
    check(not saved.isError and saved.structuredContent["seq"] >= 1, f"session_checkpoint: {text(saved)}")
    effect = {"session": sid, "key": "k1", "argv": ["python3", "-c", "print('effect')"]}
    first = await session.call_tool("act", effect)
    check(not first.isError and first.structuredContent["replayed"] is False, f"act: {text(first)}")
    second = await session.call_tool("act", effect)
    check(not second.isError and second.structuredContent["replayed"] is True, f"act again did not replay: {text(second)}")
    check(second.structuredContent["result"]["stdout"] == first.structuredContent["result"]["stdout"], "the replayed result differs")
    got = await session.call_tool("session_get", {"id": sid})
    check(not got.isError and got.structuredContent["state"] == {"step": 1, "notes": ["a"]}, f"session_get: {text(got)}")
    check([e["key"] for e in got.structuredContent["journal"]] == ["k1"], f"the journal is {got.structuredContent['journal']}")
    report["session"] = {"id": sid, "journal": 1}
    return report


async def checked(session):
    # Caught here, inside the SDK's task groups, which would wrap it in an exception group.
    try:
        return {"ok": True, **(await checks(session))}
    except CheckFailed as failure:
        return {"ok": False, "failure": str(failure)}


async def main():
    mode = sys.argv[1]
    if mode == "http":
        async with streamablehttp_client(sys.argv[2], timeout=60, sse_read_timeout=600) as (read, write, _):
            async with ClientSession(read, write) as session:
                return await checked(session)
    params = StdioServerParameters(command=sys.argv[2], args=["mcp", "--api", sys.argv[3]])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            return await checked(session)


if __name__ == "__main__":
    report = asyncio.run(main())
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)
