#!/usr/bin/env python3
"""Membership benchmark with real `starling node` processes on 127.0.0.1.

For each run: start N nodes (one seed, the rest joining through it), wait until all list N
alive, measure UDP bytes per second per node at rest, start one more node and time until it
is known alive to all, then SIGKILL one node and time the first suspicion and "dead at every
member". Nodes are ended by their own PIDs. Prints one JSON object.
"""
import json, os, random, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

BIN = sys.argv[1]
RUNS = [("loopback", 8), ("loopback", 24), ("lan", 5)]


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    while True:
        port = random.randint(20000, 60000)
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind)
                s.bind(("127.0.0.1", port))
                s.close()
            return port
        except OSError:
            continue


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return r.read()


def members(port):
    try:
        return {m["name"]: m["status"] for m in json.loads(get(port, "/v1/members"))["members"]}
    except Exception:
        return None


def udp_bytes_out(port):
    for line in get(port, "/metrics").decode().splitlines():
        if line.startswith('starling_gossip_bytes_out_total{transport="udp"}'):
            return float(line.split()[-1])
    return 0.0


class Cluster:
    def __init__(self, preset):
        self.dir = tempfile.mkdtemp(prefix="starling-bench-")
        self.key = os.path.join(self.dir, "cluster.key")
        subprocess.run([BIN, "keygen", "--out", self.key], check=True, stdout=subprocess.DEVNULL)
        self.preset = preset
        self.procs = {}
        self.ports = {}
        self.base = random.randint(20000, 50000)

    def start(self, name, i, join=None):
        g, a = free_port(), free_port()
        args = [BIN, "node", "--name", name, "--gossip", f"127.0.0.1:{g}", "--api", f"127.0.0.1:{a}",
                "--data", os.path.join(self.dir, name), "--key-file", self.key, "--preset", self.preset,
                "--slots", "2", "--log-level", "warning"]
        if join:
            args += ["--join", f"127.0.0.1:{join}"]
        log = open(os.path.join(self.dir, name + ".log"), "w")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=log)
        self.ports[name] = (g, a)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                get(a, "/v1/health")
                return
            except Exception:
                time.sleep(0.02)
        with open(os.path.join(self.dir, name + ".log")) as f:
            sys.stderr.write(f.read()[-2000:])
        raise RuntimeError(f"{name} did not come up")

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            p.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_all(cluster, names, predicate, timeout):
    """Polls every node in `names` concurrently until predicate(view) holds for each; returns
    the time (s) at which each first held, or raises on timeout."""
    done = {}
    stop = time.time() + timeout

    def watch(n):
        port = cluster.ports[n][1]
        while time.time() < stop:
            v = members(port)
            if v is not None and predicate(v):
                done[n] = time.time()
                return
            time.sleep(0.005)

    threads = [threading.Thread(target=watch, args=(n,)) for n in names]
    for t in threads: t.start()
    for t in threads: t.join()
    if len(done) != len(names):
        raise RuntimeError("timed out")
    return done


def bench(preset, n):
    c = Cluster(preset)
    try:
        names = [f"n{i}" for i in range(n)]
        c.start(names[0], 0)
        for i, name in enumerate(names[1:], 1):
            c.start(name, i, join=c.ports[names[0]][0])
        wait_all(c, names, lambda v: sum(s == "alive" for s in v.values()) == n, 60)
        time.sleep(1)
        before = [udp_bytes_out(c.ports[x][1]) for x in names]
        rest_window = 5.0
        time.sleep(rest_window)
        after = [udp_bytes_out(c.ports[x][1]) for x in names]
        udp_rate = sum(b - a for a, b in zip(before, after)) / n / rest_window

        joiner = f"n{n}"
        t0 = time.time()
        c.start(joiner, n, join=c.ports[names[0]][0])
        api_up = time.time() - t0
        seen = wait_all(c, names, lambda v: v.get(joiner) == "alive", 60)
        join_ms = (max(seen.values()) - t0) * 1000
        everyone = names + [joiner]

        victim = names[-1]
        observers = [x for x in everyone if x != victim]
        first = {}
        def first_suspicion():
            stop = time.time() + 60
            while time.time() < stop and not first:
                for x in observers:
                    v = members(c.ports[x][1])
                    if v and v.get(victim) in ("suspect", "dead"):
                        first.setdefault("t", time.time())
                        return
        t_kill = time.time()
        c.procs[victim].send_signal(signal.SIGKILL)
        th = threading.Thread(target=first_suspicion); th.start()
        dead = wait_all(c, observers, lambda v: v.get(victim) == "dead", 120)
        th.join()
        return {
            "preset": preset, "nodes": n,
            "firstSuspicionMs": round((first.get("t", max(dead.values())) - t_kill) * 1000, 1),
            "deadAtEveryMemberMs": round((max(dead.values()) - t_kill) * 1000, 1),
            "newNodeKnownToAllMs": round(join_ms, 1),
            "newNodeApiUpMs": round(api_up * 1000, 1),
            "udpBytesPerSecondPerNodeAtRest": round(udp_rate, 1),
        }
    finally:
        c.stop()


runs = []
for preset, n in RUNS:
    runs.append(bench(preset, n))
print(json.dumps({"benchmark": "membership", "note": "times include HTTP polling (about 5 ms per node); newNodeKnownToAllMs counts from process spawn, newNodeApiUpMs is the part spent starting the process", "runs": runs}, indent=1))
