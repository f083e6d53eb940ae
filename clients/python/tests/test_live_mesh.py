"""The client against a live mesh: $STARLING_TEST_APIS names its nodes' API addresses
(HOST:PORT, comma-separated; the Swift test PythonClientTests starts 3 nodes and sets it).

Without it the tests are skipped, unless $STARLING_TEST_REQUIRE_MESH is set: then they fail.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, List, Tuple

from starling_client import (Client, ResponseTooLarge, StarlingConnectionError, StarlingError, SwarmStatus,
                             TaskEvent, WaitTimedOut)

from faultproxy import FaultProxy

APIS = [a for a in os.environ.get("STARLING_TEST_APIS", "").split(",") if a]


def setUpModule() -> None:
    if not APIS:
        if os.environ.get("STARLING_TEST_REQUIRE_MESH"):
            raise RuntimeError("STARLING_TEST_APIS is not set: no mesh to test against")
        raise unittest.SkipTest("STARLING_TEST_APIS is not set: no mesh to test against")


def host_port(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def raw_request(address: str, method: str, path: str, body: object = None) -> Tuple[int, Any]:
    """The node's own answer, through urllib: what the client's error must carry."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{address}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def tokens(count: int) -> List[str]:
    return [uuid.uuid4().hex for _ in range(count)]


class MeshTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.nodes = [Client(a, timeout=60) for a in APIS]
        self.mesh = Client(APIS, timeout=60)


class PackageTests(unittest.TestCase):
    @unittest.skipUnless(os.environ.get("STARLING_TEST_EXPECT_INSTALLED"), "run from the sources, not an install")
    def test_the_package_under_test_is_the_installed_one_and_typed(self) -> None:
        import sys

        import starling_client
        location = os.path.realpath(starling_client.__file__)
        self.assertTrue(location.startswith(os.path.realpath(sys.prefix)), location)
        self.assertIn("site-packages", location)
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(location), "py.typed")))


class MembersTests(MeshTestCase):
    def test_every_node_lists_every_node_alive_with_its_capacity(self) -> None:
        for node in self.nodes:
            members = node.members()
            self.assertEqual(len(members), len(APIS))
            self.assertTrue(all(m.status == "alive" for m in members), members)
            self.assertEqual(sorted(m.api for m in members), sorted(APIS))
            self.assertTrue(all(m.capacity.slots > 0 for m in members))
        self.assertEqual(self.nodes[0].health().status, "ok")


class SwarmTests(MeshTestCase):
    def test_a_swarm_of_echo_tasks_returns_every_token_read_page_by_page(self) -> None:
        words = tokens(12)
        swarm = self.nodes[1].submit([{"id": f"echo-{i}", "argv": ["echo", w]} for i, w in enumerate(words)])
        final = self.nodes[1].wait(swarm, timeout=120, poll_interval=0.2)
        self.assertEqual((final.state, final.total, final.succeeded, final.failed), ("done", 12, 12, 0))
        # Read through another node, 5 tasks a page: 3 pages.
        results = list(self.nodes[2].results(swarm, page_size=5))
        self.assertEqual(len(results), 12)
        by_id = {t.id: t for t in results}
        for i, word in enumerate(words):
            task = by_id[f"echo-{i}"]
            self.assertEqual(task.state, "succeeded")
            assert task.result is not None
            self.assertEqual(task.result.stdout, word + "\n")
            self.assertTrue(task.result.ok)
            self.assertIn(task.result.node, {m.name for m in self.mesh.members()})
        counts = self.nodes[0].swarm(swarm, tasks=False)
        self.assertEqual(counts.tasks, [])
        self.assertEqual(counts.succeeded, 12)
        page = self.nodes[0].swarm(swarm, offset=10, limit=5)
        self.assertEqual(len(page.tasks), 2)
        self.assertIsNone(page.next_offset)
        self.assertIn(swarm, [s.id for s in self.mesh.list_swarms(limit=50).swarms])

    def test_wait_calls_progress_with_increasing_counts_until_the_end(self) -> None:
        # Tasks that end at different times, so that the node sees them finish one by one.
        tasks = [{"argv": ["sh", "-c", f"sleep {0.3 * i:.1f}; echo {i}"]} for i in range(1, 9)]
        swarm = self.nodes[0].submit(tasks)
        calls: List[SwarmStatus] = []
        final = self.nodes[2].wait(swarm, progress=calls.append, timeout=120, poll_interval=0.1)
        finished = [s.finished for s in calls]
        self.assertGreaterEqual(len(calls), 2, finished)
        self.assertLess(finished[0], 8, "the first report comes before the tasks, which take seconds, are done")
        self.assertEqual(finished, sorted(finished), finished)
        # A call only when something changed: each one has more tasks finished, or (the last) a new state.
        self.assertEqual(len(set((s.finished, s.state) for s in calls)), len(calls))
        self.assertEqual((calls[-1].finished, calls[-1].state), (8, "done"))
        self.assertEqual(final.succeeded, 8)

    def test_run_returns_the_task_result(self) -> None:
        result = self.nodes[1].run({"argv": ["python3", "-c", "print(6 * 7)"]})
        self.assertEqual((result.stdout, result.exit_code, result.reason), ("42\n", 0, "exited"))
        self.assertTrue(result.ok)
        failed = self.nodes[2].run({"argv": ["sh", "-c", "echo nope >&2; exit 3"]})
        self.assertEqual((failed.exit_code, failed.stderr, failed.ok), (3, "nope\n", False))

    def test_wait_gives_up_at_its_timeout_and_cancel_ends_the_swarm_cancelled(self) -> None:
        swarm = self.nodes[0].submit([{"argv": ["sleep", "60"]} for _ in range(3)])
        started = time.monotonic()
        with self.assertRaises(WaitTimedOut) as raised:
            self.nodes[1].wait(swarm, timeout=0.5, poll_interval=0.1)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIsInstance(raised.exception.last, SwarmStatus)
        self.assertEqual(raised.exception.last.state, "running")
        self.nodes[1].cancel(swarm)
        final = self.nodes[2].wait(swarm, timeout=60, poll_interval=0.1)
        self.assertEqual(final.state, "cancelled")
        self.assertEqual(final.succeeded, 0)


