"""One handler over a BudgetManager serves many tenants: the scope, its parent and the
session label come from each run's metadata (LangGraph's thread_id included)."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from agent_budget import BudgetError, BudgetExceededError, BudgetManager, BudgetScope
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .fake_chat_models import Bill, FakeChatOpenAI


def _manager(clock: Any, *, user_tokens: int = 100_000, global_tokens: int = 100_000) -> Any:
    mgr = BudgetManager(clock=clock)
    mgr.register(BudgetScope(name="global", max_tokens_per_session=global_tokens))
    mgr.add_template(
        "user-", BudgetScope(name="user-", max_tokens_per_session=user_tokens), parent="global"
    )
    mgr.add_template("team-", BudgetScope(name="team-", max_tokens_per_session=user_tokens))
    return mgr


def _meta(**metadata: Any) -> RunnableConfig:
    return {"metadata": metadata}


def _tokens(mgr: Any, scope: str) -> int:
    return int(mgr.summary(scope)["session"]["tokens"])


def test_scope_per_call_from_metadata(clock: Any) -> None:
    mgr = _manager(clock, user_tokens=1000)
    handler = BudgetCallbackHandler(mgr, default_max_tokens=100)
    model = FakeChatOpenAI(bill=Bill(300, 100), callbacks=[handler])
    model.invoke("hi", config=_meta(budget_scope="user-1"))
    model.invoke("hi", config=_meta(budget_scope="user-1"))
    model.invoke("hi", config=_meta(budget_scope="user-2"))
    assert (_tokens(mgr, "user-1"), _tokens(mgr, "user-2"), _tokens(mgr, "global")) == (
        800,
        400,
        1200,
    )
    # user-1 has 200 left: a call reserving ~100 + prompt fits, then the next cannot
    model.invoke("hi", config=_meta(budget_scope="user-1"))
    with pytest.raises(BudgetExceededError) as info:
        model.invoke("hi", config=_meta(budget_scope="user-1"))
    assert info.value.scope == "user-1"
    model.invoke("hi", config=_meta(budget_scope="user-2"))  # other tenants unaffected
    assert model.calls.value == 5


def test_parent_scope_caps_every_tenant(clock: Any) -> None:
    mgr = _manager(clock, global_tokens=900)
    handler = BudgetCallbackHandler(mgr, default_max_tokens=100)
    model = FakeChatOpenAI(bill=Bill(300, 100))
    config = {"callbacks": [handler]}
    model.invoke("hi", config={**config, "metadata": {"budget_scope": "user-1"}})
    model.invoke("hi", config={**config, "metadata": {"budget_scope": "user-2"}})
    for user in ("user-1", "user-3"):
        with pytest.raises(BudgetExceededError) as info:
            model.invoke("hi", config={**config, "metadata": {"budget_scope": user}})
        assert info.value.scope == "global"
    assert model.calls.value == 2


def test_parent_from_metadata_for_a_template_without_one(clock: Any) -> None:
    mgr = _manager(clock)
    handler = BudgetCallbackHandler(mgr)
    FakeChatOpenAI(bill=Bill(10, 5)).invoke(
        "hi",
        config={
            "callbacks": [handler],
            "metadata": {"budget_scope": "team-a", "budget_parent": "global"},
        },
    )
    assert _tokens(mgr, "team-a") == 15 and _tokens(mgr, "global") == 15


def test_default_scope_and_custom_keys(clock: Any) -> None:
    mgr = _manager(clock)
    handler = BudgetCallbackHandler(
        mgr, scope="user-default", scope_key="tenant", session_key="conversation"
    )
    model = FakeChatOpenAI(bill=Bill(10, 5), callbacks=[handler])
    model.invoke("hi")
    model.invoke("hi", config=_meta(tenant="user-9", conversation="c-1"))
    assert _tokens(mgr, "user-default") == 15
    assert _tokens(mgr, "user-9") == 15
    assert mgr.get("user-9").records[0].session_id == "c-1"


def test_unknown_scope_is_refused_before_the_provider(clock: Any) -> None:
    mgr = _manager(clock)
    model = FakeChatOpenAI(callbacks=[BudgetCallbackHandler(mgr)])
    with pytest.raises(BudgetError, match="no budget scope named 'nobody'"):
        model.invoke("hi", config=_meta(budget_scope="nobody"))
    with pytest.raises(BudgetError, match="no budget scope for this call"):
        model.invoke("hi")
    with pytest.raises(BudgetError, match="no budget scope named"):
        asyncio.run(model.ainvoke("hi", config=_meta(budget_scope="nobody")))
    assert model.calls.value == 0


def test_session_label_from_metadata_or_default(clock: Any) -> None:
    mgr = _manager(clock)
    model = FakeChatOpenAI(bill=Bill(10, 5))
    labelled = BudgetCallbackHandler(mgr, session_id="fallback")
    model.invoke(
        "hi",
        config={
            "callbacks": [labelled],
            "metadata": {"budget_scope": "user-1", "budget_session": "s-7"},
        },
    )
    model.invoke("hi", config={"callbacks": [labelled], "metadata": {"budget_scope": "user-1"}})
    budget = mgr.get("user-1")
    assert [r.session_id for r in budget.records] == ["s-7", "fallback"]
    sessions = budget.summary(by_session=True)["sessions"]
    assert sessions["s-7"]["tokens"] == sessions["fallback"]["tokens"] == 15


class _State(TypedDict):
    q: str
    a: str


def _graph(model: Any) -> Any:
    def node(state: _State) -> dict[str, str]:
        return {"a": str(model.invoke(state["q"]).content)}

    graph = StateGraph(_State)
    graph.add_node("n", node)
    graph.add_edge(START, "n")
    graph.add_edge("n", END)
    return graph.compile(checkpointer=InMemorySaver())


def test_langgraph_thread_id_labels_the_session(clock: Any) -> None:
    mgr = _manager(clock)
    handler = BudgetCallbackHandler(mgr)
    app = _graph(FakeChatOpenAI(bill=Bill(10, 5)))
    for thread, user in (("t-1", "user-1"), ("t-2", "user-1"), ("t-1", "user-2")):
        app.invoke(
            {"q": "hi", "a": ""},
            config={
                "callbacks": [handler],
                "metadata": {"budget_scope": user},
                "configurable": {"thread_id": thread},
            },
        )
    assert [r.session_id for r in mgr.get("user-1").records] == ["t-1", "t-2"]
    assert [r.session_id for r in mgr.get("user-2").records] == ["t-1"]
    # an explicit budget_session wins over the thread id
    app.invoke(
        {"q": "hi", "a": ""},
        config={
            "callbacks": [handler],
            "metadata": {"budget_scope": "user-2", "budget_session": "x"},
            "configurable": {"thread_id": "t-9"},
        },
    )
    assert mgr.get("user-2").records[-1].session_id == "x"


def test_thread_id_can_be_ignored(clock: Any) -> None:
    mgr = _manager(clock)
    app = _graph(FakeChatOpenAI(bill=Bill(10, 5)))
    app.invoke(
        {"q": "hi", "a": ""},
        config={
            "callbacks": [BudgetCallbackHandler(mgr, use_thread_id=False)],
            "metadata": {"budget_scope": "user-1"},
            "configurable": {"thread_id": "t-1"},
        },
    )
    assert mgr.get("user-1").records[0].session_id == ""


def test_pin_where_thread_id_reaches_callback_metadata() -> None:
    """Pinned: LangGraph copies configurable["thread_id"] into the metadata every model run
    inside the graph reports; plain langchain-core does not, so outside LangGraph pass
    budget_session in the metadata instead."""
    from langchain_core.callbacks import BaseCallbackHandler

    class Meta(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        def on_chat_model_start(self, *a: Any, metadata: Any = None, **k: Any) -> None:
            self.seen.append(dict(metadata or {}))

    meta = Meta()
    model = FakeChatOpenAI()
    _graph(model).invoke(
        {"q": "hi", "a": ""}, config={"callbacks": [meta], "configurable": {"thread_id": "t-42"}}
    )
    model.invoke("hi", config={"callbacks": [meta], "configurable": {"thread_id": "t-43"}})
    assert meta.seen[0]["thread_id"] == "t-42"
    assert "thread_id" not in meta.seen[1]


def test_scope_metadata_set_on_a_graph_reaches_models_in_its_nodes(clock: Any) -> None:
    mgr = _manager(clock, user_tokens=1)
    model = FakeChatOpenAI()
    with pytest.raises(BudgetExceededError) as info:
        _graph(model).invoke(
            {"q": "hi", "a": ""},
            config={
                "callbacks": [BudgetCallbackHandler(mgr)],
                "metadata": {"budget_scope": "user-5"},
                "configurable": {"thread_id": "t"},
            },
        )
    assert info.value.scope == "user-5" and model.calls.value == 0


def test_handler_rejects_bad_arguments(clock: Any) -> None:
    with pytest.raises(TypeError):
        BudgetCallbackHandler("not a budget")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BudgetCallbackHandler(_manager(clock), default_max_tokens=-1)
    with pytest.raises(TypeError):
        BudgetCallbackHandler(_manager(clock), scope=5)  # type: ignore[arg-type]
