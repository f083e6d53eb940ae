"""The client's bounds and the event stream's parser against a local HTTP server that sends
what a node could send at its edges (comments, CRLF, multi-line data, an event cut mid-line, an
endless line, refusals without end). No mesh needed: these run on their own.
"""

from __future__ import annotations

import http.server
import threading
import time
import unittest
from typing import Callable, Dict, List

from starling_client import Client, ResponseTooLarge, StarlingConnectionError, StarlingError


class _Server:
    """A threaded HTTP server on 127.0.0.1 whose answer to each GET is the next script."""

    def __init__(self, scripts: List[Callable[[http.server.BaseHTTPRequestHandler], None]]) -> None:
        self.scripts = scripts
        self.headers: List[Dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                script = owner.scripts.pop(0) if owner.scripts else None
                if script is None:
                    self.send_error(500, "no more scripted answers")
                    return
                script(self)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def stream(body: bytes, close_early: bool = False) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
        handler.close_connection = True
    return answer


SWARM = "0123456789abcdef"


class StreamParsingTests(unittest.TestCase):
    def serve(self, *scripts: Callable[[http.server.BaseHTTPRequestHandler], None]) -> _Server:
        server = _Server(list(scripts))
        self.addCleanup(server.close)
        return server

    def test_comments_crlf_and_multi_line_data_parse_and_a_cut_stream_resumes(self) -> None:
        first = (b"retry: 10\r\n\r\n: keep-alive\r\n\r\n"
                 b"id: 1\r\nevent: task\r\ndata: {\"id\": \"a\",\r\ndata:  \"state\": \"succeeded\"}\r\n\r\n"
                 b"id: 2\nevent: task\ndata: {\"id\": \"b\", \"state\": \"failed\"}\n\n"
                 b"id: 3\nevent: task\ndata: {\"id\": \"c\", \"sta")  # cut mid-event
        second = (b"id: 3\nevent: task\ndata: {\"id\": \"c\", \"state\": \"succeeded\"}\n\n"
                  b"event: done\ndata: {\"id\": \"" + SWARM.encode() + b"\", \"state\": \"done\"}\n\n")
        server = self.serve(stream(first), stream(second))
        events = Client(server.address).events(SWARM)
        seen = [(e.event_id, e.id, e.state) for e in events]
        self.assertEqual(seen, [("1", "a", "succeeded"), ("2", "b", "failed"), ("3", "c", "succeeded")])
        self.assertEqual(events.state, "done")
        self.assertEqual(events.reconnects, 1)
        self.assertNotIn("last-event-id", server.headers[0])
        self.assertEqual(server.headers[1]["last-event-id"], "2", "resumed after the last whole event")

    def test_an_event_id_with_a_control_character_is_not_sent_back(self) -> None:
        first = b"id: 7\revil: 1\nevent: task\ndata: {\"id\": \"a\", \"state\": \"succeeded\"}\n\n"
        second = b"event: done\ndata: {\"state\": \"done\"}\n\n"
        server = self.serve(stream(first), stream(second))
        events = Client(server.address).events(SWARM)
        self.assertEqual([e.id for e in events], ["a"])
        self.assertIsNone(events.last_event_id)
        self.assertNotIn("last-event-id", server.headers[1])

    def test_a_non_ascii_id_or_retry_is_ignored(self) -> None:
        # A superscript digit passes str.isdigit() but not int(); an id http.client cannot put
        # in a header would break the reconnect (review).
        first = "retry: \u00b2\nid: \u00e9t\u00e9\nevent: task\ndata: {\"id\": \"a\", \"state\": \"succeeded\"}\n\n".encode()
        second = b"event: done\ndata: {\"state\": \"done\"}\n\n"
        server = self.serve(stream(first), stream(second))
        events = Client(server.address).events(SWARM)
        self.assertEqual([e.id for e in events], ["a"])
        self.assertIsNone(events.last_event_id)

    def test_an_endless_line_is_refused_at_the_bound(self) -> None:
        server = self.serve(stream(b"data: " + b"x" * 100_000))
        with self.assertRaises(ResponseTooLarge):
            list(Client(server.address, max_body_bytes=10_000).events(SWARM))

    def test_endless_data_lines_are_refused_at_the_bound(self) -> None:
        server = self.serve(stream(b"event: task\n" + b"data: xxxxxxxxxx\n" * 10_000))
        with self.assertRaises(ResponseTooLarge):
            list(Client(server.address, max_body_bytes=10_000).events(SWARM))

    def test_reconnects_are_bounded_when_the_node_refuses(self) -> None:
        def refuse(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(503)
            handler.send_header("Retry-After", "0")
            handler.send_header("Content-Length", "19")
            handler.end_headers()
            handler.wfile.write(b'{"error": "busy"}  ')
        server = self.serve(*[refuse] * 10)
        with self.assertRaises(StarlingError) as raised:
            list(Client(server.address).events(SWARM, max_reconnects=2))
        self.assertEqual((raised.exception.status, raised.exception.message), (503, "busy"))
        self.assertEqual(len(server.headers), 3, "the first attempt and 2 more")

    def test_reconnects_are_bounded_when_streams_end_at_once_without_events(self) -> None:
        server = self.serve(*[stream(b"retry: 1\n\n: nothing\n\n")] * 10)
        with self.assertRaises(StarlingConnectionError):
            list(Client(server.address).events(SWARM, max_reconnects=2))
        self.assertEqual(len(server.headers), 3, "the first attempt and 2 more")

    def test_an_event_resets_the_count_of_reconnects(self) -> None:
        scripts = [stream(b"retry: 1\n\nid: %d\nevent: task\ndata: {\"id\": \"t%d\", \"state\": \"succeeded\"}\n\n" % (i, i))
                   for i in range(1, 6)]
        scripts.append(stream(b"event: done\ndata: {\"state\": \"cancelled\"}\n\n"))
        server = self.serve(*scripts)
        events = Client(server.address).events(SWARM, max_reconnects=1)
        self.assertEqual([e.id for e in events], ["t1", "t2", "t3", "t4", "t5"])
        self.assertEqual((events.state, events.reconnects), ("cancelled", 5))
        self.assertEqual([h.get("last-event-id") for h in server.headers], [None, "1", "2", "3", "4", "5"])


class RetryBoundsTests(unittest.TestCase):
    def test_refusals_with_retry_after_are_retried_until_the_deadline_only(self) -> None:
        def refuse(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(503)
            handler.send_header("Retry-After", "0.2")
            handler.send_header("Content-Length", "17")
            handler.end_headers()
            handler.wfile.write(b'{"error": "busy"}')
        server = _Server([refuse] * 100)
        self.addCleanup(server.close)
        started = time.monotonic()
        with self.assertRaises(StarlingError) as raised:
            Client(server.address, timeout=1.5).health()
        self.assertEqual((raised.exception.status, raised.exception.message, raised.exception.retry_after), (503, "busy", 0.2))
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertTrue(5 <= len(server.headers) <= 9, len(server.headers))

    def test_refusals_with_retry_after_are_retried_at_most_60_times(self) -> None:
        def refuse(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(429)
            handler.send_header("Retry-After", "0")
            handler.send_header("Content-Length", "17")
            handler.end_headers()
            handler.wfile.write(b'{"error": "busy"}')
        server = _Server([refuse] * 100)
        self.addCleanup(server.close)
        with self.assertRaises(StarlingError) as raised:
            Client(server.address, timeout=60).health()
        self.assertEqual(raised.exception.status, 429)
        self.assertEqual(len(server.headers), 61, "the first attempt and 60 more")

    def test_a_refusal_without_retry_after_is_not_retried(self) -> None:
        def refuse(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(503)
            handler.send_header("Content-Length", "17")
            handler.end_headers()
            handler.wfile.write(b'{"error": "down"}')
        server = _Server([refuse] * 10)
        self.addCleanup(server.close)
        with self.assertRaises(StarlingError) as raised:
            Client(server.address).health()
        self.assertEqual(raised.exception.status, 503)
        self.assertEqual(len(server.headers), 1)


if __name__ == "__main__":
    unittest.main()
