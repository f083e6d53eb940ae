#!/usr/bin/env python3
"""MCP `run` round trip, p50, against the plain HTTP API in the same run.

Usage: bench_mcp.py STARLING_BIN [--trials 50]   (run with the MCP SDK's venv: Scripts/bench-mcp)

A 3-node mesh of real `starling node` processes on 127.0.0.1 (2 slots each). Every trial runs
`/bin/true` once each way, interleaved, through n2 (not the seed):
- http: POST /v1/swarms with one task, follow GET /v1/swarms/ID/events to `done`, then GET
  /v1/swarms/ID for the TaskResult: what the `run` tool does, over HTTP from outside;
- mcp: one `tools/call run` in an open MCP session (the official Python SDK over Streamable HTTP);
- stdio: the same through `starling mcp` over stdio.
Milliseconds from the call to the TaskResult in hand. Nodes are ended by their own PIDs.
"""
import argparse, asyncio, http.client, json, os, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mesh import request, start_mesh, stop, summary

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client


def http_round_trip(port):
    start = time.monotonic()
    status, created = request(port, "POST", "/v1/swarms", {"tasks": [{"argv": ["/bin/true"]}]})
    assert status == 202, (status, created)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", f"/v1/swarms/{created['id']}/events")
    r = c.getresponse()
    while True:
        line = r.fp.readline()
        assert line, "the event stream ended before done"
        if line.startswith(b"event: done"):
            break
    c.close()
    status, swarm = request(port, "GET", f"/v1/swarms/{created['id']}?limit=1")
    assert status == 200 and swarm["tasks"][0]["result"]["exitCode"] == 0, swarm
    return (time.monotonic() - start) * 1000


async def trials(port, starling, n):
    times = {"http": [], "mcp": [], "stdio": []}
    url = f"http://127.0.0.1:{port}/mcp"
    params = StdioServerParameters(command=starling, args=["mcp", "--api", f"127.0.0.1:{port}"])
    async with streamablehttp_client(url) as (read, write, _), stdio_client(params) as (sread, swrite):
        async with ClientSession(read, write) as session, ClientSession(sread, swrite) as ssession:
            await session.initialize()
            await ssession.initialize()
            for i in range(n + 3):
                h = await asyncio.to_thread(http_round_trip, port)
                t0 = time.monotonic()
                answer = await session.call_tool("run", {"argv": ["/bin/true"]})
                m = (time.monotonic() - t0) * 1000
                assert not answer.isError and answer.structuredContent["exitCode"] == 0, answer
                t0 = time.monotonic()
                answer = await ssession.call_tool("run", {"argv": ["/bin/true"]})
                s = (time.monotonic() - t0) * 1000
                assert not answer.isError and answer.structuredContent["exitCode"] == 0, answer
                if i >= 3:  # the first three warm the pools and connections
                    times["http"].append(h)
                    times["mcp"].append(m)
                    times["stdio"].append(s)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--trials", type=int, default=50)
    args = ap.parse_args()
    out = {"trials": args.trials, "nodes": 3, "cores": os.cpu_count(), "binary": args.bin,
           "loadAverage": open("/proc/loadavg").read().split()[:3]}
    work = tempfile.mkdtemp(prefix="starling-bench-mcp.")
    nodes = start_mesh(args.bin, work, ["n1", "n2", "n3"])
    try:
        times = asyncio.run(trials(nodes[1]["api"], args.bin, args.trials))
        out["httpSwarmRoundTripMs"] = summary(times["http"])
        out["mcpRunRoundTripMs"] = summary(times["mcp"])
        out["mcpStdioRunRoundTripMs"] = summary(times["stdio"])
    finally:
        stop(nodes)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
