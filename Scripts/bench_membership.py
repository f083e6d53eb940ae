#!/usr/bin/env python3
"""Membership benchmark with real `starling node` processes on 127.0.0.1.

Usage: bench_membership.py STARLING_BIN [--trials N] [--nodes N] [--presets lan,memberlist] [--quick]

Detection (always): for each trial, for each preset in turn (lan, memberlist, lan, ... so that
the machine's noise falls on both), start a fresh cluster of `--nodes` nodes, wait until every
node lists all alive, wait a random part of a probe period more (so that the kill lands at a
random point of every node's probe cycle), SIGKILL one node chosen at random, and poll every
survivor's /v1/members until each lists the victim dead. Per trial:
- firstSuspicionMs: kill -> the first survivor lists the victim suspect or dead;
- firstDeadMs / deadAtEveryMemberMs: kill -> the first / the last survivor lists it dead;
- spreadMs: between the first and the last survivor to list it dead;
- falsePositives: survivors that listed another survivor dead (at any poll, kill to end);
- falseSuspicions: survivors that listed another survivor suspect (refuted, so no harm done,
  but a sign of a too-tight timing);
- counters: deltas of starling_deaths_total, starling_refutations_total,
  starling_accusations_told_total and starling_urgent_probes_total summed over the survivors.
Per preset: median, min and max of each time. The lan/memberlist ratio of the medians comes
from the same run, so the same noise.

Steady state (unless --quick, one trial each): loopback N = 8 and 24 and lan N = 5: UDP bytes
per second per node at rest, and the time for a new node to be known alive to all.

Nodes are ended by their own PIDs (try/finally). Prints one JSON object.
"""
import argparse, json, os, random, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

POLL_PAUSE = 0.005  # seconds between two polls of one node (each poll is one HTTP GET)


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
    """name -> status as the node on API port `port` lists them now, or None if it did not answer."""
    try:
        return {m["name"]: m["status"] for m in json.loads(get(port, "/v1/members"))["members"]}
    except Exception:
        return None


def metrics(port):
    """Prometheus samples of the node, "name{labels}" -> value; {} if it did not answer."""
    try:
        text = get(port, "/metrics").decode()
    except Exception:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            parts = line.rsplit(" ", 1)
            try:
                samples[parts[0]] = float(parts[1])
            except (IndexError, ValueError):
                pass
    return samples


