#!/usr/bin/env python3
"""Hosted-agent benchmark: a 3-node mesh of real `starling node` processes on 127.0.0.1.

Usage: bench_agents.py STARLING_BIN [--starts 20] [--resumes 3]

A model server in this process (OpenAI-compatible `POST /v1/chat/completions`, checks the key,
notes when each request arrives) stands in for the LLM; the nodes hold its key in a secrets
file and add it to every call. Brains are short Python programs (standard library) that talk to
their node through $STARLING_SOCKET.

1. Start: `POST /v1/agents` through n2 with a brain that makes one model call and ends, until
   the model server receives that call (--starts trials). Baseline in the same run, interleaved:
   a one-task swarm through n2 running `python3 -c pass` (the same interpreter start in a
   sandbox), from submit to its result. The ratio says what an agent adds to a sandboxed task:
   a session with three replicas, its start record, the socket, the proxied call.
2. Resume: a brain that calls the model once per step (Idempotency-Key step-N), checkpoints,
   and waits 100 ms; after its third call its owner is killed (SIGKILL). Measured from the kill:
   until a survivor serves the agent's session (GET /v1/sessions/ID answers 200; the baseline,
   polled every 20 ms), and until the model server receives the brain's next new step from the
   new owner. Also how many steps reached the model twice: a call in flight at the kill has no
   recorded answer, so the new owner's brain asks again (a recorded one is replayed). The mesh
   is restarted between trials.

Nodes are ended by their own PIDs. Prints one JSON object.
"""
import argparse, json, os, shutil, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench_mesh import request, start_mesh, stop, summary, wait_until

KEY = "sk-bench-0123456789abcdef"

# The brains (run as `python3 -c`): a connection to $STARLING_SOCKET, one model call per step.
BRAIN_LIB = r'''
import http.client, json, os, socket, sys, time
class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)
def call(method, path, body=None, key=None):
    for _ in range(600):
        c = UnixHTTP(os.environ["STARLING_SOCKET"])
        h = {"content-type": "application/json"}
        if key:
            h["Idempotency-Key"] = key
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
            r = c.getresponse()
            data = r.read()
        except OSError:
            time.sleep(0.1)
            continue
        finally:
            c.close()
        if r.status in (409, 503):
            time.sleep(0.05)
            continue
        return r.status, json.loads(data) if data else None
    sys.exit("the node did not answer")
def think(step):
    status, answer = call("POST", "/v1/model/chat/completions",
                          {"model": "bench", "messages": [{"role": "user", "content": "step:%d" % step}]}, key="step-%d" % step)
    assert status == 200, (status, answer)
'''
ONE_CALL = BRAIN_LIB + "think(1)\n"
LOOP = BRAIN_LIB + r'''
S = os.environ["STARLING_SESSION"]
status, session = call("GET", "/v1/sessions/" + S)
step = ((session or {}).get("state") or {}).get("step", 0)
while step < 1000:
    step += 1
    think(step)
    call("POST", "/v1/sessions/%s/checkpoint" % S, {"state": {"step": step}})
    time.sleep(0.1)
'''


class Model:
    """The stand-in model: every request's arrival (monotonic clock) by its step."""

    def __init__(self):
        self.lock = threading.Lock()
        self.arrivals = []  # (time, step, authorized)
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                at = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                step = body.get("messages", [{}])[-1].get("content", "")
                with model.lock:
                    model.arrivals.append((at, step, self.headers.get("Authorization") == "Bearer " + KEY))
                data = json.dumps({"id": "x", "object": "chat.completion", "model": "bench",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "ok " + step}}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first(self, step, after):
        with self.lock:
            times = [t for t, s, _ in self.arrivals if s == step and t >= after]
        return min(times) if times else None

    def steps(self):
        with self.lock:
            return [s for _, s, _ in self.arrivals]

    def unauthorized(self):
        with self.lock:
            return sum(1 for _, _, ok in self.arrivals if not ok)


def node_arguments(work):
    policy = os.path.join(work, "policy.json")
    with open(policy, "w") as f:
        json.dump({"net": "host", "secrets": ["MODEL_KEY"]}, f)
    secrets = os.path.join(work, "secrets")
    with open(secrets, "w") as f:
        f.write(f"MODEL_KEY={KEY}\n")
    os.chmod(secrets, 0o600)
    return ["--policy", policy, "--secrets-file", secrets]


def agent_spec(agent_id, code, model):
    return {"id": agent_id, "brain": {"argv": ["python3", "-c", code], "timeoutSeconds": 600},
            "model": {"baseURL": f"http://127.0.0.1:{model.port}/v1", "secret": "MODEL_KEY"}}


