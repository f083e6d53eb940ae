"""The client through a node's death: a kill -9 of the node serving a swarm's event stream.

Not a ``test*.py`` module, so ``unittest discover`` leaves it out: it kills a node, and needs a
mesh of its own. PythonClientTests runs it on a fresh 3-node mesh with $STARLING_TEST_APIS and
$STARLING_TEST_NODE_PIDS (the nodes' PIDs, in the same order).
"""

from __future__ import annotations

import os
import signal
import unittest
import uuid
from typing import List

from starling_client import Client, TaskEvent

APIS = [a for a in os.environ.get("STARLING_TEST_APIS", "").split(",") if a]
PIDS = [int(p) for p in os.environ.get("STARLING_TEST_NODE_PIDS", "").split(",") if p]


@unittest.skipUnless(len(APIS) == 3 and len(PIDS) == 3, "needs STARLING_TEST_APIS and STARLING_TEST_NODE_PIDS of 3 nodes")
class NodeDeathTests(unittest.TestCase):
    def test_the_event_stream_resumes_on_another_node_when_its_node_is_killed(self) -> None:
        words = [uuid.uuid4().hex for _ in range(12)]
        submitter = Client(APIS[0], timeout=60)
        swarm = submitter.submit([{"id": f"d{i}", "argv": ["sh", "-c", f"sleep {0.4 * i:.1f}; echo {w}"]}
                                  for i, w in enumerate(words)], max_attempts=3)
        # The stream's first node is the one that dies; the client knows the other two.
        follower = Client([APIS[1], APIS[2], APIS[0]], timeout=60)
        seen: List[TaskEvent] = []
        killed = False
        with follower.events(swarm) as stream:
            for event in stream:
                seen.append(event)
                if len(seen) == 2 and not killed:
                    os.kill(PIDS[1], signal.SIGKILL)
                    killed = True
        self.assertTrue(killed)
        self.assertEqual(stream.state, "done")
        self.assertGreaterEqual(stream.reconnects, 1)
        ids = [e.id for e in seen]
        self.assertEqual(sorted(ids), sorted(f"d{i}" for i in range(12)), "each task exactly once")
        for event in seen:
            assert event.result is not None
            self.assertEqual(event.state, "succeeded", event.raw)
            self.assertEqual(event.result.stdout, words[int(event.id[1:])] + "\n")
        # Reads through a client whose first node is the dead one move on to a live one.
        final = follower.wait(swarm, timeout=60, poll_interval=0.2)
        self.assertEqual((final.state, final.succeeded), ("done", 12))
        self.assertEqual(len(list(follower.results(swarm))), 12)


if __name__ == "__main__":
    unittest.main()
