"""An effect whose session owner is killed -9 while it runs.

The client's `act` loses its connection mid-call and sends the call again (safe: the key makes
the node run it at most once) to another node; through the failover's 503s it reaches the new
owner, which answers 409 with outcome "unknown": the start was recorded, the result never was,
and the effect is never run again. The client raises that as a `StarlingError`.

Not a ``test*.py`` module: it kills a node. PythonClientTests runs it on a fresh 3-node mesh
with $STARLING_TEST_APIS and $STARLING_TEST_NODE_PIDS (in the same order).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import unittest
import uuid
from typing import List, Optional

from starling_client import ActResult, Client, StarlingError

APIS = [a for a in os.environ.get("STARLING_TEST_APIS", "").split(",") if a]
PIDS = [int(p) for p in os.environ.get("STARLING_TEST_NODE_PIDS", "").split(",") if p]


@unittest.skipUnless(len(APIS) == 3 and len(PIDS) == 3, "needs STARLING_TEST_APIS and STARLING_TEST_NODE_PIDS of 3 nodes")
class OwnerDeathTests(unittest.TestCase):
    def test_an_effect_cut_by_its_owners_death_comes_back_unknown_and_is_not_run_again(self) -> None:
        first = Client(APIS[0], timeout=60)
        session = first.create_session("py-owner-" + uuid.uuid4().hex[:10])
        names = {m.api: m.name for m in first.members()}
        owner_index = [names[a] for a in APIS].index(session.owner)
        # The caller knows the owner first, then the others.
        order = [APIS[owner_index]] + [a for i, a in enumerate(APIS) if i != owner_index]
        caller = Client(order, timeout=120)
        outcome: List[object] = []

        def act() -> None:
            try:
                outcome.append(caller.act(session.id, "slow", {"argv": ["sleep", "30"]}, timeout=120))
            except StarlingError as error:
                outcome.append(error)

        thread = threading.Thread(target=act, daemon=True)
        thread.start()
        survivor = Client([a for a in order[1:]], timeout=30)
        # Kill the owner once the effect's start is recorded (the journal shows it running).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            journal = survivor.session(session.id).journal
            if any(e.key == "slow" and e.outcome == "running" for e in journal):
                break
            time.sleep(0.05)
        else:
            self.fail("the effect's start was never recorded")
        os.kill(PIDS[owner_index], signal.SIGKILL)
        thread.join(timeout=150)
        self.assertFalse(thread.is_alive(), "act did not return")
        [result] = outcome
        self.assertIsInstance(result, StarlingError, result)
        assert isinstance(result, StarlingError)
        self.assertEqual(result.status, 409, result)
        self.assertEqual(result.body.get("outcome"), "unknown", result.body)
        self.assertIn("never run again", result.message)
        # Asked again on purpose: still unknown, not run.
        with self.assertRaises(StarlingError) as again:
            survivor.act(session.id, "slow", {"argv": ["sleep", "30"]})
        self.assertEqual((again.exception.status, again.exception.body.get("outcome")), (409, "unknown"))
        # The session went on under a new owner, which runs new effects.
        fresh: Optional[ActResult] = survivor.act(session.id, "after", {"argv": ["echo", "after"]})
        assert fresh is not None and fresh.result is not None
        self.assertEqual((fresh.replayed, fresh.result.stdout), (False, "after\n"))
        self.assertNotEqual(survivor.session(session.id).owner, session.owner)


if __name__ == "__main__":
    unittest.main()