def swarm_round_trip(api):
    """A one-task swarm running `python3 -c pass`, submit to result, in ms."""
    t = time.monotonic()
    status, created = request(api, "POST", "/v1/swarms", {"tasks": [{"argv": ["python3", "-c", "pass"]}]})
    assert status == 202, (status, created)
    while True:
        status, swarm = request(api, "GET", f"/v1/swarms/{created['id']}?limit=1")
        if status == 200 and swarm["state"] != "running":
            assert swarm["succeeded"] == 1, swarm
            return (time.monotonic() - t) * 1000
        time.sleep(0.002)


def starts(binary, model, trials):
    work = tempfile.mkdtemp(prefix="starling-bench-agents.")
    nodes = start_mesh(binary, work, ["n1", "n2", "n3"], extra=node_arguments(work))
    agent_ms, task_ms = [], []
    try:
        api = nodes[1]["api"]
        for i in range(trials + 2):
            task = swarm_round_trip(api)
            t = time.monotonic()
            status, created = request(api, "POST", "/v1/agents", agent_spec(f"start-{i}", ONE_CALL, model))
            assert status == 201, (status, created)
            wait_until(lambda: model.first("step:1", t) is not None, 60, "the brain's first model call")
            if i >= 2:  # the first two warm the pools and connections
                agent_ms.append((model.first("step:1", t) - t) * 1000)
                task_ms.append(task)
            # Each brain ends after its call; wait, so that the next trial starts on a quiet node.
            wait_until(lambda: request(api, "GET", f"/v1/agents/start-{i}")[1].get("state") in ("done", "failed"), 60,
                       "the brain ended")
    finally:
        stop(nodes)
        shutil.rmtree(work, ignore_errors=True)
    a, b = summary(agent_ms), summary(task_ms)
    return {"postToFirstModelCallMs": a, "baselineOneTaskSwarmMs": b,
            "ratioP50": round(a["p50"] / b["p50"], 2) if b["p50"] else None}


def resume(binary, model, trial):
    work = tempfile.mkdtemp(prefix="starling-bench-agents.")
    nodes = start_mesh(binary, work, ["n1", "n2", "n3"], extra=node_arguments(work))
    try:
        agent = f"resume-{trial}"
        status, created = request(nodes[0]["api"], "POST", "/v1/agents", agent_spec(agent, LOOP, model))
        assert status == 201, (status, created)
        wait_until(lambda: len(model.steps()) >= 3, 60, "three model calls")
        owner = request(nodes[0]["api"], "GET", f"/v1/agents/{agent}")[1]["owner"]
        victim = next(n for n in nodes if n["name"] == owner)
        survivors = [n for n in nodes if n is not victim]
        seen = set(model.steps())
        killed = time.monotonic()
        victim["proc"].kill()
        victim["proc"].wait()
        served = None
        deadline = killed + 120
        while time.monotonic() < deadline:
            try:
                if served is None and request(survivors[0]["api"], "GET", f"/v1/sessions/{agent}", timeout=2)[0] == 200:
                    served = time.monotonic()
            except OSError:
                pass
            fresh = [s for s in model.steps() if s not in seen]
            if served is not None and fresh:
                break
            time.sleep(0.02)
        fresh_at = None
        with model.lock:
            for at, step, _ in model.arrivals:
                if at >= killed and step not in seen:
                    fresh_at = at if fresh_at is None else min(fresh_at, at)
        steps = model.steps()
        return {"sessionServedMs": round((served - killed) * 1000, 1) if served else None,
                "nextModelCallMs": round((fresh_at - killed) * 1000, 1) if fresh_at else None,
                "stepsAskedTwice": len(steps) - len(set(steps)), "owner": owner}
    finally:
        stop(nodes)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--resumes", type=int, default=3)
    args = ap.parse_args()
    out = {"nodes": 3, "cores": os.cpu_count(), "binary": args.bin, "loadAverage": open("/proc/loadavg").read().split()[:3]}
    model = Model()
    out["start"] = starts(args.bin, model, args.starts)
    trials = []
    for i in range(args.resumes):
        m = Model()
        trials.append(resume(args.bin, m, i))
        m.server.shutdown()
    served = [t["sessionServedMs"] for t in trials if t["sessionServedMs"] is not None]
    nxt = [t["nextModelCallMs"] for t in trials if t["nextModelCallMs"] is not None]
    out["resume"] = {"trials": trials, "sessionServedMs": summary(served) if served else None,
                     "nextModelCallMs": summary(nxt) if nxt else None,
                     "stepsAskedTwice": sum(t["stepsAskedTwice"] for t in trials)}
    out["unauthorizedModelCalls"] = model.unauthorized()
    out["loadAverageAfter"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
