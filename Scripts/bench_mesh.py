#!/usr/bin/env python3
"""What the benchmark scripts share: HTTP calls, percentiles, and a local mesh of real
`starling node` processes on 127.0.0.1, ended by their own PIDs (never by name)."""
import http.client, json, os, signal, subprocess, time

from bench_membership import free_port  # one port picker for every bench script


def request(port, method, path, body=None, timeout=30, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if body is not None:
        h["content-type"] = "application/json"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data) if data else None


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(ms):
    return {"p50": round(pct(ms, 0.5), 3), "p90": round(pct(ms, 0.9), 3), "p99": round(pct(ms, 0.99), 3), "n": len(ms)}


def wait_until(cond, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting until {what}")


def healthy(port):
    try:
        return request(port, "GET", "/v1/health", timeout=2)[0] == 200
    except OSError:
        return False


def alive_count(port):
    try:
        status, body = request(port, "GET", "/v1/members", timeout=2)
        return sum(1 for m in body["members"] if m["status"] == "alive") if status == 200 else 0
    except OSError:
        return 0


def start_mesh(binary, work, names, slots=2, extra=()):
    """Starts `names` (each joining the first) with their data under `work`, waits until every
    member sees every other alive, and returns [{"name", "gossip", "api", "proc"}]. A name
    started before in `work` restarts on its data (same key file)."""
    key = os.path.join(work, "cluster.key")
    if not os.path.exists(key):
        subprocess.run([binary, "keygen", "--out", key], check=True, stdout=subprocess.DEVNULL)
    nodes = []
    for name in names:
        g, a = free_port(), free_port()
        cmd = [binary, "node", "--name", name, "--gossip", f"127.0.0.1:{g}", "--api", f"127.0.0.1:{a}",
               "--data", os.path.join(work, name), "--key-file", key, "--preset", "loopback", "--slots", str(slots),
               "--log-level", "warning", *extra]
        if nodes:
            cmd += ["--join", f"127.0.0.1:{nodes[0]['gossip']}"]
        log = open(os.path.join(work, f"{name}.log"), "a")
        nodes.append({"name": name, "gossip": g, "api": a, "proc": subprocess.Popen(cmd, stdout=log, stderr=log)})
        try:
            wait_until(lambda: healthy(a), 30, f"{name} serves its API")
        except SystemExit:
            stop(nodes)
            raise
    try:
        wait_until(lambda: all(alive_count(n["api"]) == len(names) for n in nodes), 30, "every member alive")
    except SystemExit:
        stop(nodes)
        raise
    return nodes


def stop(nodes):
    """SIGKILL to each node's own PID, then reaps them."""
    for n in nodes:
        if n["proc"].poll() is None:
            n["proc"].send_signal(signal.SIGKILL)
    for n in nodes:
        try:
            n["proc"].wait(10)
        except subprocess.TimeoutExpired:
            pass
