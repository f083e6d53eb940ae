"""A swarm's server-sent events, followed across dropped connections.

The node sends a ``task`` event (with an ``id:``) per finished task, in the order they finished,
then ``done``. When the connection drops (a node dies, a proxy cuts it, the node's stream
lifetime ends) the stream reconnects, to the next node it knows when it has several, with
``Last-Event-ID`` set to the last event it saw: the node resumes after it, so no task is lost or
seen twice.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Dict, Generator, Iterator, List, Optional

from ._transport import MAX_RETRY_AFTER_SECONDS, Response, Transport, error_from, path_segment
from .errors import ResponseTooLarge, StarlingConnectionError, StarlingError
from .models import TaskEvent

# What the node's `retry:` line may ask for, at most.
_MAX_RECONNECT_DELAY = 10.0
# A stream that stayed open this long made progress even without an event.
_LONG_LIVED_SECONDS = 30.0


class _Dropped(Exception):
    """The connection ended before ``done``."""


class EventStream:
    """Iterates a swarm's `TaskEvent`s until its ``done`` event; then ``state`` holds the swarm's
    final state ("done" or "cancelled").

    ``last_event_id`` is the id of the last event seen (pass it to `Client.events` to resume
    later), ``reconnects`` how many times the stream connected again. ``max_reconnects`` bounds
    the attempts in a row that make no progress: a refused or failed connection, or a stream
    that ends without an event within 30 s. An event, or a stream that stays open 30 s (a long
    swarm outlives the node's 10-minute stream lifetime), resets the count. ``idle_timeout``: a
    connection silent for this long counts as dropped (the node sends a keep-alive every 15 s).
    """

    def __init__(self, transport: Transport, swarm_id: str, last_event_id: Optional[str] = None,
                 max_reconnects: int = 10, idle_timeout: float = 45.0) -> None:
        if max_reconnects < 0:
            raise ValueError("max_reconnects must be at least 0")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self.swarm_id = swarm_id
        self.last_event_id = last_event_id
        self.reconnects = 0
        self.state: Optional[str] = None
        self._transport = transport
        self._max_reconnects = max_reconnects
        self._idle_timeout = idle_timeout
        self._reconnect_delay = 1.0
        self._connection: Optional[http.client.HTTPConnection] = None
        self._events = self._follow()

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> TaskEvent:
        return next(self._events)

    def close(self) -> None:
        """Stops following and closes the connection."""
        self._events.close()
        self._drop()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _follow(self) -> Generator[TaskEvent, None, None]:
        # Attempts in a row that made no progress: no stream at all, or a stream that ended
        # before it sent an event or lived `_LONG_LIVED_SECONDS` (a node's stream that reaches
        # its lifetime without an event is progress: the swarm just runs long).
        failures = 0
        endpoint = 0
        first = True
        try:
            while True:
                if not first:
                    self.reconnects += 1
                first = False
                try:
                    response = self._connect(endpoint)
                except StarlingError as error:
                    if error.status not in (0, 429, 502, 503, 504):
                        raise
                    failures += 1
                    if failures > self._max_reconnects:
                        raise
                    endpoint += 1
                    if error.retry_after is not None:
                        delay = error.retry_after
                    elif failures < self._transport.endpoint_count:
                        delay = 0.0  # another node may answer at once
                    else:
                        delay = self._reconnect_delay
                    time.sleep(min(delay, MAX_RETRY_AFTER_SECONDS))
                    continue
                opened = time.monotonic()
                before = self.last_event_id
                try:
                    yield from self._read(response)
                    return  # `done`
                except _Dropped:
                    self._drop()
                progressed = self.last_event_id != before or time.monotonic() - opened >= _LONG_LIVED_SECONDS
                failures = 0 if progressed else failures + 1
                if failures > self._max_reconnects:
                    raise StarlingConnectionError(f"the event stream of swarm {self.swarm_id} ended {failures} times in a row "
                                                  "without an event")
                endpoint += 1
                time.sleep(self._reconnect_delay if self._transport.endpoint_count == 1 or failures > 1 else 0.0)
        finally:
            self._drop()

    def _connect(self, endpoint: int) -> http.client.HTTPResponse:
        headers: Dict[str, str] = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        path = f"/v1/swarms/{path_segment(self.swarm_id)}/events"
        connection, response = self._transport.open("GET", path, None, headers, self._idle_timeout, endpoint)
        self._connection = connection
        if response.status != 200:
            try:
                body = self._transport.read_bounded(response, time.monotonic() + self._idle_timeout)
                raise error_from(Response(response.status, {k.lower(): v for k, v in response.getheaders()}, body))
            except (OSError, http.client.HTTPException) as error:
                raise StarlingConnectionError(f"reading the refusal failed: {error}") from None
            finally:
                self._drop()
        return response

    def _read(self, response: http.client.HTTPResponse) -> Iterator[TaskEvent]:
        """Parses the stream (the WHATWG server-sent events format) until ``done``; raises
        `_Dropped` when it ends or breaks first."""
        limit = self._transport.max_body_bytes
        event_type = ""
        data: List[str] = []
        data_size = 0
        pending_id: Optional[str] = None
        while True:
            try:
                raw = response.readline(limit + 1)
            except (OSError, http.client.HTTPException, ValueError):
                raise _Dropped() from None
            if not raw:
                raise _Dropped()
            if len(raw) > limit:
                raise ResponseTooLarge(limit)
            line = raw.decode("utf-8", "replace").rstrip("\r\n") if raw.endswith(b"\n") else None
            if line is None:
                raise _Dropped()  # a partial last line: the connection broke mid-event
            if line == "":
                if data or event_type:
                    event = self._dispatch(event_type or "message", "\n".join(data), pending_id)
                    if event is not None:
                        yield event
                    elif self.state is not None:
                        return
                event_type, data, data_size, pending_id = "", [], 0, None
                continue
            if line.startswith(":"):
                continue  # a comment: the node's keep-alive
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                event_type = value
            elif name == "data":
                data_size += len(value) + 1
                if data_size > limit:
                    raise ResponseTooLarge(limit)
                data.append(value)
            elif name == "id" and value.isascii() and value.isprintable():
                # Sent back as a header: no control character (a CR would split it) and nothing
                # http.client cannot encode gets there.
                pending_id = value
            elif name == "retry" and value.isascii() and value.isdigit() and len(value) <= 9:
                self._reconnect_delay = min(int(value) / 1000.0, _MAX_RECONNECT_DELAY)

    def _dispatch(self, event_type: str, data: str, event_id: Optional[str]) -> Optional[TaskEvent]:
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            raise StarlingError(200, f"an event's data is not JSON: {data[:200]!r}", data[:2000]) from None
        if not isinstance(payload, dict):
            raise StarlingError(200, f"an event's data is not an object: {data[:200]!r}", payload)
        if event_type == "task":
            if event_id is not None:
                self.last_event_id = event_id
            return TaskEvent.from_json(event_id, payload)
        if event_type == "done":
            state = payload.get("state")
            self.state = state if isinstance(state, str) else "done"
        return None
