"""A TCP proxy between a test client and a real node, that can break connections on cue.

It stands for the network going wrong (a dropped connection, a node refusing with 503) without
standing in for the node: everything else passes through to the real node unchanged.
"""

from __future__ import annotations

import socket
import threading
from typing import List, Optional, Tuple


class FaultProxy:
    """Listens on 127.0.0.1 (a port the kernel picks) and relays each connection to ``target``.

    Faults, each applied to the next connection only and then cleared:
    - ``cut_after_task_events(k)``: relay an event stream until k ``task`` events have passed,
      then close both sides (mid-stream, at an event boundary);
    - ``refuse_with_503(retry_after)``: answer 503 with Retry-After without reaching the node;
    - ``cut_after_request()``: read the request, then close without an answer (it never reaches
      the node either, but the client cannot know that).
    ``requests`` records the head (request line and headers) of every request it received.
    """

    def __init__(self, target: Tuple[str, int]) -> None:
        self.target = target
        self.requests: List[str] = []
        self._lock = threading.Lock()
        self._fault: Optional[Tuple[str, object]] = None
        self._sockets: List[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    # -- faults -----------------------------------------------------------------------------------

    def cut_after_task_events(self, count: int) -> None:
        self._set(("cut-events", count))

    def refuse_with_503(self, retry_after: str = "1") -> None:
        self._set(("503", retry_after))

    def cut_after_request(self) -> None:
        self._set(("cut-request", None))

    def _set(self, fault: Tuple[str, object]) -> None:
        with self._lock:
            self._fault = fault

    def _take_fault(self) -> Optional[Tuple[str, object]]:
        with self._lock:
            fault, self._fault = self._fault, None
            return fault

    # -- relaying ---------------------------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    client.close()
                    return
                head += chunk
                if len(head) > 1 << 20:
                    client.close()
                    return
            header_text = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            with self._lock:
                self.requests.append(header_text)
            fault = self._take_fault()
            if fault is not None and fault[0] == "503":
                body = b'{"error":"the proxy refused: try again"}'
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: "
                               + str(fault[1]).encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                               + b"\r\nConnection: close\r\n\r\n" + body)
                client.close()
                return
            if fault is not None and fault[0] == "cut-request":
                client.close()
                return
            upstream = socket.create_connection(self.target, timeout=60)
            self._track(upstream)
            upstream.sendall(head)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            if fault is not None and fault[0] == "cut-events":
                self._relay_events(upstream, client, int(str(fault[1])))
            else:
                self._pump(upstream, client)
        except OSError:
            pass
        finally:
            client.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _relay_events(self, upstream: socket.socket, client: socket.socket, count: int) -> None:
        """Relays a chunked event stream one event per chunk, and closes both sides once
        ``count`` task events have passed."""
        reader = upstream.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline()
            if not line:
                return
            head += line
        client.sendall(head)
        if b"transfer-encoding: chunked" not in head.lower():
            raise AssertionError("the event stream is expected in chunked encoding")
        text = b""
        sent = 0
        while sent < count:
            size_line = reader.readline()
            if not size_line:
                break
            size = int(size_line.strip().split(b";")[0], 16)
            data = reader.read(size + 2)[:size]
            if size == 0:
                break
            text += data
            while b"\n\n" in text and sent < count:
                event, text = text.split(b"\n\n", 1)
                event += b"\n\n"
                client.sendall(b"%x\r\n" % len(event) + event + b"\r\n")
                if b"event: task" in event:
                    sent += 1
        for s in (upstream, client):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
