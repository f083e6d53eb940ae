#!/usr/bin/env python3
"""Swarm benchmark: a 3-node mesh of real `starling node` processes on 127.0.0.1.

Usage: bench_swarm.py STARLING_BIN [--tasks 1000] [--slots 2] [--single 50] [--wide 100]

1. Throughput: `--tasks` sandboxed `/bin/true` tasks in one swarm, submitted through n2 (not the
   seed). Tasks/s from submit to the last result, and per-task latency from submit to its result
   (its `task` event on the swarm's event stream). Baseline in the same run, before the mesh
   starts: the same commands under raw bwrap (the namespaces and mounts Starling's sandboxes
   use, without cgroups, seccomp or work dirs), run by a plain loop with as many workers as the
   mesh has slots in total (3 x --slots). The aim: ratio >= 0.8. Also the ceiling under any
   mesh: the same tasks through Starling's sandbox runner alone (`starling sandbox bench
   --throughput`), with its own raw-bwrap run; `ratioToSandboxAlone` is the mesh's own share.
2. Single-task swarm through a node that does not own it, warm pool: submit -> result (the
   `task` event), `--single` trials; p50 and p99. The aim: p50 <= 5 ms.
3. A `--wide`-wide sub-swarm spawned from inside a task through $STARLING_SOCKET: the time from
   the child's POST (measured inside the task) until all its results are in, and from the
   parent's submit until the parent is done.

Nodes are ended by their own PIDs (try/finally). Prints one JSON object.
"""
import argparse, concurrent.futures, http.client, json, os, shutil, subprocess, tempfile, time

BWRAP = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
         "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
         "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--"]
from bench_mesh import request, start_mesh, stop, summary

TASK_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/task", "TMPDIR": "/tmp"}


class Events:
    """Reads a swarm's server-sent events; calls on_task(task_id, arrival) per `task` event."""

    def __init__(self, port, swarm, timeout=600):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", f"/v1/swarms/{swarm}/events")
        self.resp = self.conn.getresponse()

    def follow(self, on_task):
        event = None
        while True:
            line = self.resp.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
                if event == "done":
                    return
            elif line.startswith("data:") and event == "task":
                on_task(json.loads(line[5:]).get("id"), time.monotonic())
        self.conn.close()


