"""``agent-budget dashboard``: a local, read-only web page of spend, limits and refusals.

Standard library only (``http.server``): the page, its script and style ship in this
package (``static/``), with no CDN and no build step; the chart is SVG drawn by the script.
The server opens the store for reading (nothing is written or created) and answers:

- ``/``: the page; ``/static/<file>``: its assets;
- ``/api/report``: the report of :func:`agent_budget.report.build_report` as JSON, with the
  query parameters ``since``, ``until``, ``bucket``, ``scope`` (repeatable), ``rollup``,
  ``top``;
- ``/healthz``: ``ok``.

It binds 127.0.0.1 by default and then answers only requests addressed to this host (a
DNS-rebinding guard). Bound to any other address it needs an access token, which guards the
data (``/api/report``): sent as ``Authorization: Bearer <token>`` or ``?token=<token>``; the
page, opened as ``/?token=<token>``, passes it on. The page and its assets hold no data.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import BudgetError, UnknownScopeError
from ..report import BUCKETS, build_report, open_for_reading, parse_time, redact_url
from ..stores import Store

__all__ = ["DashboardServer", "serve"]

log = logging.getLogger("agent_budget.dashboard")

TOKEN_ENV = "AGENT_BUDGET_DASHBOARD_TOKEN"
_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _asset(name: str) -> bytes:
    return resources.files("agent_budget.dashboard").joinpath("static").joinpath(name).read_bytes()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardServer:
    """The dashboard over one store, in a background thread (:meth:`start`) or the calling
    one (:meth:`serve_forever`). ``store`` is a URL (opened read-only) or a Store."""

    def __init__(
        self,
        store: Store | str,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        refresh: int = 10,
        since: str | None = None,
        bucket: str | None = None,
        rollup: str | None = None,
        top: int = 10,
    ) -> None:
        if token is not None and (not isinstance(token, str) or len(token) < 8):
            raise ValueError("the access token must be a string of at least 8 characters")
        if not _is_loopback(host) and not token:
            raise ValueError(
                f"binding the dashboard to {host!r} exposes it beyond this host: give an "
                f"access token (--token or ${TOKEN_ENV}), or bind 127.0.0.1"
            )
        if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 1:
            raise ValueError(f"refresh must be a positive number of seconds, got {refresh!r}")
        if bucket is not None and bucket not in BUCKETS:
            raise ValueError(f"bucket must be one of {sorted(BUCKETS)}, got {bucket!r}")
        self.url_of_store = store if isinstance(store, str) else None
        self.store = open_for_reading(store)
        self.token = token
        self.defaults: dict[str, Any] = {
            "refresh": refresh,
            "since": since,
            "bucket": bucket or "hour",
            "rollup": rollup,
            "top": top,
        }
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.loopback = _is_loopback(host)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        shown = f"[{host}]" if ":" in host else host
        if host in ("0.0.0.0", "::"):
            shown = "127.0.0.1"
        return f"http://{shown}:{self.port}/"

    def start(self) -> str:
        """Serve in a daemon thread; returns the page's URL."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="agent-budget-dashboard", daemon=True
        )
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.close()

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answers ---------------------------------------------------------------------------

    def report(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """The report for one request's query string (defaults from the command line)."""

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        defaults = self.defaults
        now = self.store.now() or time.time()
        bucket = one("bucket") or str(defaults["bucket"])
        top_text = one("top")
        top = int(top_text) if top_text and top_text.isdigit() else int(defaults["top"])
        with self._lock:  # one report at a time: they are heavy, and the page polls
            report = build_report(
                self.store,
                since=parse_time(one("since") or defaults["since"], now),
                until=parse_time(one("until"), now),
                bucket=bucket,
                scopes=query.get("scope") or None,
                rollup=one("rollup") or defaults["rollup"],
                top=min(max(top, 1), 50),
                sessions=False,  # the page shows no sessions: skip their query
                now=now,
                url=self.url_of_store,
            )
        report["refresh_seconds"] = defaults["refresh"]
        if self.url_of_store:
            report["store"] = redact_url(self.url_of_store)
        return report

    def authorized(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if not self.token:
            return True
        given = ""
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :]
        elif query.get("token"):
            given = query["token"][-1]
        return hmac.compare_digest(given.encode(), self.token.encode())


def _handler_for(server: DashboardServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "agent-budget-dashboard"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes, content_type: str, *, cache: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
            for name, value in _SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self._send(status, body, "application/json", cache=False)

        def _host_ok(self) -> bool:
            if not server.loopback:
                return True
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            return _is_loopback(host)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            if not self._host_ok():
                self._error(HTTPStatus.FORBIDDEN, "this dashboard answers local requests only")
                return
            if parts.path == "/healthz":
                self._send(HTTPStatus.OK, b"ok", "text/plain", cache=False)
            elif parts.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, _asset("index.html"), _STATIC["index.html"], cache=False)
            elif parts.path.startswith("/static/") and parts.path[8:] in _STATIC:
                name = parts.path[8:]
                self._send(HTTPStatus.OK, _asset(name), _STATIC[name], cache=False)
            elif parts.path == "/api/report":
                if server.authorized(self.headers, query):
                    self._report(query)
                else:
                    self._error(HTTPStatus.UNAUTHORIZED, "an access token is required")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {parts.path}")

        do_HEAD = do_GET

        def _report(self, query: dict[str, list[str]]) -> None:
            try:
                report = server.report(query)
            except UnknownScopeError as exc:
                self._error(HTTPStatus.NOT_FOUND, str(exc))
                return
            except (ValueError, TypeError) as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))
                return
            except BudgetError as exc:
                log.warning("dashboard report failed: %s", exc)
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
                return
            body = json.dumps(report, separators=(",", ":")).encode()
            self._send(HTTPStatus.OK, body, "application/json", cache=False)

        def _refuse(self) -> None:
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "GET, HEAD")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    return Handler


def serve(
    url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    refresh: int = 10,
    since: str | None = None,
    bucket: str | None = None,
    rollup: str | None = None,
    top: int = 10,
    open_browser: bool = False,
) -> int:
    """The CLI's entry: serve until interrupted; returns the exit status."""
    token = token or os.environ.get(TOKEN_ENV) or None
    try:
        dashboard = DashboardServer(
            url,
            host=host,
            port=port,
            token=token,
            refresh=refresh,
            since=since,
            bucket=bucket,
            rollup=rollup,
            top=top,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    page = dashboard.url + (f"?token={token}" if token else "")
    print(f"agent-budget dashboard of {redact_url(url)} on {dashboard.url} (Ctrl-C stops it)")
    if token:
        print(f"open {page}")
    if open_browser:
        webbrowser.open(page)
    previous = _stop_on_sigterm()
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            dashboard.close()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the serve loop as Ctrl-C does (the stores are closed, so a SQLite
    reader leaves no ``-wal`` / ``-shm`` files behind); only the main thread can. Returns
    the handler to put back, or None when none was set."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGTERM, _interrupt)
    except (ValueError, OSError):  # no SIGTERM here, or not allowed
        return None
