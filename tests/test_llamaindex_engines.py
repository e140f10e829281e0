"""The LlamaIndex handler inside query engines, chat engines and agents; what install()
covers that ``Settings.callback_manager`` alone does not; multi-tenant budget_scope."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from agent_budget import (
    Budget,
    BudgetError,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    RateTable,
)
from agent_budget_callbacks.llamaindex import (
    BudgetCallbackHandler,
    budget_scope,
    current_scope,
    install,
    installed_handlers,
    uninstall,
)

from .fake_llms import FakeChatLLM, FakeUsageLLM, RecordingHandler, Reported, isolated_settings

DOCS = [
    Document(text="The sky over the harbour is blue on clear days. " * 5),
    Document(text="Budgets stop language model calls before they run. " * 5),
]


@pytest.fixture(autouse=True)
def _settings() -> Iterator[None]:
    with isolated_settings():
        yield


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(DOCS, embed_model=MockEmbedding(embed_dim=8))


def budget(clock: Any, tokens: int = 10_000_000) -> Budget:
    return Budget(
        BudgetScope("app", max_tokens_per_session=tokens),
        RateTable(on_unknown="fallback"),
        clock=clock,
    )


def reserved(b: Budget) -> int:
    return int(b.summary()["session"]["reserved_tokens"])


# -- query engines ----------------------------------------------------------------------


def test_query_engine_refusal_reaches_query_unchanged(clock: Any, index: VectorStoreIndex) -> None:
    llm = FakeChatLLM()
    engine = index.as_query_engine(llm=llm)
    install(budget(clock, tokens=10))
    with pytest.raises(BudgetExceededError):
        engine.query("What colour is the sky?")
    assert llm.counter.calls == 0


def test_async_query_engine_refusal(clock: Any, index: VectorStoreIndex) -> None:
    llm = FakeChatLLM()
    engine = index.as_query_engine(llm=llm)
    install(budget(clock, tokens=10))
    with pytest.raises(BudgetExceededError):
        asyncio.run(engine.aquery("What colour is the sky?"))
    assert llm.counter.calls == 0


def test_streaming_query_engine_refuses_while_the_stream_is_read(
    clock: Any, index: VectorStoreIndex
) -> None:
    """query() returns before the LLM starts; the refusal comes out of response_gen."""
    llm = FakeChatLLM()
    engine = index.as_query_engine(llm=llm, streaming=True)
    install(budget(clock, tokens=10))
    response = engine.query("What colour is the sky?")  # no refusal yet
    assert llm.counter.calls == 0
    with pytest.raises(BudgetExceededError):
        "".join(response.response_gen)
    assert llm.counter.calls == 0


@pytest.mark.parametrize("streaming", [False, True])
def test_query_engine_usage_is_recorded_once(
    clock: Any, index: VectorStoreIndex, streaming: bool
) -> None:
    b = budget(clock)
    llm = FakeUsageLLM(reported=Reported(700, 30))  # nested events per call
    engine = index.as_query_engine(llm=llm, streaming=streaming)
    install(b)
    response = engine.query("What colour is the sky?")
    if streaming:
        assert "".join(response.response_gen) == llm.reply
    assert llm.counter.calls == 1
    [record] = b.records
    assert (record.input_tokens, record.output_tokens) == (700, 30)
    assert reserved(b) == 0


def test_async_query_engine_usage(clock: Any, index: VectorStoreIndex) -> None:
    b = budget(clock)
    llm = FakeChatLLM(reported=Reported(321, 12))
    engine = index.as_query_engine(llm=llm)
    install(b)
    asyncio.run(engine.aquery("What colour is the sky?"))
    [record] = b.records
    assert (record.input_tokens, record.output_tokens) == (321, 12)


# -- chat engines -----------------------------------------------------------------------


def _chat_engines(index: VectorStoreIndex, llm: Any) -> dict[str, Any]:
    return {
        "simple": SimpleChatEngine.from_defaults(llm=llm),
        "context": index.as_chat_engine(chat_mode="context", llm=llm),
    }


def _run_chat(engine: Any, how: str) -> str:
    if how == "chat":
        return str(engine.chat("Hello?"))
    if how == "stream_chat":
        return "".join(engine.stream_chat("Hello?").response_gen)

    async def run() -> str:
        if how == "achat":
            return str(await engine.achat("Hello?"))
        response = await engine.astream_chat("Hello?")
        return "".join([t async for t in response.async_response_gen()])

    return asyncio.run(run())


# Where a streaming chat engine's refusal surfaces: SimpleChatEngine starts the LLM stream
# inside stream_chat(); ContextChatEngine starts it in its history-writer thread or task,
# so the error is stored there and re-raised to whoever reads response_gen.
SURFACES = {
    ("simple", "chat"): "call",
    ("simple", "achat"): "call",
    ("simple", "stream_chat"): "call",
    ("simple", "astream_chat"): "call",
    ("context", "chat"): "call",
    ("context", "achat"): "call",
    ("context", "stream_chat"): "read",
    ("context", "astream_chat"): "read",
}


def _refusal_surface(engine: Any, how: str) -> str:
    where = ["call"]

    async def arun() -> None:
        if how == "achat":
            await engine.achat("Hello?")
            return
        response = await engine.astream_chat("Hello?")
        where[0] = "read"
        async for _token in response.async_response_gen():
            pass

    with pytest.raises(BudgetExceededError):
        if how == "chat":
            engine.chat("Hello?")
        elif how == "stream_chat":
            response = engine.stream_chat("Hello?")
            where[0] = "read"
            "".join(response.response_gen)
        else:
            asyncio.run(arun())
    return where[0]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(("engine_kind", "how"), list(SURFACES))
def test_chat_engine_refusal(
    clock: Any, index: VectorStoreIndex, engine_kind: str, how: str
) -> None:
    llm = FakeChatLLM()
    engine = _chat_engines(index, llm)[engine_kind]
    install(budget(clock, tokens=10))
    assert _refusal_surface(engine, how) == SURFACES[engine_kind, how]
    assert llm.counter.calls == 0


@pytest.mark.parametrize("engine_kind", ["simple", "context"])
@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat", "astream_chat"])
def test_chat_engine_usage_is_recorded_once(
    clock: Any, index: VectorStoreIndex, engine_kind: str, how: str
) -> None:
    b = budget(clock)
    llm = FakeChatLLM(reported=Reported(250, 9))
    engine = _chat_engines(index, llm)[engine_kind]
    install(b)
    assert _run_chat(engine, how) == llm.reply
    assert llm.counter.calls == 1
    [record] = b.records
    assert (record.input_tokens, record.output_tokens) == (250, 9)
    assert reserved(b) == 0


# -- agents -----------------------------------------------------------------------------


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic, inside ReActAgent()
def test_react_agent_calls_are_budgeted_and_refused_unchanged(clock: Any) -> None:
    from llama_index.core.agent.workflow import ReActAgent

    llm = FakeChatLLM(
        reply="Thought: I can answer without tools.\nAnswer: 42", reported=Reported(400, 15)
    )
    agent = ReActAgent(tools=[_add], llm=llm)
    b = budget(clock)
    install(b)

    async def run() -> str:
        return str(await agent.run(user_msg="What is 40 + 2?"))

    assert asyncio.run(run()) == "42"
    assert llm.counter.calls == 1 and len(b.records) == 1
    uninstall()
    install(budget(clock, tokens=10))
    with pytest.raises(BudgetExceededError):
        asyncio.run(run())
    assert llm.counter.calls == 1


# -- attachment pitfalls and what install() covers --------------------------------------


def test_settings_alone_misses_an_llm_created_before_it(clock: Any) -> None:
    b = budget(clock)
    early = FakeChatLLM()  # gets its own empty manager
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(b)])
    late = FakeChatLLM()  # CallbackManager([]) shares Settings' handler list
    early.complete("hi")
    assert b.records == []  # unbudgeted
    late.complete("hi")
    assert len(b.records) == 1


def test_an_empty_manager_shares_the_settings_handler_list(clock: Any) -> None:
    """Why LLMs made after Settings got a manager see handlers added to it later."""
    Settings.callback_manager = CallbackManager([BudgetCallbackHandler(budget(clock))])
    assert CallbackManager([]).handlers is Settings.callback_manager.handlers


def test_a_query_engine_replaces_the_llms_manager(clock: Any, index: VectorStoreIndex) -> None:
    b = budget(clock)
    handler = BudgetCallbackHandler(b)
    llm = FakeChatLLM(callback_manager=CallbackManager([handler]))
    engine = index.as_query_engine(llm=llm)
    assert llm.callback_manager is Settings.callback_manager
    assert handler not in llm.callback_manager.handlers
    engine.query("q")
    assert b.records == []  # the per-LLM handler was dropped


def test_an_engine_level_manager_never_reaches_the_llm(clock: Any, index: VectorStoreIndex) -> None:
    b = budget(clock)
    llm = FakeChatLLM()
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(), llm=llm, callback_manager=CallbackManager([BudgetCallbackHandler(b)])
    )
    engine.query("q")
    assert llm.counter.calls == 1 and b.records == []


def test_install_covers_pre_created_llms_and_engines(clock: Any, index: VectorStoreIndex) -> None:
    b = budget(clock)
    early = FakeChatLLM()
    engine_llm = FakeChatLLM()
    engine = index.as_query_engine(llm=engine_llm)
    chat = SimpleChatEngine.from_defaults(llm=FakeChatLLM())
    handler = install(b)
    early.complete("hi")
    asyncio.run(early.achat([ChatMessage(role="user", content="hi")]))
    engine.query("q")
    chat.chat("hello")
    Settings.llm.complete("hi")  # the MockLLM set before install
    assert len(b.records) == 5
    assert installed_handlers() == [handler]
    assert handler in early.callback_manager.handlers
    # Engines built after install replace managers again; install still covers them.
    late_engine = index.as_query_engine(llm=early)
    late_engine.query("q")
    assert len(b.records) == 6


def test_install_covers_a_replaced_manager_without_the_handler(
    clock: Any, index: VectorStoreIndex
) -> None:
    b = budget(clock)
    install(b)
    Settings.callback_manager = CallbackManager([RecordingHandler()])  # swapped after install
    llm = FakeChatLLM()
    engine = index.as_query_engine(llm=llm)
    engine.query("q")
    assert len(b.records) == 1


def test_install_is_idempotent_and_uninstall_removes_everything(clock: Any) -> None:
    b = budget(clock)
    root = get_dispatcher()
    spans, events = len(root.span_handlers), len(root.event_handlers)
    handler = install(b)
    assert install(handler) is handler
    assert len(root.span_handlers) == spans + 1 and len(root.event_handlers) == events + 1
    llm = FakeChatLLM()
    llm.complete("hi")
    assert Settings.callback_manager.handlers.count(handler) == 1
    assert llm.callback_manager.handlers.count(handler) == 1
    assert uninstall() == 1
    assert (len(root.span_handlers), len(root.event_handlers)) == (spans, events)
    assert handler not in llm.callback_manager.handlers
    assert handler not in Settings.callback_manager.handlers
    llm.complete("hi")
    assert len(b.records) == 1
    with pytest.raises(TypeError):
        install(handler, default_model="x")


# -- instrumentation cannot refuse ------------------------------------------------------


class _RaisingSpanHandler(BaseSpanHandler[BaseSpan]):
    def new_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        raise BudgetExceededError("span says no", "x", "session_tokens", 1, 0)

    def prepare_to_exit_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        raise BudgetExceededError("span says no", "x", "session_tokens", 1, 0)

    def prepare_to_drop_span(self, *args: Any, **kwargs: Any) -> BaseSpan | None:
        return None


class _RaisingEventHandler(BaseEventHandler):
    def handle(self, event: Any, **kwargs: Any) -> Any:
        raise BudgetExceededError("event says no", "x", "session_tokens", 1, 0)


def test_instrumentation_handlers_cannot_refuse_a_call() -> None:
    """Their exceptions are swallowed by the dispatcher: only the legacy handler refuses."""
    root = get_dispatcher()
    root.span_handlers = [*root.span_handlers, _RaisingSpanHandler()]
    root.event_handlers = [*root.event_handlers, _RaisingEventHandler()]
    llm = FakeChatLLM()
    assert llm.complete("hi").text == llm.reply
    asyncio.run(llm.achat([ChatMessage(role="user", content="hi")]))
    assert llm.counter.calls == 2


# -- multi-tenant -----------------------------------------------------------------------


def _manager(clock: Any, per_user: int, global_cap: int = 10_000_000) -> BudgetManager:
    manager = BudgetManager(clock=clock, rates=RateTable(on_unknown="fallback"))
    manager.register(BudgetScope("global", max_tokens_per_session=global_cap))
    manager.add_template(
        "user:", BudgetScope("user", max_tokens_per_session=per_user), parent="global"
    )
    return manager


def test_budget_scope_selects_the_tenant_and_session(clock: Any, index: VectorStoreIndex) -> None:
    manager = _manager(clock, per_user=10_000)
    llm = FakeChatLLM(reported=Reported(100, 10))
    engine = index.as_query_engine(llm=llm)
    install(manager)
    with budget_scope("user:1", session="conv-a", metadata={"request": "r1"}):
        engine.query("q")
    with budget_scope("user:2", session="conv-b"):
        engine.query("q")
        engine.query("q")
    one, two = manager.get("user:1"), manager.get("user:2")
    assert one is not None and two is not None
    assert one.summary()["session"]["tokens"] == 110
    assert two.summary()["session"]["tokens"] == 220
    assert manager.summary("global")["session"]["tokens"] == 330
    [record] = one.records
    assert record.session_id == "conv-a" and record.metadata["request"] == "r1"


def test_one_tenant_over_its_cap_does_not_stop_another(clock: Any) -> None:
    manager = _manager(clock, per_user=120)
    llm = FakeChatLLM(reported=Reported(100, 10), num_output=10)
    install(manager)
    msgs = [ChatMessage(role="user", content="hi")]
    with budget_scope("user:1"):
        llm.chat(msgs)
        with pytest.raises(BudgetExceededError) as info:
            llm.chat(msgs)
    assert info.value.scope == "user:1"
    with budget_scope("user:2"):
        llm.chat(msgs)
    assert llm.counter.calls == 2


def test_the_parent_scope_caps_all_tenants(clock: Any) -> None:
    manager = _manager(clock, per_user=10_000, global_cap=120)
    llm = FakeChatLLM(reported=Reported(100, 10), num_output=10)
    install(manager)
    msgs = [ChatMessage(role="user", content="hi")]
    with budget_scope("user:1"):
        llm.chat(msgs)
    with budget_scope("user:2"), pytest.raises(BudgetExceededError) as info:
        llm.chat(msgs)
    assert info.value.scope == "global"


def test_scopes_follow_asyncio_tasks(clock: Any) -> None:
    manager = _manager(clock, per_user=10_000)
    llm = FakeChatLLM(reported=Reported(50, 5))
    install(manager)

    async def one(user: int) -> None:
        with budget_scope(f"user:{user}", session=f"s{user}"):
            await llm.achat([ChatMessage(role="user", content="hi")])

    async def run() -> None:
        await asyncio.gather(*(one(u) for u in range(6)))

    asyncio.run(run())
    for user in range(6):
        budget_u = manager.get(f"user:{user}")
        assert budget_u is not None
        [record] = budget_u.records
        assert record.session_id == f"s{user}"


def test_the_scope_reaches_the_chat_engines_history_thread(
    clock: Any, index: VectorStoreIndex
) -> None:
    """ContextChatEngine.stream_chat runs the LLM stream in a thread LlamaIndex starts."""
    manager = _manager(clock, per_user=10_000)
    llm = FakeChatLLM(reported=Reported(60, 6))
    engine = index.as_chat_engine(chat_mode="context", llm=llm)
    install(manager)
    with budget_scope("user:7", session="thread-s"):
        response = engine.stream_chat("hello")
        assert "".join(response.response_gen) == llm.reply
    user = manager.get("user:7")
    assert user is not None
    [record] = user.records
    assert record.session_id == "thread-s"


def test_a_stream_must_be_read_inside_its_scope(clock: Any, index: VectorStoreIndex) -> None:
    manager = _manager(clock, per_user=10_000)
    llm = FakeChatLLM()
    engine = index.as_query_engine(llm=llm, streaming=True)
    install(manager)
    with budget_scope("user:1"):
        response = engine.query("q")
    with pytest.raises(BudgetError, match="no budget scope"):
        "".join(response.response_gen)
    with budget_scope("user:1"):
        response = engine.query("q")
        assert "".join(response.response_gen) == llm.reply
    assert llm.counter.calls == 1


def test_budget_scope_nests_and_inherits(clock: Any) -> None:
    assert current_scope() is None
    with budget_scope("user:1", session="a", parent="global", metadata={"x": 1}) as outer:
        assert current_scope() is outer
        with budget_scope(session="b", metadata={"y": 2}) as inner:
            assert (inner.scope, inner.session, inner.parent) == ("user:1", "b", "global")
            assert inner.metadata == {"x": 1, "y": 2}
        with budget_scope("user:2") as other:
            assert (other.scope, other.session, other.parent) == ("user:2", "a", None)
    assert current_scope() is None
    with pytest.raises(TypeError):
        with budget_scope(""):
            pass


def test_a_single_budget_uses_only_the_session(clock: Any) -> None:
    b = budget(clock)
    llm = MockLLM()
    install(b)
    with budget_scope("ignored", session="s-9"):
        llm.complete("hi")
    assert b.records[0].session_id == "s-9"