def baseline(tasks, workers):
    """The same commands under raw bwrap, `workers` at a time; returns (tasks/s, latencies ms)."""
    start = time.monotonic()

    def one(_):
        subprocess.run(BWRAP + ["/bin/true"], env=TASK_ENV, check=True)
        return (time.monotonic() - start) * 1000

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        done = list(pool.map(one, range(tasks)))
    wall = time.monotonic() - start
    return tasks / wall, done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--single", type=int, default=50)
    ap.add_argument("--wide", type=int, default=100)
    ap.add_argument("--store-sync", choices=["full", "normal"], default="full",
                    help="the nodes' --store-sync (full is their default; normal only to measure what durability costs)")
    args = ap.parse_args()
    out = {"tasks": args.tasks, "nodes": 3, "slotsPerNode": args.slots, "cores": os.cpu_count(), "storeSync": args.store_sync,
           "loadAverage": open("/proc/loadavg").read().split()[:3]}

    workers = 3 * args.slots
    base_rate, base_lat = baseline(args.tasks, workers)
    out["baseline"] = {"what": f"raw bwrap /bin/true, plain loop, {workers} workers", "tasksPerSecond": round(base_rate, 1),
                       "completionMs": summary(base_lat)}

    # The ceiling under the mesh: the same tasks through Starling's sandbox runner alone (no
    # mesh, no HTTP, no store), warm pool as large as the mesh's, against raw bwrap again in
    # the same command. Whatever the mesh does, its ratio cannot pass this one.
    alone_workers = min(workers, 64)  # the command's bound on threads and pool
    alone = json.loads(subprocess.run([args.bin, "sandbox", "bench", "--throughput", str(args.tasks), "--workers", str(alone_workers),
                                       "--pool", str(alone_workers)], check=True, capture_output=True, text=True).stdout)
    out["sandboxAlone"] = {"what": f"Starling's sandbox runner alone, {alone_workers} threads, warm pool {alone_workers}, no mesh",
                           "failed": alone["starlingSandbox"]["failed"], "rawFailed": alone["rawBwrap"]["failed"],
                           "tasksPerSecond": round(alone["starlingSandbox"]["tasksPerSecond"], 1),
                           "rawBwrapTasksPerSecond": round(alone["rawBwrap"]["tasksPerSecond"], 1),
                           "ratioToRawBwrap": round(alone["ratioToRaw"], 3),
                           "machineCpuMsPerTask": {"sandbox": round(alone["starlingSandbox"]["machineCpuMsPerTask"], 2),
                                                   "rawBwrap": round(alone["rawBwrap"]["machineCpuMsPerTask"], 2)}}

    work = tempfile.mkdtemp(prefix="starling-bench-swarm.")
    nodes = start_mesh(args.bin, work, ["n1", "n2", "n3"], slots=args.slots, extra=["--store-sync", args.store_sync])
    try:
        api = nodes[1]["api"]

        # 1. Throughput through n2.
        spec = {"tasks": [{"id": f"t{i}", "argv": ["/bin/true"], "memoryMB": 32} for i in range(args.tasks)]}
        arrivals = {}
        t0 = time.monotonic()
        status, body = request(api, "POST", "/v1/swarms", spec)
        assert status == 202, (status, body)
        Events(api, body["id"]).follow(lambda tid, at: arrivals.setdefault(tid, at))
        wall = max(arrivals.values()) - t0
        rate = len(arrivals) / wall
        final = request(api, "GET", f"/v1/swarms/{body['id']}?tasks=false")[1]
        out["mesh"] = {"tasksPerSecond": round(rate, 1), "submitToResultMs": summary([(t - t0) * 1000 for t in arrivals.values()]),
                       "results": len(arrivals), "succeeded": final.get("succeeded"), "owner": body.get("owner")}
        out["ratioToBaseline"] = round(rate / base_rate, 3)
        out["ratioToSandboxAlone"] = round(rate / out["sandboxAlone"]["tasksPerSecond"], 3)

        # 2. Single-task swarms through a node that does not own them (warm pool).
        # The create's answer (the 202: the owner and a majority of replicas hold the swarm) is
        # timed too, to tell the create's share of the path from placement, the run and the result.
        lat, created, owned_here = [], [], 0
        for i in range(args.single * 3):
            if len(lat) >= args.single:
                break
            t = time.monotonic()
            status, body = request(api, "POST", "/v1/swarms", {"tasks": [{"argv": ["/bin/true"], "memoryMB": 32}]})
            answered = time.monotonic()
            got = []
            Events(api, body["id"]).follow(lambda tid, at: got.append(at))
            if body.get("owner") == "n2":
                owned_here += 1
                continue
            lat.append((got[0] - t) * 1000)
            created.append((answered - t) * 1000)
        out["singleTaskThroughNonOwner"] = {"submitToResultMs": summary(lat), "submitToCreatedMs": summary(created),
                                            "skippedOwnedByEntry": owned_here}

        # 3. A wide sub-swarm from inside a task.
        script = f"""
api() {{ curl -sf --unix-socket "$STARLING_SOCKET" "$@"; }}
body='{{"tasks": [' ; i=0
while [ $i -lt {args.wide} ]; do [ $i -gt 0 ] && body="$body,"; body="$body{{\\"argv\\": [\\"/bin/true\\"], \\"memoryMB\\": 32}}"; i=$((i+1)); done
body="$body]}}"
t0=$(date +%s%N)
id=$(api -X POST -H 'content-type: application/json' -d "$body" http://starling/v1/swarms | sed -E 's/.*"id" *: *"([^"]+)".*/\\1/')
until api "http://starling/v1/swarms/$id?tasks=false" | grep -q '"state" *: *"done"'; do sleep 0.02; done
t1=$(date +%s%N)
echo $(( (t1 - t0) / 1000000 ))
"""
        t = time.monotonic()
        status, body = request(api, "POST", "/v1/swarms", {"spawn": {"maxTasks": args.wide, "maxDepth": 1},
                                                            "tasks": [{"id": "wide", "argv": ["sh", "wide.sh"], "files": {"wide.sh": script},
                                                                       "timeoutSeconds": 300, "memoryMB": 64}]})
        assert status == 202, (status, body)
        Events(api, body["id"]).follow(lambda tid, at: None)
        parent_ms = (time.monotonic() - t) * 1000
        task = request(api, "GET", f"/v1/swarms/{body['id']}")[1]["tasks"][0]
        stdout = (task.get("result") or {}).get("stdout", "").strip()
        out["subSwarm"] = {"width": args.wide, "state": task.get("state"),
                           "childSubmitToAllResultsMs": int(stdout) if stdout.isdigit() else None,
                           "parentSubmitToDoneMs": round(parent_ms, 1)}
    finally:
        stop(nodes)
        shutil.rmtree(work, ignore_errors=True)
    out["loadAverageAfter"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