class EventTests(MeshTestCase):
    def test_the_stream_yields_each_task_once_and_resumes_after_a_dropped_connection(self) -> None:
        words = tokens(10)
        swarm = self.nodes[0].submit([{"id": f"e{i}", "argv": ["sh", "-c", f"sleep {0.2 * i:.1f}; echo {w}"]}
                                      for i, w in enumerate(words)])
        proxy = FaultProxy(host_port(APIS[1]))
        self.addCleanup(proxy.close)
        # The first connection is cut after its third task event, at an event boundary.
        proxy.cut_after_task_events(3)
        stream = Client(proxy.address, timeout=60).events(swarm)
        seen: List[TaskEvent] = []
        with stream:
            for event in stream:
                seen.append(event)
                if len(seen) == 3:
                    third = event.event_id
        self.assertEqual(stream.state, "done")
        self.assertGreaterEqual(stream.reconnects, 1)
        self.assertEqual(sorted(e.id for e in seen), sorted(f"e{i}" for i in range(10)), "each task exactly once")
        for event in seen:
            assert event.result is not None
            self.assertEqual(event.state, "succeeded")
            self.assertEqual(event.result.stdout, words[int(event.id[1:])] + "\n")
        # The reconnect asked to resume after the last event the client had seen.
        events_requests = [r for r in proxy.requests if "/events" in r.split("\r\n")[0]]
        self.assertGreaterEqual(len(events_requests), 2)
        self.assertNotIn("last-event-id", events_requests[0].lower())
        self.assertIn(f"last-event-id: {third}", events_requests[1].lower())

    def test_a_stream_resumed_on_another_node_gives_the_rest(self) -> None:
        swarm = self.nodes[0].submit([{"id": f"r{i}", "argv": ["echo", str(i)]} for i in range(6)])
        self.nodes[0].wait(swarm, timeout=120, poll_interval=0.2)
        first = self.nodes[1].events(swarm)
        head = [next(first), next(first)]
        first.close()
        rest_stream = self.nodes[2].events(swarm, last_event_id=first.last_event_id)
        rest = list(rest_stream)
        self.assertEqual(rest_stream.state, "done")
        self.assertEqual(sorted(e.id for e in head + rest), [f"r{i}" for i in range(6)])

    def test_a_stream_of_a_swarm_that_does_not_exist_raises_404(self) -> None:
        with self.assertRaises(StarlingError) as raised:
            list(self.mesh.events("0123456789abcdef"))
        self.assertEqual(raised.exception.status, 404)


