"""Errors the client raises.

Every failure is a `StarlingError`. An answer from a node keeps the node's own words: the HTTP
status, the ``error`` text of its ``{"error": "..."}`` body, and the whole parsed body (some
answers add fields, such as ``outcome`` on a 409 from an effect).
"""

from __future__ import annotations

from typing import Any, Optional


class StarlingError(Exception):
    """A request the node refused, or one that could not be made.

    ``status`` is the HTTP status (0 when no answer came), ``message`` the node's ``error`` text
    (or what went wrong locally), ``body`` the parsed JSON body when there was one, else the raw
    text, and ``retry_after`` the seconds the node asked to wait, when it said.
    """

    def __init__(self, status: int, message: str, body: Any = None, retry_after: Optional[float] = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.body = body
        self.retry_after = retry_after


class StarlingConnectionError(StarlingError):
    """No answer: the node could not be reached, the connection broke, or the call timed out.

    ``sent`` is false when the request never left the client (the connection could not be
    opened), so the node cannot have acted on it.
    """

    def __init__(self, message: str, sent: bool = True) -> None:
        super().__init__(0, message)
        self.sent = sent


class ResponseTooLarge(StarlingError):
    """The answer was longer than the client's ``max_body_bytes``; it was not read further."""

    def __init__(self, limit: int) -> None:
        super().__init__(0, f"the answer is longer than {limit} bytes (max_body_bytes)")


class WaitTimedOut(StarlingError):
    """`Client.wait` (or `Client.run`, `Client.wait_agent`) gave up before the work finished.

    The work goes on; ``last`` is the last status the client read.
    """

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(0, message)
        self.last = last