class Cluster:
    def __init__(self, binary, preset):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="starling-bench-")
        self.key = os.path.join(self.dir, "cluster.key")
        subprocess.run([binary, "keygen", "--out", self.key], check=True, stdout=subprocess.DEVNULL)
        self.preset = preset
        self.procs = {}
        self.ports = {}

    def start(self, name, join=None):
        g, a = free_port(), free_port()
        args = [self.binary, "node", "--name", name, "--gossip", f"127.0.0.1:{g}", "--api", f"127.0.0.1:{a}",
                "--data", os.path.join(self.dir, name), "--key-file", self.key, "--preset", self.preset,
                "--slots", "2", "--log-level", "warning"]
        if join:
            args += ["--join", f"127.0.0.1:{join}"]
        log = open(os.path.join(self.dir, name + ".log"), "w")
        try:
            self.procs[name] = subprocess.Popen(args, stdout=log, stderr=log)
        finally:
            log.close()
        self.ports[name] = (g, a)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                get(a, "/v1/health")
                return
            except Exception:
                time.sleep(0.02)
        with open(os.path.join(self.dir, name + ".log")) as f:
            sys.stderr.write(f.read()[-2000:])
        raise RuntimeError(f"{name} did not come up")

    def start_all(self, names):
        self.start(names[0])
        for name in names[1:]:
            self.start(name, join=self.ports[names[0]][0])
        wait_all(self, names, lambda v: sum(s == "alive" for s in v.values()) == len(names), 60)

    def api(self, name):
        return self.ports[name][1]

    def kill(self, name):
        self.procs[name].send_signal(signal.SIGKILL)

    def stop(self):
        """Kills every node this cluster started, by its PID, and removes the work dir."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_all(cluster, names, predicate, timeout):
    """Polls every node in `names` concurrently until predicate(view) holds for each; returns
    the monotonic time at which each first held, or raises on timeout."""
    done = {}
    stop = time.monotonic() + timeout

    def watch(n):
        port = cluster.api(n)
        while time.monotonic() < stop:
            v = members(port)
            if v is not None and predicate(v):
                done[n] = time.monotonic()
                return
            time.sleep(POLL_PAUSE)

    threads = [threading.Thread(target=watch, args=(n,)) for n in names]
    for t in threads: t.start()
    for t in threads: t.join()
    if len(done) != len(names):
        raise RuntimeError(f"timed out; held at {sorted(done)} of {names}")
    return done


COUNTERS = ["starling_deaths_total", "starling_refutations_total", "starling_suspicions_total",
            "starling_accusations_told_total", "starling_urgent_probes_total"]


def counter_sums(cluster, names):
    sums = dict.fromkeys(COUNTERS, 0.0)
    for n in names:
        m = metrics(cluster.api(n))
        for c in COUNTERS:
            sums[c] += m.get(c, 0.0)
    return sums


def detection_trial(binary, preset, n, probe_interval=1.0):
    """One fresh cluster of `n`, one SIGKILL; see the module doc for the figures."""
    c = Cluster(binary, preset)
    try:
        names = [f"n{i}" for i in range(n)]
        c.start_all(names)
        # Every node has probed a few times; then a random part of a period more, so that the
        # kill lands anywhere in the probe cycles.
        time.sleep(2 * probe_interval + random.uniform(0, probe_interval))
        victim = random.choice(names)
        survivors = [x for x in names if x != victim]
        before = counter_sums(c, survivors)

        suspected, dead = {}, {}
        false_dead, false_suspect = set(), set()
        stop = threading.Event()

        def watch(observer):
            port = c.api(observer)
            while not stop.is_set():
                v = members(port)
                now = time.monotonic()
                if v is not None:
                    status = v.get(victim)
                    if status in ("suspect", "dead"): suspected.setdefault(observer, now)
                    if status == "dead": dead.setdefault(observer, now)
                    for other in survivors:
                        if v.get(other) == "dead": false_dead.add(f"{observer} saw {other} dead")
                        if v.get(other) == "suspect": false_suspect.add(f"{observer} saw {other} suspect")
                time.sleep(POLL_PAUSE)

        threads = [threading.Thread(target=watch, args=(x,)) for x in survivors]
        t_kill = time.monotonic()
        c.kill(victim)
        for t in threads: t.start()
        try:
            deadline = t_kill + 60
            while len(dead) < len(survivors) and time.monotonic() < deadline:
                time.sleep(0.02)
            # Keep watching a little after the last death, for deaths of survivors that follow.
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads: t.join()
        if len(dead) < len(survivors):
            raise RuntimeError(f"{preset}: {victim} not dead at {sorted(set(survivors) - set(dead))} after 60 s")
        after = counter_sums(c, survivors)
        ms = lambda t: round((t - t_kill) * 1000, 1)
        return {
            "victim": victim,
            "firstSuspicionMs": ms(min(suspected.values())),
            "firstDeadMs": ms(min(dead.values())),
            "deadAtEveryMemberMs": ms(max(dead.values())),
            "spreadMs": round((max(dead.values()) - min(dead.values())) * 1000, 1),
            "falsePositives": sorted(false_dead),
            "falseSuspicions": sorted(false_suspect),
            "counters": {k.removeprefix("starling_").removesuffix("_total"): after[k] - before[k] for k in COUNTERS},
        }
    finally:
        c.stop()


def spread(values):
    return {"median": round(statistics.median(values), 1), "min": min(values), "max": max(values)}


def summarize(trials):
    keys = ["firstSuspicionMs", "firstDeadMs", "deadAtEveryMemberMs", "spreadMs"]
    out = {k: spread([t[k] for t in trials]) for k in keys}
    out["suspicionToFirstDeadMs"] = spread([round(t["firstDeadMs"] - t["firstSuspicionMs"], 1) for t in trials])
    out["falsePositives"] = sum(len(t["falsePositives"]) for t in trials)
    out["falseSuspicions"] = sum(len(t["falseSuspicions"]) for t in trials)
    out["trials"] = trials
    return out


def steady_state(binary, preset, n):
    """UDP bytes/s per node at rest, and how long a new node takes to be known alive to all."""
    c = Cluster(binary, preset)
    try:
        names = [f"n{i}" for i in range(n)]
        c.start_all(names)
        time.sleep(1)
        udp = 'starling_gossip_bytes_out_total{transport="udp"}'
        before = [metrics(c.api(x)).get(udp, 0.0) for x in names]
        rest_window = 5.0
        time.sleep(rest_window)
        after = [metrics(c.api(x)).get(udp, 0.0) for x in names]
        udp_rate = sum(b - a for a, b in zip(before, after)) / n / rest_window

        joiner = f"n{n}"
        t0 = time.monotonic()
        c.start(joiner, join=c.ports[names[0]][0])
        api_up = time.monotonic() - t0
        seen = wait_all(c, names, lambda v: v.get(joiner) == "alive", 60)
        return {"preset": preset, "nodes": n,
                "newNodeKnownToAllMs": round((max(seen.values()) - t0) * 1000, 1),
                "newNodeApiUpMs": round(api_up * 1000, 1),
                "udpBytesPerSecondPerNodeAtRest": round(udp_rate, 1)}
    finally:
        c.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--trials", type=int, default=6, help="SIGKILL trials per preset (default 6)")
    ap.add_argument("--nodes", type=int, default=5, help="cluster size of the SIGKILL trials (default 5)")
    ap.add_argument("--presets", default="lan,memberlist", help="presets to compare, interleaved (default lan,memberlist)")
    ap.add_argument("--quick", action="store_true", help="skip the steady-state runs")
    args = ap.parse_args()
    if args.trials < 1 or args.nodes < 2:
        ap.error("--trials must be at least 1 and --nodes at least 2")
    presets = [p for p in args.presets.split(",") if p]

    trials = {p: [] for p in presets}
    for i in range(args.trials):
        for p in presets:
            trials[p].append(detection_trial(args.binary, p, args.nodes, probe_interval=0.1 if p == "loopback" else 1.0))
            print(f"trial {i + 1}/{args.trials} {p}: {json.dumps({k: v for k, v in trials[p][-1].items() if k != 'counters'})}",
                  file=sys.stderr, flush=True)
    detection = {p: summarize(t) for p, t in trials.items()}
    result = {
        "benchmark": "membership",
        "note": "times from SIGKILL, including HTTP polling (about 5 ms per survivor); each trial a fresh cluster",
        "detection": {"nodes": args.nodes, "trialsPerPreset": args.trials, "presets": detection},
    }
    if "lan" in detection and "memberlist" in detection:
        result["detection"]["lanOverMemberlist"] = {
            k: round(detection["lan"][k]["median"] / detection["memberlist"][k]["median"], 3)
            for k in ("firstSuspicionMs", "firstDeadMs", "deadAtEveryMemberMs")
            if detection["memberlist"][k]["median"] > 0}
    if not args.quick:
        result["steadyState"] = [steady_state(args.binary, p, n) for p, n in [("loopback", 8), ("loopback", 24), ("lan", 5)]]
    print(json.dumps(result, indent=1))
    if any(d["falsePositives"] for d in detection.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
