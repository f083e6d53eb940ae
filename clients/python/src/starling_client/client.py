"""`Client`: every route of a Starling node's HTTP API (interface.md), blocking and bounded."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlencode

from ._transport import Transport, path_segment
from .errors import StarlingError, WaitTimedOut
from .events import EventStream
from .models import (JSON, ActResult, Agent, AgentRef, AgentSpec, Checkpoint, Health, JournalEntry, Member,
                     Policy, Session, SessionRef, SpawnBudget, SwarmList, SwarmStatus, SwarmTask, TaskLike,
                     TaskResult)

DEFAULT_API = "127.0.0.1:8400"

ProgressCallback = Callable[[SwarmStatus], None]


def _object(value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise StarlingError(200, f"{what}: the node's answer is not a JSON object", value)
    return value


class Client:
    """A client of one mesh.

    ``api`` is a node's ``HOST:PORT``, or several: any node answers for the whole mesh, so the
    client sends each call to the node that last answered and moves on to the next when one
    cannot be reached. Without ``api``, ``$STARLING_API``, else 127.0.0.1:8400. ``socket_path``
    speaks to a node through a Unix socket instead (inside a sandbox: `Client.from_environment`).

    Bounds: ``timeout`` seconds for each call, retries included (a call that runs a task waits
    longer, see `act` and `run`); answers longer than ``max_body_bytes`` are refused; after a
    failure (no connection, a broken one, 502/504) at most ``retries`` more attempts, and only
    where that is safe; a refusal with Retry-After (503, 429) is sent again after the delay,
    until the deadline (at most 60 times). See `Transport.request`.
    """

    def __init__(self, api: Union[str, Sequence[str], None] = None, *, socket_path: Optional[str] = None,
                 timeout: float = 30.0, max_body_bytes: int = 64 * 1024 * 1024, retries: int = 3) -> None:
        if api is None and socket_path is None:
            api = os.environ.get("STARLING_API") or DEFAULT_API
        addresses: List[str] = []
        if isinstance(api, str):
            addresses = [a for a in api.split(",") if a.strip()]
        elif api is not None:
            addresses = list(api)
        self._http = Transport(addresses, socket_path, timeout, max_body_bytes, retries)

    @classmethod
    def from_environment(cls, **options: Any) -> "Client":
        """Inside a task or a brain: the node's `$STARLING_SOCKET`; elsewhere `$STARLING_API`."""
        path = os.environ.get("STARLING_SOCKET")
        return cls(socket_path=path, **options) if path else cls(**options)

    # -- plumbing ---------------------------------------------------------------------------------

    def _get(self, path: str, timeout: Optional[float] = None) -> Any:
        return self._http.request("GET", path, idempotent=True, timeout=timeout).json()

    def _send(self, method: str, path: str, body: Any = None, *, idempotent: bool = False,
              timeout: Optional[float] = None) -> Any:
        return self._http.request(method, path, body, idempotent=idempotent, timeout=timeout).json()

    # -- the node and the mesh --------------------------------------------------------------------

    def health(self) -> Health:
        return Health.from_json(_object(self._get("/v1/health"), "health"))

    def members(self) -> List[Member]:
        """The mesh's members as the answering node sees them."""
        answer = _object(self._get("/v1/members"), "members")
        return [Member.from_json(m) for m in answer.get("members", []) if isinstance(m, dict)]

    # -- swarms -----------------------------------------------------------------------------------

    def submit(self, tasks: Sequence[TaskLike], *, max_attempts: Optional[int] = None, policy: Optional[Policy] = None,
               spawn: Optional[SpawnBudget] = None) -> str:
        """Submits a swarm of ``tasks`` and returns its id. The tasks run on whichever nodes have room."""
        spec: Dict[str, Any] = {"tasks": [dict(t) for t in tasks]}
        if max_attempts is not None:
            spec["maxAttempts"] = max_attempts
        if policy is not None:
            spec["policy"] = dict(policy)
        if spawn is not None:
            spec["spawn"] = dict(spawn)
        return self.submit_spec(spec)

    def submit_spec(self, spec: Mapping[str, Any]) -> str:
        """Submits a whole SwarmSpec (``{"tasks": [...], "maxAttempts"?, "policy"?, "spawn"?}``)."""
        # Large swarms take the node longer to record (2 ms a task, README): give it that.
        tasks = spec.get("tasks")
        extra = 0.002 * len(tasks) if isinstance(tasks, list) else 0.0
        answer = _object(self._send("POST", "/v1/swarms", dict(spec), timeout=self._http.timeout + extra), "submit")
        swarm_id = answer.get("id")
        if not isinstance(swarm_id, str):
            raise StarlingError(202, "the node's answer has no swarm id", answer)
        return swarm_id

    def swarm(self, swarm_id: str, *, tasks: bool = True, offset: Optional[int] = None,
              limit: Optional[int] = None) -> SwarmStatus:
        """A swarm's status: with ``tasks=False`` the counts only; else one page of tasks (from
        ``offset``, at most ``limit``; read on from ``next_offset``, or use `results`)."""
        query: Dict[str, Any] = {}
        if not tasks:
            query["tasks"] = "false"
        if offset is not None:
            query["offset"] = offset
        if limit is not None:
            query["limit"] = limit
        path = f"/v1/swarms/{path_segment(swarm_id)}" + (f"?{urlencode(query)}" if query else "")
        return SwarmStatus.from_json(_object(self._get(path), "swarm"))

    def results(self, swarm_id: str, *, page_size: int = 1000) -> Iterator[SwarmTask]:
        """Every task of a swarm with its result (when it has one), read a page at a time."""
        offset: Optional[int] = 0
        while offset is not None:
            page = self.swarm(swarm_id, offset=offset, limit=page_size)
            yield from page.tasks
            if page.next_offset is not None and page.next_offset <= offset:
                raise StarlingError(200, f"the node's nextOffset {page.next_offset} does not move past {offset}", page.raw)
            offset = page.next_offset

    def list_swarms(self, *, limit: Optional[int] = None) -> SwarmList:
        """The mesh's swarms, newest first."""
        path = "/v1/swarms" + (f"?{urlencode({'limit': limit})}" if limit is not None else "")
        return SwarmList.from_json(_object(self._get(path), "swarms"))

    def cancel(self, swarm_id: str) -> None:
        """Kills the swarm's running tasks and keeps its pending ones from starting."""
        self._send("DELETE", f"/v1/swarms/{path_segment(swarm_id)}", idempotent=True)

    def wait(self, swarm_id: str, *, progress: Optional[ProgressCallback] = None, timeout: Optional[float] = None,
             poll_interval: float = 0.5) -> SwarmStatus:
        """Waits until the swarm is no longer running and returns its final counts.

        ``progress`` is called with the counts (a `SwarmStatus` without tasks) first, then each
        time more tasks have finished, and a last time with the final counts. ``timeout`` (none:
        wait as long as it takes) raises `WaitTimedOut`; the swarm goes on.
        """
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        deadline = None if timeout is None else time.monotonic() + timeout
        reported: Optional[Tuple[int, str]] = None
        while True:
            status = self.swarm(swarm_id, tasks=False)
            seen = (status.finished, status.state)
            if progress is not None and seen != reported:
                progress(status)
                reported = seen
            if not status.is_running:
                return status
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise WaitTimedOut(f"swarm {swarm_id} still runs after {timeout} s ({status.finished}/{status.total} finished)", status)
            time.sleep(poll_interval)

    def events(self, swarm_id: str, *, last_event_id: Optional[str] = None, max_reconnects: int = 10,
               idle_timeout: float = 45.0) -> EventStream:
        """Follows the swarm's finished tasks as they finish (server-sent events), reconnecting
        with ``Last-Event-ID`` when the connection drops. See `EventStream`."""
        return EventStream(self._http, swarm_id, last_event_id, max_reconnects, idle_timeout)

    def run(self, task: TaskLike, *, policy: Optional[Policy] = None, max_attempts: Optional[int] = None,
            timeout: Optional[float] = None, poll_interval: float = 0.2) -> TaskResult:
        """Runs one task somewhere on the mesh (a one-task swarm) and returns its result.

        ``timeout`` defaults to the task's ``timeoutSeconds`` plus a minute, or 6 minutes.
        """
        if timeout is None:
            seconds = task.get("timeoutSeconds")
            timeout = (float(seconds) if isinstance(seconds, (int, float)) else 300.0) + 60.0
        swarm_id = self.submit([task], policy=policy, max_attempts=max_attempts)
        self.wait(swarm_id, timeout=timeout, poll_interval=poll_interval)
        for entry in self.results(swarm_id):
            if entry.result is not None:
                return entry.result
            raise StarlingError(200, f"task {entry.id} of swarm {swarm_id} ended {entry.state} without a result", entry.raw)
        raise StarlingError(200, f"swarm {swarm_id} lists no task")

    # -- sessions ---------------------------------------------------------------------------------

    def create_session(self, session_id: Optional[str] = None, *, policy: Optional[Policy] = None) -> SessionRef:
        """A new session (its id chosen by the node when not given) and its owner."""
        body: Dict[str, Any] = {}
        if session_id is not None:
            body["id"] = session_id
        if policy is not None:
            body["policy"] = dict(policy)
        answer = _object(self._send("POST", "/v1/sessions", body), "create session")
        return SessionRef(id=str(answer.get("id", "")), owner=str(answer.get("owner", "")))

    def checkpoint(self, session_id: str, state: JSON) -> Checkpoint:
        """Records ``state`` (any JSON) once a majority of the session's replicas stored it."""
        answer = _object(self._send("POST", f"/v1/sessions/{path_segment(session_id)}/checkpoint", {"state": state}),
                         "checkpoint")
        seq, digest = answer.get("seq"), answer.get("hash")
        if not isinstance(seq, int) or not isinstance(digest, str):
            raise StarlingError(200, "the checkpoint's answer has no seq or hash", answer)
        return Checkpoint(seq=seq, hash=digest)

    def act(self, session_id: str, key: str, task: TaskLike, *, timeout: Optional[float] = None) -> ActResult:
        """Runs ``task`` as the session's effect ``key``, once: the same key again returns the
        recorded result with ``replayed`` true.

        An effect still running elsewhere (409, outcome "running") is asked again until it ends
        or ``timeout`` passes. An effect whose outcome is unknown (409, outcome "unknown": its
        owner died mid-run) raises `StarlingError` with that body; it is never run again.
        ``timeout`` defaults to the task's ``timeoutSeconds`` plus a minute, or 6 minutes.
        """
        if timeout is None:
            seconds = task.get("timeoutSeconds")
            timeout = (float(seconds) if isinstance(seconds, (int, float)) else 300.0) + 60.0
        deadline = time.monotonic() + timeout
        body = dict(task)
        body["key"] = key
        path = f"/v1/sessions/{path_segment(session_id)}/actions"
        while True:
            remaining = deadline - time.monotonic()
            try:
                # Sending it again is safe: the key makes the node run it at most once.
                answer = self._send("POST", path, body, idempotent=True, timeout=max(remaining, 0.001))
                return ActResult.from_json(_object(answer, "act"))
            except StarlingError as error:
                running = (error.status == 409 and isinstance(error.body, dict) and error.body.get("outcome") == "running")
                delay = error.retry_after if error.retry_after is not None else 1.0
                if not running or time.monotonic() + delay >= deadline:
                    raise
                time.sleep(min(delay, 10.0))

    def session(self, session_id: str, *, since: Optional[int] = None) -> Session:
        """A session's latest state, and its journal entries after ``since`` (one page:
        ``journal_more`` says more follow; `journal` reads them all)."""
        path = f"/v1/sessions/{path_segment(session_id)}"
        if since is not None:
            path += f"?{urlencode({'since': since})}"
        return Session.from_json(_object(self._get(path), "session"))

    def journal(self, session_id: str, *, since: int = 0) -> Iterator[JournalEntry]:
        """Every journal entry after ``since``, read a page at a time."""
        cursor = since
        while True:
            page = self.session(session_id, since=cursor)
            for entry in page.journal:
                if entry.seq <= cursor:
                    raise StarlingError(200, f"journal entry {entry.seq} is not after {cursor}", entry.raw)
                cursor = entry.seq
                yield entry
            if not page.journal_more or not page.journal:
                return

    def delete_session(self, session_id: str) -> None:
        self._send("DELETE", f"/v1/sessions/{path_segment(session_id)}")

    # -- agents -----------------------------------------------------------------------------------

    def create_agent(self, spec: Union[AgentSpec, Mapping[str, Any]]) -> AgentRef:
        """Starts a hosted agent: a session and its brain (``spec["brain"]``, a Task)."""
        answer = _object(self._send("POST", "/v1/agents", dict(spec)), "create agent")
        return AgentRef(id=str(answer.get("id", "")), session=str(answer.get("session", "")),
                        owner=str(answer.get("owner", "")))

    def agent(self, agent_id: str) -> Agent:
        return Agent.from_json(_object(self._get(f"/v1/agents/{path_segment(agent_id)}"), "agent"))

    def stop_agent(self, agent_id: str) -> None:
        """Stops the brain; its session is kept."""
        self._send("DELETE", f"/v1/agents/{path_segment(agent_id)}", idempotent=True)

    def agent_logs(self, agent_id: str) -> str:
        """The brain's stderr so far."""
        response = self._http.request("GET", f"/v1/agents/{path_segment(agent_id)}/logs", idempotent=True,
                                      headers={"Accept": "text/plain"})
        return response.body.decode("utf-8", "replace")

    def wait_agent(self, agent_id: str, *, timeout: Optional[float] = None, poll_interval: float = 0.5) -> Agent:
        """Waits until the agent is done, failed or stopped, and returns it."""
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            agent = self.agent(agent_id)
            if agent.finished:
                return agent
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise WaitTimedOut(f"agent {agent_id} is still {agent.state} after {timeout} s", agent)
            time.sleep(poll_interval)
