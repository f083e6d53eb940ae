"""HTTP/1.1 to a node over TCP or a Unix socket, with bounds on every call.

One connection per request (``Connection: close``): the client holds no shared state between
calls, so one `Client` is safe to use from several threads, and a node is never left holding an
idle connection of ours.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

from .errors import ResponseTooLarge, StarlingConnectionError, StarlingError

# A 503 or 429 asks the client to come back after Retry-After seconds; a node that asks for more
# than this is waited on for this long at most (the call's deadline still applies).
MAX_RETRY_AFTER_SECONDS = 10.0
# How many such refusals in a row one call sits through (its deadline bounds it too).
MAX_UNAVAILABLE_RETRIES = 60
_READ_CHUNK = 64 * 1024


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, as `$STARLING_SOCKET` inside a sandbox speaks it."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("starling", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def split_host_port(address: str) -> Tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (a leading ``http://`` is allowed) as a host and a port."""
    text = address.strip()
    if text.startswith("http://"):
        text = text[len("http://"):]
    text = text.rstrip("/")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"not a [HOST]:PORT address: {address!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"not a HOST:PORT address: {address!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"not a port in {address!r}")
    return host, int(port_text)


def path_segment(value: str) -> str:
    """An id made safe to put in a URL path (a ``/`` in it cannot reach another route)."""
    return quote(value, safe="")


@dataclass
class Response:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8")) if self.body else None
        except (UnicodeDecodeError, ValueError) as error:
            raise StarlingError(self.status, f"the node's answer is not JSON: {error}", self.body[:2000]) from None


def retry_after_seconds(headers: Mapping[str, str]) -> Optional[float]:
    """Retry-After in seconds (the delay form; an HTTP date is not something a node sends)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from(response: Response) -> StarlingError:
    """The node's refusal as a `StarlingError` carrying its status and its own message."""
    body: Any
    message = ""
    try:
        body = json.loads(response.body.decode("utf-8")) if response.body else None
    except (UnicodeDecodeError, ValueError):
        body = response.body.decode("utf-8", "replace")[:4000]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    else:
        message = http.client.responses.get(response.status, "error")
    return StarlingError(response.status, message, body, retry_after_seconds(response.headers))


class Transport:
    """Sends requests to the first node that answers, with the client's bounds."""

    def __init__(self, addresses: Sequence[str], socket_path: Optional[str], timeout: float,
                 max_body_bytes: int, retries: int) -> None:
        if socket_path is None and not addresses:
            raise ValueError("a client needs at least one node address or a socket path")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if not 0 <= retries <= 100:
            raise ValueError("retries must be 0 to 100")
        self.endpoints = [split_host_port(a) for a in addresses]
        self.socket_path = socket_path
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.retries = retries
        # The node to try first: the last one that answered. Threads may race on it; any value
        # is a valid start, so it needs no lock.
        self._next = 0

    @property
    def endpoint_count(self) -> int:
        return 1 if self.socket_path is not None else len(self.endpoints)

    def _connection(self, index: int, timeout: float) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixHTTPConnection(self.socket_path, timeout)
        host, port = self.endpoints[index % len(self.endpoints)]
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def describe(self, index: int) -> str:
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        host, port = self.endpoints[index % len(self.endpoints)]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def open(self, method: str, path: str, body: Optional[bytes], headers: Mapping[str, str], timeout: float,
             endpoint: int) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends one request and returns the open connection and response (the caller reads and
        closes it). Raises `StarlingConnectionError`, with ``sent`` on it telling whether the
        request may have reached the node."""
        connection = self._connection(endpoint, timeout)
        try:
            connection.connect()
        except OSError as error:
            connection.close()
            raise StarlingConnectionError(f"cannot connect to {self.describe(endpoint)}: {error}", sent=False) from None
        try:
            all_headers = {"Accept": "application/json", "Connection": "close", "User-Agent": "starling-client-python"}
            all_headers.update(headers)
            if body is not None:
                all_headers["Content-Type"] = "application/json"
            connection.request(method, path, body=body, headers=all_headers)
            return connection, connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise StarlingConnectionError(f"{method} {path} to {self.describe(endpoint)} failed: {error or type(error).__name__}") from None

    def read_bounded(self, response: http.client.HTTPResponse, deadline: float) -> bytes:
        """The whole body, refusing one longer than ``max_body_bytes`` or slower than the deadline."""
        length = response.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise ResponseTooLarge(self.max_body_bytes)
        chunks: List[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise StarlingConnectionError("timed out reading the answer")
            chunk = response.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ResponseTooLarge(self.max_body_bytes)
            chunks.append(chunk)

    def request(self, method: str, path: str, body: Any = None, *, idempotent: bool,
                timeout: Optional[float] = None, headers: Optional[Mapping[str, str]] = None) -> Response:
        """One call, retried only where that is safe, all within ``timeout`` (the client's by
        default).

        - Could not connect (nothing was sent): the next node, for any method.
        - The connection broke after sending, or 502/504: again only when ``idempotent``.
        These failures get at most ``retries`` more attempts, with a growing pause once every
        known node was tried.
        - 503 or 429 with Retry-After: the node refused before doing anything, so any method is
          sent again after the delay (at most `MAX_RETRY_AFTER_SECONDS`), up to
          `MAX_UNAVAILABLE_RETRIES` times: a session's owner taking over after a crash answers
          503 for a few seconds, and the caller should not see it.
        """
        call_timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + call_timeout
        encoded = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        failures = 0
        refusals = 0
        last_error: Optional[StarlingError] = None
        endpoint = self._next
        while time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            try:
                connection, raw = self.open(method, path, encoded, headers or {}, remaining, endpoint)
                try:
                    data = self.read_bounded(raw, deadline)
                    response = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, data)
                except (OSError, http.client.HTTPException) as error:
                    raise StarlingConnectionError(f"{method} {path}: reading the answer failed: {error or type(error).__name__}") from None
                finally:
                    connection.close()
            except StarlingConnectionError as error:
                last_error = error
                failures += 1
                if (error.sent and not idempotent) or failures > self.retries:
                    raise
                endpoint += 1
                delay = _backoff(failures) if failures >= self.endpoint_count else 0.0
            else:
                if response.status < 400:
                    self._next = endpoint % max(self.endpoint_count, 1)
                    return response
                refusal = error_from(response)
                last_error = refusal
                if response.status in (503, 429) and refusal.retry_after is not None:
                    refusals += 1
                    if refusals > MAX_UNAVAILABLE_RETRIES:
                        raise refusal
                    delay = min(refusal.retry_after, MAX_RETRY_AFTER_SECONDS)
                elif response.status in (502, 504) and idempotent:
                    failures += 1
                    if failures > self.retries:
                        raise refusal
                    endpoint += 1
                    delay = _backoff(failures)
                else:
                    raise refusal
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
        if last_error is None:
            raise StarlingConnectionError(f"{method} {path}: timed out after {call_timeout} s")
        raise last_error


def _backoff(failures: int) -> float:
    """The pause before the next attempt after ``failures`` failed ones: 0.1 s doubling, at most 2 s."""
    return float(min(0.1 * (2 ** min(failures - 1, 5)), 2.0))
