"""A loopback TCP proxy that injects faults between a client and a real redis-server.

Modes, switchable at any time (they apply to data arriving from then on):

- ``"pass"``: forward both ways.
- ``"delay"``: hold each chunk ``delay`` seconds before forwarding it, both ways.
- ``"cut_replies"``: forward requests to the server but drop its replies (the server runs
  the command; the client never hears back and times out).
- ``"drop"``: forward nothing (a black hole: the server never sees the command).
- ``"refuse"``: close every connection and stop listening (connection refused), until
  another mode is set.

Threads only, bounded waits; everything stops with :meth:`close`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["FaultProxy"]

_POLL = 0.05


class FaultProxy:
    """Listens on a free 127.0.0.1 port and forwards to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int, *, mode: str = "pass", delay: float = 0.0) -> None:
        self.target_port = target_port
        self.mode = mode
        self.delay = delay
        self.replies_dropped = 0
        self.requests_dropped = 0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        self._listener = self._listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(_POLL)
        return listener

    def set(self, mode: str, *, delay: float | None = None) -> None:
        """Switch mode; ``"refuse"`` also cuts every open connection and stops listening."""
        if delay is not None:
            self.delay = delay
        with self._lock:
            previous, self.mode = self.mode, mode
            if mode == "refuse" and previous != "refuse":
                self._listener.close()
            elif previous == "refuse" and mode != "refuse":
                self._listener = self._listen(self.port)
        if mode == "refuse":
            self.cut_all()

    @contextlib.contextmanager
    def fault(self, mode: str, *, delay: float | None = None) -> Iterator[FaultProxy]:
        """``mode`` for the duration of a ``with`` block, then back to ``"pass"``."""
        self.set(mode, delay=delay)
        try:
            yield self
        finally:
            self.set("pass")

    def cut_all(self) -> None:
        """Close every open connection (the client sees a reset)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed = True
        self.cut_all()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            if self.mode == "refuse":
                time.sleep(_POLL)
                continue
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed:
                    return
                time.sleep(_POLL)  # the listener was closed for "refuse"
                continue
            if self.mode == "refuse":
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, upstream), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while not self._closed:
                ready, _, _ = select.select([source], [], [], _POLL)
                if not ready:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                mode = self.mode
                if mode == "drop" or mode == "refuse":
                    if upstream:
                        self.requests_dropped += 1
                    continue
                if mode == "cut_replies" and not upstream:
                    self.replies_dropped += 1
                    continue
                if mode == "delay" and self.delay:
                    time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
