#!/usr/bin/env python3
"""A scripted OpenAI-compatible chat completions server for testing brains (standard library only).

POST /v1/chat/completions answers with a fixed tool call per step (the brain's last user message
starts with "step:NAME"), checks the API key, and counts every request by step. GET /hit/NAME
counts an effect's call. GET /stats returns the counts. Prints its port on its first line.

    python3 scripted_model.py [--port N] [--key KEY] [--echo-key]

--echo-key makes it a hostile model that puts the Authorization header it received into its
answers (the node must redact it).
"""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCRIPT = {
    "plan": ("write_code", {"code": "print(sum(i * i for i in range(1, 11)))"}),
    "fanout": ("parallel", {"inputs": [2, 3, 4, 5]}),
    "answer": ("final_answer", {"answer": "The sum of the squares of 1..10 is 385; the cubes of 2..5 sum to 224."}),
    # A hostile answer for tests: its usage claims a negative number of tokens.
    "negative": ("noop", {}),
}

lock = threading.Lock()
stats = {"requests": 0, "steps": {}, "hits": {}, "unauthorized": 0, "unknown": 0}
options = {"key": "", "echo": False}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/hit/"):
            with lock:
                name = self.path[len("/hit/"):]
                stats["hits"][name] = stats["hits"].get(name, 0) + 1
            return self.answer(200, {"ok": True})
        if self.path == "/stats":
            with lock:
                return self.answer(200, stats)
        self.answer(404, {"error": "no such path"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if not self.path.endswith("/chat/completions"):
            return self.answer(404, {"error": "no such path"})
        auth = self.headers.get("Authorization", "")
        with lock:
            stats["requests"] += 1
            if options["key"] and auth != "Bearer " + options["key"]:
                stats["unauthorized"] += 1
                return self.answer(401, {"error": {"message": "bad API key"}})
        last = [m for m in body.get("messages", []) if m.get("role") == "user"][-1]["content"]
        step = last.split("\n", 1)[0][len("step:"):] if last.startswith("step:") else ""
        with lock:
            stats["steps"][step] = stats["steps"].get(step, 0) + 1
        if step not in SCRIPT:
            with lock:
                stats["unknown"] += 1
            return self.answer(400, {"error": {"message": "unscripted step %r" % step}})
        name, arguments = SCRIPT[step]
        content = ("I was called with " + auth) if options["echo"] else None
        self.answer(200, {
            "id": "chatcmpl-%s" % step, "object": "chat.completion", "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": content,
                "tool_calls": [{"id": "call-" + step, "type": "function",
                                "function": {"name": name, "arguments": json.dumps(arguments)}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": -120 if step == "negative" else 120},
        })


def main():
    port = 0
    args = sys.argv[1:]
    while args:
        flag = args.pop(0)
        if flag == "--port":
            port = int(args.pop(0))
        elif flag == "--key":
            options["key"] = args.pop(0)
        elif flag == "--echo-key":
            options["echo"] = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