class ErrorTests(MeshTestCase):
    def test_a_bad_request_raises_the_servers_status_and_message(self) -> None:
        cases: List[Tuple[str, str, Any, Callable[[Client], object]]] = [
            ("POST", "/v1/swarms", {"tasks": []}, lambda c: c.submit([])),
            ("POST", "/v1/swarms", {"tasks": [{"id": "a", "argv": ["true"]}, {"id": "a", "argv": ["true"]}]},
             lambda c: c.submit([{"id": "a", "argv": ["true"]}, {"id": "a", "argv": ["true"]}])),
            ("GET", "/v1/swarms/0123456789abcdef", None, lambda c: c.swarm("0123456789abcdef")),
            ("POST", "/v1/sessions", {"id": "not a valid id!"}, lambda c: c.create_session("not a valid id!")),
        ]
        for method, path, body, call in cases:
            status, answer = raw_request(APIS[0], method, path, body)
            self.assertTrue(400 <= status < 500, (path, status, answer))
            with self.assertRaises(StarlingError) as raised:
                call(self.nodes[0])
            error = raised.exception
            self.assertEqual(error.status, status)
            self.assertEqual(error.message, answer["error"])
            self.assertEqual(error.body, answer)
            self.assertIn(answer["error"], str(error))

    def test_an_unreachable_node_is_skipped_for_the_next(self) -> None:
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        dead = "127.0.0.1:%d" % closed.getsockname()[1]
        closed.close()  # nothing listens there now
        client = Client([dead, APIS[0]], timeout=30)
        self.assertEqual(len(client.members()), len(APIS))
        # A POST too: nothing was sent to the dead address.
        swarm = client.submit([{"argv": ["true"]}])
        self.assertEqual(len(swarm), 16)
        with self.assertRaises(StarlingConnectionError):
            Client(dead, timeout=5, retries=1).members()

    def test_an_answer_longer_than_the_bound_is_refused(self) -> None:
        with self.assertRaises(ResponseTooLarge):
            Client(APIS[0], max_body_bytes=64).members()

    def test_a_node_that_never_answers_times_out(self) -> None:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        self.addCleanup(silent.close)
        started = time.monotonic()
        with self.assertRaises(StarlingConnectionError):
            Client("127.0.0.1:%d" % silent.getsockname()[1], timeout=1.0, retries=0).health()
        self.assertLess(time.monotonic() - started, 10)

    def test_a_503_with_retry_after_is_retried_and_a_cut_post_is_not(self) -> None:
        proxy = FaultProxy(host_port(APIS[0]))
        self.addCleanup(proxy.close)
        client = Client(proxy.address, timeout=30)
        before = len(proxy.requests)
        proxy.refuse_with_503("0")
        swarm = client.submit([{"argv": ["echo", "once"]}])
        self.assertEqual(len(proxy.requests) - before, 2, "refused once, then sent again")
        self.assertEqual(client.wait(swarm, timeout=60, poll_interval=0.1).succeeded, 1)
        # A POST whose connection broke after it was sent may have been done: not sent again.
        before = len(proxy.requests)
        proxy.cut_after_request()
        with self.assertRaises(StarlingConnectionError):
            client.submit([{"argv": ["echo", "maybe"]}])
        self.assertEqual(len(proxy.requests) - before, 1)
        # A GET is safe to send again.
        before = len(proxy.requests)
        proxy.cut_after_request()
        self.assertEqual(client.swarm(swarm, tasks=False).id, swarm)
        self.assertEqual(len(proxy.requests) - before, 2)


class SessionTests(MeshTestCase):
    def test_checkpoint_act_and_replay_across_nodes(self) -> None:
        name = "py-" + uuid.uuid4().hex[:12]
        created = self.nodes[0].create_session(name)
        self.assertEqual(created.id, name)
        self.assertIn(created.owner, {m.name for m in self.mesh.members()})
        state = {"step": 3, "notes": ["planned", "coded"], "nested": {"ok": True}}
        stored = self.nodes[1].checkpoint(name, state)
        self.assertGreater(stored.seq, 0)
        self.assertEqual(len(stored.hash), 64)
        # An effect whose output differs on every run (nanoseconds): a replay shows the recorded one.
        effect = {"argv": ["sh", "-c", 'echo "$STARLING_EFFECT_KEY $(date +%s%N)"']}
        first = self.nodes[2].act(name, "send-1", effect)
        self.assertFalse(first.replayed)
        assert first.result is not None
        self.assertTrue(first.result.stdout.startswith(f"{name}/send-1 "))
        again = self.nodes[0].act(name, "send-1", effect)
        self.assertTrue(again.replayed)
        assert again.result is not None
        self.assertEqual(again.result.stdout, first.result.stdout)
        second = self.nodes[1].act(name, "send-2", {"argv": ["echo", "two"]})
        self.assertFalse(second.replayed)

        session = self.nodes[2].session(name)
        self.assertEqual(session.state, state)
        self.assertEqual(session.owner, created.owner)
        self.assertEqual(len(session.replicas), 3)
        self.assertEqual([e.key for e in session.journal], ["send-1", "send-2"], "each key once")
        journal = list(self.nodes[0].journal(name))
        self.assertEqual([e.key for e in journal], ["send-1", "send-2"])
        # `since` pages: after the first entry, only the second.
        after_first = self.nodes[1].session(name, since=journal[0].seq)
        self.assertEqual([e.key for e in after_first.journal], ["send-2"])
        self.assertEqual(list(self.nodes[1].journal(name, since=journal[-1].seq)), [])

        self.nodes[1].delete_session(name)
        with self.assertRaises(StarlingError) as raised:
            self.nodes[0].session(name)
        self.assertEqual(raised.exception.status, 404)


