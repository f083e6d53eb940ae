#!/usr/bin/env python3
"""An example Starling brain: standard library only.

It plans with the model, writes code, runs it in a sandbox as an effect, fans out a sub-swarm
for a parallel step, checkpoints after each step, and finishes with an answer.

It talks to its node only through $STARLING_SOCKET (HTTP over a Unix socket). It has no network
and no API key: the node adds the key to its model calls. After a crash of its node it is started
again on the session's new owner: it reads its state, skips the steps it checkpointed, and the
calls it repeats (same Idempotency-Key) get their recorded answers back without a new model call.
"""
import http.client, json, os, socket, sys, time

SESSION = os.environ["STARLING_SESSION"]
DELAY = float(os.environ.get("BRAIN_STEP_DELAY", "0"))


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=300)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(300)
        self.sock.connect(self.path)


def call(method, path, body=None, key=None, tries=120):
    """One request to the node; retried while the node says "try again" (503)."""
    for _ in range(tries):
        conn = UnixHTTP(os.environ["STARLING_SOCKET"])
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if response.status == 503:
            time.sleep(0.5)
            continue
        answer = json.loads(data) if data else {}
        if response.status >= 400:
            raise RuntimeError("%s %s: %d %s" % (method, path, response.status, answer))
        return answer
    raise RuntimeError("%s %s: the node kept answering 503" % (method, path))


def log(message):
    print("brain: " + message, file=sys.stderr, flush=True)


def think(step, prompt, tools):
    """A model call, journaled under the step's name: asked once, whatever happens after."""
    answer = call("POST", "/v1/model/chat/completions", {
        "model": os.environ.get("BRAIN_MODEL", "gpt-4o-mini"),
        "messages": [{"role": "system", "content": "You are a careful engineer. Answer with one tool call."},
                     {"role": "user", "content": "step:%s\n%s" % (step, prompt)}],
        "tools": [{"type": "function", "function": t} for t in tools],
    }, key=step)
    message = answer["choices"][0]["message"]
    tool = message["tool_calls"][0]["function"]
    return tool["name"], json.loads(tool["arguments"])


def checkpoint(state):
    call("POST", "/v1/sessions/%s/checkpoint" % SESSION, {"state": state})
    log("checkpointed step %d" % state["step"])
    time.sleep(DELAY)


def tool(name, description, **properties):
    return {"name": name, "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(properties)}}


def main():
    state = call("GET", "/v1/sessions/%s" % SESSION).get("state") or {"step": 0}
    log("starting at step %d" % state["step"])
    task = os.environ.get("BRAIN_TASK", "Compute the sum of the squares of 1..10, then the cubes of a few numbers.")
    hit = os.environ.get("BRAIN_HIT_URL", "")

    if state["step"] < 1:  # plan: the model writes the code
        name, args = think("plan", task, [tool("write_code", "Python code to run", code={"type": "string"})])
        state = {"step": 1, "code": args["code"]}
        checkpoint(state)

    if state["step"] < 2:  # run the code in a sandbox, as an effect: once, whatever happens after
        files = {"main.py": state["code"]}
        argv = ["python3", "main.py"]
        if hit:
            files["hit.py"] = "import os, urllib.request; urllib.request.urlopen(%r + os.environ['STARLING_EFFECT_KEY']).read()\n" % hit
            argv = ["sh", "-c", "python3 hit.py && python3 main.py"]
        result = call("POST", "/v1/sessions/%s/actions" % SESSION,
                      {"key": "run-code", "argv": argv, "files": files, "net": "host" if hit else "none"})["result"]
        if result.get("exitCode") != 0:
            raise RuntimeError("the code failed: %s" % result.get("stderr"))
        state = dict(state, step=2, ran=result["stdout"].strip())
        checkpoint(state)

    if state["step"] < 3:  # fan out: the model names the inputs, a sub-swarm computes them in parallel
        name, args = think("fanout", "The code printed %s. Which numbers should be cubed in parallel?" % state["ran"],
                           [tool("parallel", "Inputs to cube in parallel", inputs={"type": "array"})])
        tasks = []
        for x in args["inputs"]:
            script = "print(%d ** 3)" % int(x)
            if hit:
                script = "import urllib.request; urllib.request.urlopen(%r + 'cube-%d').read()\n" % (hit, int(x)) + script
            tasks.append({"id": "cube-%d" % int(x), "argv": ["python3", "-c", script], "net": "host" if hit else "none"})
        swarm = call("POST", "/v1/swarms", {"tasks": tasks}, key="fanout")["id"]
        for _ in range(3000):
            try:
                status = call("GET", "/v1/swarms/%s" % swarm)
            except RuntimeError as e:  # just spawned: its owner may not show it yet
                log("waiting for swarm %s: %s" % (swarm, e))
                status = {"state": "running"}
            if status["state"] != "running":
                break
            time.sleep(0.2)
        cubes = [int(t["result"]["stdout"].strip()) for t in status["tasks"]]
        state = dict(state, step=3, swarm=swarm, cubes=cubes)
        checkpoint(state)

    if state["step"] < 4:  # answer
        name, args = think("answer", "Squares: %s. Cubes: %s. Give the final answer." % (state["ran"], state["cubes"]),
                           [tool("final_answer", "The answer", answer={"type": "string"})])
        state = dict(state, step=4, answer=args["answer"], result={"squares": int(state["ran"]), "cubes": sum(state["cubes"])})
        checkpoint(state)

    print(json.dumps(state["result"]))
    log("done: " + state["answer"])


if __name__ == "__main__":
    main()
