#!/usr/bin/env python3
"""Session benchmark: a 4-node mesh of real `starling node` processes on 127.0.0.1.

Usage: bench_sessions.py STARLING_BIN [--creates 200] [--checkpoints 200] [--large 20] [--resumes 3]

1. Session creations per second through one node (n1; creates whose ring owner is another node
   are forwarded), one client at a time, and the latency of each.
2. Checkpoints per second through n1 with R = 3 (each answered once a majority stored it), with a
   4 KiB state and with a 1 MiB state (pseudo-random words; one field changes per checkpoint),
   one client at a time; for the 1 MiB state also the session-channel bytes the nodes sent and
   the bytes they wrote to disk, per checkpoint (states travel and are stored as chunks).
3. Breakpoint resume: a session owned by another node than n1 gets a checkpoint; its owner is
   killed (SIGKILL); the time until a survivor answers GET with the state (polled every 20 ms).
   Each trial kills one node; the mesh is restarted between trials.

4. `starling session bench` (in-process, no network): one 1 MiB checkpoint's steps (route JSON,
   BLAKE2b, chunking, seal, check, append codec whole and chunked, store write chunked and whole)
   in ms, and a record's signs and verifies per second ("checkpointSteps").

Placement figures (moves on a join, max/avg load) are `Scripts/bench-placement`'s. Nodes are ended by
their own PIDs (try/finally). Prints one JSON object.
"""
import argparse, http.client, json, os, random, shutil, signal, subprocess, tempfile, time

from bench_mesh import request, start_mesh, stop, summary, wait_until


def session_bytes_sent(nodes):
    """Bytes every node sent on the session channel (starling_link_bytes_total, out)."""
    total = 0
    for n in nodes:
        conn = http.client.HTTPConnection("127.0.0.1", n["api"], timeout=10)
        conn.request("GET", "/metrics")
        for line in conn.getresponse().read().decode().splitlines():
            if line.startswith("starling_link_bytes_total") and 'channel="session"' in line and 'direction="out"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        conn.close()
    return total


def bytes_written(nodes):
    """Bytes the node processes caused to be written to storage (/proc/PID/io)."""
    total = 0
    for n in nodes:
        with open(f"/proc/{n['proc'].pid}/io") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("write_bytes:"))
    return total


def timed(fn, count):
    latencies = []
    start = time.monotonic()
    for i in range(count):
        t = time.monotonic()
        fn(i)
        latencies.append((time.monotonic() - t) * 1000)
    return count / (time.monotonic() - start), latencies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--checkpoints", type=int, default=200)
    ap.add_argument("--large", type=int, default=20)
    ap.add_argument("--resumes", type=int, default=3)
    args = ap.parse_args()
    out = {"nodes": 4, "replicas": 3, "cores": os.cpu_count(), "loadAverage": open("/proc/loadavg").read().split()[:3]}
    work = tempfile.mkdtemp(prefix="starling-bench-sessions.")
    nodes = []
    steps = subprocess.run([args.bin, "session", "bench"], check=True, capture_output=True, text=True).stdout
    out["checkpointSteps"] = json.loads(steps)
    out["recordSignsPerSecond"] = out["checkpointSteps"]["recordSignsPerSecond"]
    out["recordVerifiesPerSecond"] = out["checkpointSteps"]["recordVerifiesPerSecond"]
    try:
        nodes = start_mesh(args.bin, work, ["n1", "n2", "n3", "n4"])
        entry = nodes[0]["api"]

        def create(i):
            status, body = request(entry, "POST", "/v1/sessions", {"id": f"bench-{i}"})
            assert status == 201, body
        rate, lat = timed(create, args.creates)
        out["createsPerSecond"] = round(rate, 1)
        out["createMs"] = summary(lat)

        small = {"blob": "x" * 4096}
        def checkpoint_small(i):
            status, body = request(entry, "POST", "/v1/sessions/bench-0/checkpoint", {"state": small})
            assert status == 200, body
        rate, lat = timed(checkpoint_small, args.checkpoints)
        out["checkpoints4KiBPerSecond"] = round(rate, 1)
        out["checkpoint4KiBMs"] = summary(lat)

        # A 1 MiB agent-like state (pseudo-random words, not one repeated byte) of which one
        # field changes per checkpoint, as an agent's state does between two steps.
        words = random.Random(7)
        notes = " ".join("".join(words.choice("abcdefghijklmnop") for _ in range(words.randint(2, 9))) for _ in range(200_000))
        notes = notes[: (1 << 20) - 64]
        def checkpoint_large(i):
            state = {"counter": i, "notes": notes}
            status, body = request(entry, "POST", "/v1/sessions/bench-1/checkpoint", {"state": state}, timeout=60)
            assert status == 200, body
        checkpoint_large(-1)  # the first state is sent whole; the bench measures the ones after it
        sent, written = session_bytes_sent(nodes), bytes_written(nodes)
        rate, lat = timed(checkpoint_large, args.large)
        out["checkpoints1MiBPerSecond"] = round(rate, 2)
        out["checkpoint1MiBMs"] = summary(lat)
        # Per checkpoint, all four nodes together: session-channel bytes sent between nodes,
        # and bytes the node processes wrote to disk (/proc/PID/io write_bytes: SQLite, WAL,
        # audit log, logs).
        out["checkpoint1MiBSessionBytesSent"] = round((session_bytes_sent(nodes) - sent) / args.large)
        out["checkpoint1MiBBytesWritten"] = round((bytes_written(nodes) - written) / args.large)
        stop(nodes)

        resumes = []
        for trial in range(args.resumes):
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            nodes = start_mesh(args.bin, work, ["n1", "n2", "n3", "n4"])
            entry = nodes[0]["api"]
            for i in range(50):
                status, body = request(entry, "POST", "/v1/sessions", {"id": f"resume-{trial}-{i}"})
                if status == 201 and body["owner"] != "n1":
                    sid, owner = body["id"], body["owner"]
                    break
            status, body = request(entry, "POST", f"/v1/sessions/{sid}/checkpoint", {"state": {"trial": trial}})
            assert status == 200, body
            victim = next(n for n in nodes if n["name"] == owner)
            killed = time.monotonic()
            victim["proc"].send_signal(signal.SIGKILL)
            while True:
                try:
                    status, body = request(entry, "GET", f"/v1/sessions/{sid}", timeout=20)
                except OSError:
                    status = 0
                if status == 200 and body.get("state") == {"trial": trial}:
                    break
                if time.monotonic() - killed > 60:
                    raise SystemExit("the session did not resume within 60 s")
                time.sleep(0.02)
            resumes.append((time.monotonic() - killed) * 1000)
            stop(nodes)
        out["resumeAfterKillMs"] = summary(resumes)
        out["resumeAfterKillMsEach"] = [round(r, 1) for r in resumes]
    finally:
        stop(nodes)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