def package_zip_base64() -> str:
    """The imported starling_client package (the installed one, under test) as a base64 zip."""
    import base64
    import io
    import zipfile

    import starling_client
    package_dir = os.path.dirname(os.path.abspath(starling_client.__file__))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(os.listdir(package_dir)):
            if name.endswith((".py", ".typed")):
                archive.write(os.path.join(package_dir, name), f"starling_client/{name}")
    return base64.b64encode(buffer.getvalue()).decode()


# Runs inside a sandbox: the client from the zip, through $STARLING_SOCKET only.
IN_SANDBOX = r"""
import base64, json, sys
open("/tmp/client.zip", "wb").write(base64.b64decode(open("client.zip.b64").read()))
sys.path.insert(0, "/tmp/client.zip")
from starling_client import Client, StarlingError
client = Client.from_environment(timeout=60)
assert client._http.socket_path is not None
child = client.submit([{"id": "c%d" % i, "argv": ["echo", "child-%d" % i]} for i in range(3)])
client.wait(child, poll_interval=0.1)
outputs = sorted(t.result.stdout.strip() for t in client.results(child))
events = sorted(e.id for e in client.events(child))
try:
    client.members()
    refused = None
except StarlingError as error:
    refused = error.status
print(json.dumps({"health": client.health().status, "outputs": outputs, "events": events, "members": refused}))
"""


class SocketTests(MeshTestCase):
    def test_inside_a_sandbox_the_client_speaks_through_the_task_socket(self) -> None:
        swarm = self.nodes[0].submit([{"argv": ["python3", "-c", IN_SANDBOX], "files": {"client.zip.b64": package_zip_base64()}}],
                                     spawn={"maxTasks": 3, "maxDepth": 1})
        self.nodes[0].wait(swarm, timeout=120, poll_interval=0.2)
        [task] = list(self.nodes[1].results(swarm))
        assert task.result is not None
        self.assertEqual(task.state, "succeeded", task.result.stderr)
        seen = json.loads(task.result.stdout)
        self.assertEqual(seen, {"health": "ok", "outputs": ["child-0", "child-1", "child-2"], "events": ["c0", "c1", "c2"],
                                "members": 404})


def agent_routes_served() -> bool:
    if not APIS:
        return False
    try:
        status, document = raw_request(APIS[0], "GET", "/v1/openapi.json")
    except OSError:
        return False  # the node is down: the other tests say so
    return status == 200 and isinstance(document, dict) and "/v1/agents" in document.get("paths", {})


@unittest.skipUnless(agent_routes_served(), "this node does not serve /v1/agents (its OpenAPI document lists no such path)")
class AgentTests(MeshTestCase):
    def test_an_agent_runs_its_brain_to_the_end_and_keeps_its_logs(self) -> None:
        word = uuid.uuid4().hex
        brain = {"argv": ["python3", "-c", f"import sys; print('thinking {word}', file=sys.stderr)"]}
        started = self.nodes[0].create_agent({"brain": brain})
        self.assertTrue(started.id and started.session)
        agent = self.nodes[1].wait_agent(started.id, timeout=120, poll_interval=0.2)
        self.assertEqual(agent.state, "done", agent.raw)
        self.assertEqual(agent.exit_code, 0)
        self.assertEqual(agent.session, started.session)
        self.assertIn(f"thinking {word}", self.nodes[2].agent_logs(started.id))

    def test_a_stopped_agent_ends_stopped_and_keeps_its_session(self) -> None:
        started = self.nodes[0].create_agent({"brain": {"argv": ["sleep", "300"]}})
        self.nodes[2].stop_agent(started.id)
        agent = self.nodes[1].wait_agent(started.id, timeout=60, poll_interval=0.2)
        self.assertEqual(agent.state, "stopped")
        self.assertEqual(self.nodes[0].session(started.session).id, started.session)

    def test_an_unknown_agent_is_404(self) -> None:
        with self.assertRaises(StarlingError) as raised:
            self.nodes[0].agent("no-such-agent-" + uuid.uuid4().hex[:8])
        self.assertEqual(raised.exception.status, 404)


if __name__ == "__main__":
    unittest.main()
