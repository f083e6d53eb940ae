#!/usr/bin/env python3
"""A test brain that probes its sandbox: what its socket lets it reach, and whether the model's
API key is anywhere it can see (environment, files, its own process). Records what it found in
its session's state and on stderr. Standard library only."""
import http.client, json, os, socket, sys

SESSION = os.environ["STARLING_SESSION"]
# What to look for, given reversed so that it is not itself in the environment or a file.
NEEDLE = os.environ.get("PROBE_NEEDLE_REVERSED", "-tset-ks")[::-1]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=120)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.environ["STARLING_SOCKET"])


def request(method, path, body=None, headers=None):
    conn = UnixHTTP()
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 dict({"Content-Type": "application/json"}, **(headers or {})))
    response = conn.getresponse()
    data = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, data


# A control: a string the test placed in a file, to show the scan finds what is there.
CONTROL = os.environ.get("PROBE_CONTROL_REVERSED", "")[::-1]
found = []
found_control = []
scanned = 0
for root in ["/task", "/run", "/tmp", "/home", "/root", "/etc", "/var"]:
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as f:
                    data = f.read(1 << 20)
            except OSError:
                continue
            scanned += 1
            if NEEDLE.encode() in data:
                found.append(path)
            if CONTROL and CONTROL.encode() in data:
                found_control.append(path)
for path in ["/proc/self/environ", "/proc/self/cmdline", "/proc/1/environ", "/proc/1/cmdline"]:
    try:
        if NEEDLE.encode() in open(path, "rb").read():
            found.append(path)
    except OSError:
        pass
found += [name for name, value in os.environ.items() if NEEDLE in value]

model = request("POST", "/v1/model/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "step:plan\nhello"}]}, {"Idempotency-Key": "probe"})
again = request("POST", "/v1/model/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "step:plan\nhello"}]}, {"Idempotency-Key": "probe"})
# A model that claims negative tokens, asked twice (the second is a replay): the node must live.
negative = [request("POST", "/v1/model/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "step:negative"}]},
                    {"Idempotency-Key": "negative"})[0] for _ in range(2)]
probes = {}
for method, path in [("GET", "/v1/members"), ("GET", "/metrics"), ("GET", "/v1/openapi.json"), ("GET", "/v1/swarms"),
                     ("GET", "/v1/sessions/someone-else"), ("GET", "/v1/agents/someone-else"), ("POST", "/v1/sessions"),
                     ("POST", "/v1/agents"), ("DELETE", "/v1/sessions/" + SESSION), ("DELETE", "/v1/agents/" + SESSION),
                     ("GET", "/v1/agents/%s/logs" % SESSION), ("GET", "/v1/swarms/0123456789abcdef"),
                     ("POST", "/v1/sessions/someone-else/checkpoint"), ("GET", "/v1/sessions/%s/../someone-else" % SESSION)]:
    probes[method + " " + path] = request(method, path, {} if method == "POST" else None)[0]
probes["streaming"] = request("POST", "/v1/model/chat/completions", {"model": "m", "stream": True, "messages": []})[0]
probes["reserved key"] = request("POST", "/v1/sessions/%s/actions" % SESSION, {"key": "model/forged", "argv": ["true"]})[0]
# An effect, and a sub-swarm's task, asking for the model's key (which the agent's policy allows,
# so that the node can add it to model calls) must be refused: they could print it.
probes["effect with the model key"] = request("POST", "/v1/sessions/%s/actions" % SESSION,
                                              {"key": "leak", "argv": ["sh", "-c", "echo $MODEL_KEY"], "secrets": ["MODEL_KEY"]})[0]
probes["swarm with the model key"] = request("POST", "/v1/swarms",
                                             {"tasks": [{"argv": ["sh", "-c", "echo $MODEL_KEY"], "secrets": ["MODEL_KEY"]}]})[0]
probes["own session"] = request("GET", "/v1/sessions/" + SESSION)[0]
probes["own agent"] = request("GET", "/v1/agents/" + SESSION)[0]
state = {"found": found, "foundControl": found_control, "scanned": scanned, "env": sorted(os.environ), "probes": probes,
         "model": [model[0], json.loads(model[1])], "again": [again[0], json.loads(again[1])], "negative": negative}
status, answer = request("POST", "/v1/sessions/%s/checkpoint" % SESSION, {"state": state})
print("probe: " + json.dumps(state), file=sys.stderr)
sys.exit(0 if status == 200 else 1)
