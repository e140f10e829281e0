"""Local stand-ins for the OpenAI Chat Completions and Anthropic Messages HTTP APIs.

The real provider clients (``openai``, ``anthropic``, ``langchain-openai``,
``langchain-anthropic``, ``llama-index-llms-openai``, ``llama-index-llms-anthropic``) are
pointed at these servers through ``base_url`` and a dummy key, so the tests exercise the
exact usage payloads those clients parse. Everything listens on 127.0.0.1 only.

Each server answers from a script of :class:`Reply` objects (then a default reply) and keeps
a :attr:`MockProvider.ledger` of :class:`Served` entries: the ground truth of what it billed.

Billing rule (what a provider bills, and what the ledger records):

- A complete response bills its whole usage: ``input_tokens`` (the whole prompt, cached and
  cache-written tokens included, as :class:`agent_budget.Usage` counts them) and
  ``output_tokens`` (reasoning included).
- An error response (429, 500, ...) bills nothing.
- A stream cut off after ``k`` of its ``n`` content pieces (text fragments or tool-call
  argument fragments) bills the whole input plus the output produced so far: the reasoning
  tokens (thinking happens before the first visible piece) plus ``visible * k // n`` of the
  visible output tokens, and never less than an output count the server already announced
  in an event it sent (Anthropic's ``message_start`` announces 1). The connection is then
  closed in the middle of the chunked body, which HTTP clients report as an incomplete read.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx

from agent_budget import Budget, RateTable, Usage, builtin_rates

__all__ = [
    "ANTHROPIC_SNAPSHOTS",
    "CUT_OFF_ERRORS",
    "OPENAI_SNAPSHOTS",
    "AnthropicServer",
    "MockProvider",
    "OpenAIServer",
    "Reply",
    "Served",
    "ToolCall",
    "builtin_price_nanos",
    "held",
]

# What a bare model name is answered with: real providers report a dated snapshot.
OPENAI_SNAPSHOTS: dict[str, str] = {
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "o3": "o3-2025-04-16",
    "o4-mini": "o4-mini-2025-04-16",
}
ANTHROPIC_SNAPSHOTS: dict[str, str] = {
    "claude-3-5-sonnet-latest": "claude-3-5-sonnet-20241022",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
}


def _cut_off_errors() -> tuple[type[BaseException], ...]:
    # An incomplete chunked body reads as RemoteProtocolError; ReadError covers a reset.
    errors: list[type[BaseException]] = [httpx.RemoteProtocolError, httpx.ReadError]
    try:  # anthropic >= 2 talks HTTP through httpx2, whose errors are its own classes
        import httpx2

        errors += [httpx2.RemoteProtocolError, httpx2.ReadError]
    except ImportError:
        pass
    return tuple(errors)


CUT_OFF_ERRORS = _cut_off_errors()
"""What a client raises when a stream's connection drops mid-body (an incomplete read)."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asks for: OpenAI ``tool_calls`` / Anthropic ``tool_use``."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    ``input_tokens`` is the whole prompt including ``cache_read_tokens`` and
    ``cache_write_tokens`` (the Anthropic server reports the uncached rest as its
    ``input_tokens``); ``output_tokens`` includes ``reasoning_tokens``. A ``status`` other
    than 200 answers with that error instead. ``cut_after`` closes a streamed answer after
    that many content pieces. ``model`` overrides the snapshot the answer reports.
    """

    text: str = "The answer is 42, as usual."
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 20
    output_tokens: int = 8
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    status: int = 200
    cut_after: int | None = None

    @property
    def usage(self) -> Usage:
        """The whole usage of this reply, as :class:`agent_budget.Usage` counts it."""
        return Usage(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        )


@dataclass(frozen=True)
class Served:
    """One request the server answered (one ledger line).

    ``usage`` is what the provider bills for it (zero for errors; see the module docstring
    for cut-off streams). ``model`` is the snapshot the answer reported ("" for errors).
    """

    index: int
    path: str
    requested_model: str
    model: str
    stream: bool
    include_usage: bool
    status: int
    usage: Usage
    cut_off: bool
    tool_calls: int
    body: dict[str, Any] = field(repr=False)

    @property
    def billed(self) -> bool:
        return self.status == 200


def builtin_price_nanos(model: str, usage: Usage) -> int:
    """What the built-in table charges ``usage`` on ``model`` (a dated snapshot is priced by
    its own row when it has one, else by its family's), in nano-USD."""
    resolved = RateTable(on_unknown="raise").resolve(model)
    assert resolved.price_key in builtin_rates(), f"{model} is not priced by a built-in row"
    return builtin_rates()[resolved.price_key].rates.cost_nanos(usage)


def held(budget: Budget) -> int:
    """Everything still reserved in ``budget``'s counters (0 when no hold leaked)."""
    return sum(level.reserved for level in budget.usage().values())


def _pieces(text: str) -> list[str]:
    """Split text into word-sized stream pieces (at least one)."""
    words = text.split(" ")
    out = [words[0]] + [" " + w for w in words[1:]]
    return [p for p in out if p] or [""]


def _json_pieces(arguments: dict[str, Any]) -> list[str]:
    """Split a JSON argument string into three fragments, as providers stream them."""
    raw = json.dumps(arguments)
    step = max(1, -(-len(raw) // 3))
    return [raw[i : i + step] for i in range(0, len(raw), step)] or [""]


class _Handler(BaseHTTPRequestHandler):
    """Dispatches a request to its :class:`MockProvider`."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        self.server.provider.handle(self, self.path.split("?", 1)[0], body)

    # -- writing helpers used by the providers ------------------------------------------------

    def send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self) -> None:
        """Drop the connection in the middle of the chunked body."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, provider: MockProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.provider = provider

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (the cut-off tests do) is expected: stay quiet. Printing a
        # traceback here would also run ast.parse in this thread (Python 3.11 tracebacks
        # parse the source line for their ^^^ markers), which on CPython 3.11.7 can corrupt
        # the parser state of a concurrent ast.parse in another thread (SystemError "AST
        # constructor recursion depth mismatch").
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class MockProvider:
    """Base of the two servers: the script, the ledger, and the server thread.

    Use as a context manager (``with OpenAIServer() as server:``); ``base_url`` is what the
    clients are given. ``script(...)`` queues replies, ``fail(status, times)`` queues errors
    in front of them, and ``default`` answers once the queue is empty.
    """

    snapshots: ClassVar[dict[str, str]] = {}

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self._queue: deque[Reply] = deque()
        self._ledger: list[Served] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> MockProvider:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MockProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL the SDKs take as ``base_url`` (``.../v1`` for OpenAI, the root for
        Anthropic, whose SDK adds ``/v1/messages`` itself)."""
        raise NotImplementedError

    # -- scripting -----------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._queue.extend(replies)

    def fail(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with HTTP ``status``, before scripted replies."""
        with self._lock:
            for _ in range(times):
                self._queue.appendleft(Reply(status=status))

    def _next(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    # -- the ledger ------------------------------------------------------------------------------

    @property
    def ledger(self) -> list[Served]:
        with self._lock:
            return list(self._ledger)

    @property
    def billed(self) -> list[Served]:
        """Ledger lines that cost money (status 200)."""
        return [s for s in self.ledger if s.billed]

    def total(self) -> Usage:
        """Everything billed so far."""
        out = Usage()
        for served in self.billed:
            out = out + served.usage
        return out

    def _log(self, **fields: Any) -> Served:
        with self._lock:
            served = Served(index=len(self._ledger), **fields)
            self._ledger.append(served)
            return served

    def served_model(self, requested: str, reply: Reply) -> str:
        if reply.model:
            return reply.model
        return self.snapshots.get(requested, requested)

    # -- request handling --------------------------------------------------------------------------

    route = ""

    def handle(self, h: _Handler, path: str, body: dict[str, Any]) -> None:
        """Answer one request with the next scripted reply, logging it in the ledger."""
        if path != self.route:
            h.send_json(404, self._not_found(path), {})
            return
        reply = self._next()
        requested = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        common = {
            "path": path,
            "requested_model": requested,
            "stream": stream,
            "include_usage": self._include_usage(body),
            "body": body,
        }
        if reply.status != 200:
            self._log(
                model="",
                status=reply.status,
                usage=Usage(),
                cut_off=False,
                tool_calls=0,
                **common,
            )
            h.send_json(reply.status, self._error(reply.status), self._retry_headers())
            return
        self._check(reply)
        model = self.served_model(requested, reply)
        if not stream:
            self._log(
                model=model,
                status=200,
                usage=reply.usage,
                cut_off=False,
                tool_calls=len(reply.tool_calls),
                **common,
            )
            h.send_json(200, self._whole(reply, model), {})
            return
        self._stream(h, reply, model, common)

    # What each provider's API does differently.

    def _not_found(self, path: str) -> dict[str, Any]:
        raise NotImplementedError

    def _include_usage(self, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    def _error(self, status: int) -> dict[str, Any]:
        raise NotImplementedError

    def _check(self, reply: Reply) -> None:
        """Reject a scripted reply this provider could not send."""

    def _whole(self, reply: Reply, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def _stream(self, h: _Handler, reply: Reply, model: str, common: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _billed_output(reply: Reply, sent: int, total: int, announced: int = 0) -> int:
        visible = reply.output_tokens - reply.reasoning_tokens
        return max(announced, reply.reasoning_tokens + visible * sent // max(total, 1))

    @staticmethod
    def _retry_headers() -> dict[str, str]:
        # Both SDKs honour retry-after-ms; llama-index's tenacity wrapper reads retry-after.
        return {"retry-after-ms": "1", "retry-after": "0"}


class OpenAIServer(MockProvider):
    """``POST /v1/chat/completions``, non-streaming and SSE, with OpenAI's usage fields.

    A stream carries a final usage chunk (``choices: []``) only when the request asked for
    ``stream_options: {"include_usage": true}``, as the real API does.
    """

    snapshots = OPENAI_SNAPSHOTS

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def __enter__(self) -> OpenAIServer:
        self.start()
        return self

    route = "/v1/chat/completions"

    def _not_found(self, path: str) -> dict[str, Any]:
        return {"error": {"message": f"no route {path}", "type": "invalid"}}

    def _include_usage(self, body: dict[str, Any]) -> bool:
        return bool((body.get("stream_options") or {}).get("include_usage"))

    def _error(self, status: int) -> dict[str, Any]:
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        return {"error": {"message": f"mock {status}", "type": kind, "code": kind}}

    def _check(self, reply: Reply) -> None:
        if reply.cache_write_tokens:
            raise ValueError("OpenAI reports no cache writes; use cache_read_tokens")

    def _whole(self, reply: Reply, model: str) -> dict[str, Any]:
        return self._completion(reply, model)

    @staticmethod
    def _usage(reply: Reply, output_tokens: int | None = None) -> dict[str, Any]:
        out = reply.output_tokens if output_tokens is None else output_tokens
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": out,
            "total_tokens": reply.input_tokens + out,
            "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
        return [
            {
                "id": call.id or f"call_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for i, call in enumerate(reply.tool_calls)
        ]

    def _completion(self, reply: Reply, model: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = self._tool_calls(reply)
        else:
            message["content"] = reply.text
        return {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": self._usage(reply),
        }

    def _deltas(self, reply: Reply) -> list[dict[str, Any]]:
        """The content deltas of a streamed answer: text words or tool-argument fragments."""
        if not reply.tool_calls:
            return [{"content": piece} for piece in _pieces(reply.text)]
        out: list[dict[str, Any]] = []
        for i, call in enumerate(reply.tool_calls):
            frags = _json_pieces(call.arguments)
            head = {
                "index": i,
                "id": call.id or f"call_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": frags[0]},
            }
            out.append({"tool_calls": [head]})
            out.extend(
                {"tool_calls": [{"index": i, "function": {"arguments": frag}}]}
                for frag in frags[1:]
            )
        return out

    def _stream(self, h: _Handler, reply: Reply, model: str, common: dict[str, Any]) -> None:
        include_usage = bool(common["include_usage"])
        deltas = self._deltas(reply)
        cut = reply.cut_after is not None and reply.cut_after < len(deltas)
        sent = reply.cut_after if cut and reply.cut_after is not None else len(deltas)
        usage = (
            Usage(
                reply.input_tokens,
                self._billed_output(reply, sent, len(deltas)),
                reply.cache_read_tokens,
                0,
                reply.reasoning_tokens,
            )
            if cut
            else reply.usage
        )
        self._log(
            model=model,
            status=200,
            usage=usage,
            cut_off=cut,
            tool_calls=len(reply.tool_calls),
            **common,
        )

        def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
            payload: dict[str, Any] = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                payload["usage"] = self._usage(reply) if delta is None else None
            return f"data: {json.dumps(payload)}\n\n".encode()

        h.start_sse()
        h.send_chunk(chunk({"role": "assistant", "content": "", "refusal": None}))
        for delta in deltas[:sent]:
            h.send_chunk(chunk(delta))
        if cut:
            h.cut()
            return
        h.send_chunk(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        if include_usage:
            h.send_chunk(chunk(None))
        h.send_chunk(b"data: [DONE]\n\n")
        h.end_sse()


class AnthropicServer(MockProvider):
    """``POST /v1/messages``, non-streaming and SSE, with Anthropic's usage fields.

    A stream sends ``message_start`` (usage: input, cache read / creation, 1 output token),
    ``content_block_start`` / ``content_block_delta`` / ``content_block_stop`` per block,
    ``message_delta`` with the cumulative usage (input and cache fields included, as the API
    has sent them since 2025) and ``message_stop``. Reasoning tokens are reported as
    ``output_tokens_details.thinking_tokens``.
    """

    snapshots = ANTHROPIC_SNAPSHOTS

    def __init__(
        self, default: Reply | None = None, *, cumulative_delta_usage: bool = True
    ) -> None:
        super().__init__(default)
        self.cumulative_delta_usage = cumulative_delta_usage

    @property
    def base_url(self) -> str:
        return self.root_url

    def __enter__(self) -> AnthropicServer:
        self.start()
        return self

    route = "/v1/messages"

    def _not_found(self, path: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": "not_found_error"}}

    def _include_usage(self, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))  # Anthropic streams always carry usage

    def _error(self, status: int) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"mock {status}"}}

    def _whole(self, reply: Reply, model: str) -> dict[str, Any]:
        return self._message(reply, model)

    @staticmethod
    def _usage(reply: Reply, output_tokens: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input_tokens": reply.input_tokens - reply.cache_read_tokens - reply.cache_write_tokens,
            "cache_creation_input_tokens": reply.cache_write_tokens,
            "cache_read_input_tokens": reply.cache_read_tokens,
            "output_tokens": reply.output_tokens if output_tokens is None else output_tokens,
        }
        if reply.reasoning_tokens:
            out["output_tokens_details"] = {"thinking_tokens": reply.reasoning_tokens}
        return out

    @staticmethod
    def _blocks(reply: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.text and not reply.tool_calls:
            blocks.append({"type": "text", "text": reply.text})
        for i, call in enumerate(reply.tool_calls):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id or f"toolu_{i}",
                    "name": call.name,
                    "input": call.arguments,
                }
            )
        return blocks

    def _message(self, reply: Reply, model: str) -> dict[str, Any]:
        return {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self._blocks(reply),
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": self._usage(reply),
        }

    def _stream(self, h: _Handler, reply: Reply, model: str, common: dict[str, Any]) -> None:
        # Each event is (kind, payload, counts_as_content_piece).
        events: list[tuple[str, dict[str, Any], bool]] = []
        for index, block in enumerate(self._blocks(reply)):
            if block["type"] == "text":
                events.append(
                    (
                        "content_block_start",
                        {"index": index, "content_block": {"type": "text", "text": ""}},
                        False,
                    )
                )
                for piece in _pieces(block["text"]):
                    delta = {"type": "text_delta", "text": piece}
                    events.append(("content_block_delta", {"index": index, "delta": delta}, True))
            else:
                start = {**block, "input": {}}
                events.append(
                    ("content_block_start", {"index": index, "content_block": start}, False)
                )
                for frag in _json_pieces(block["input"]):
                    delta = {"type": "input_json_delta", "partial_json": frag}
                    events.append(("content_block_delta", {"index": index, "delta": delta}, True))
            events.append(("content_block_stop", {"index": index}, False))
        total = sum(1 for _, _, piece in events if piece)
        cut = reply.cut_after is not None and reply.cut_after < total
        announced = min(1, reply.output_tokens)
        usage = reply.usage
        if cut:
            assert reply.cut_after is not None
            usage = replace(
                reply.usage,
                output_tokens=self._billed_output(reply, reply.cut_after, total, announced),
            )
        self._log(
            model=model,
            status=200,
            usage=usage,
            cut_off=cut,
            tool_calls=len(reply.tool_calls),
            **common,
        )

        def event(kind: str, payload: dict[str, Any]) -> bytes:
            data = json.dumps({"type": kind, **payload})
            return f"event: {kind}\ndata: {data}\n\n".encode()

        start_message = {
            **self._message(reply, model),
            "content": [],
            "stop_reason": None,
            "usage": self._usage(reply, announced),
        }
        h.start_sse()
        h.send_chunk(event("message_start", {"message": start_message}))
        h.send_chunk(event("ping", {}))
        for kind, payload, _piece in self._iter_until_cut(events, reply.cut_after if cut else None):
            h.send_chunk(event(kind, payload))
        if cut:
            h.cut()
            return
        if self.cumulative_delta_usage:
            delta_usage = self._usage(reply)
        else:
            delta_usage = {"output_tokens": reply.output_tokens}
        h.send_chunk(
            event(
                "message_delta",
                {
                    "delta": {
                        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": delta_usage,
                },
            )
        )
        h.send_chunk(event("message_stop", {}))
        h.end_sse()

    @staticmethod
    def _iter_until_cut(
        events: list[tuple[str, dict[str, Any], bool]], cut_after: int | None
    ) -> Iterator[tuple[str, dict[str, Any], bool]]:
        pieces = 0
        for item in events:
            if cut_after is not None and item[2] and pieces >= cut_after:
                return
            pieces += item[2]
            yield item
