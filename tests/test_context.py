"""budget_scope and select_budget: one scope-selection rule shared by every adapter."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_budget import (
    Budget,
    BudgetManager,
    BudgetScope,
    UnknownScopeError,
    budget_scope,
    current_scope,
    select_budget,
)
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .fake_chat_models import Bill, FakeChatOpenAI


def _manager(clock: Any) -> BudgetManager:
    mgr = BudgetManager(clock=clock)
    mgr.register(BudgetScope(name="global"))
    mgr.add_template("user:", BudgetScope(name="user"), parent="global")
    mgr.add_template("conv:", BudgetScope(name="conv"))
    return mgr


def test_precedence_argument_then_block_then_default(clock: Any) -> None:
    mgr = _manager(clock)
    assert select_budget(mgr, default_scope="user:d").name == "user:d"
    with budget_scope("user:block"):
        assert select_budget(mgr, default_scope="user:d").name == "user:block"
        assert select_budget(mgr, scope="user:arg").name == "user:arg"
    plain = Budget(BudgetScope(name="solo"))
    with budget_scope("user:ignored"):
        assert select_budget(plain) is plain


def test_parent_from_block_and_nesting(clock: Any) -> None:
    mgr = _manager(clock)
    with budget_scope("conv:1", parent="user:7", session="s-1") as outer:
        assert select_budget(mgr).parent.name == "user:7"
        with budget_scope(session="s-2") as inner:
            assert (inner.scope, inner.session, inner.parent) == ("conv:1", "s-2", "user:7")
        assert current_scope() is outer
    assert current_scope() is None


def test_unknown_or_missing_scope_is_a_clear_refusal(clock: Any) -> None:
    mgr = _manager(clock)
    with pytest.raises(UnknownScopeError, match="no budget scope for this call"):
        select_budget(mgr)
    with pytest.raises(UnknownScopeError, match="nobody"), budget_scope("nobody"):
        select_budget(mgr)
    assert issubclass(UnknownScopeError, KeyError)


def test_bad_block_arguments() -> None:
    with pytest.raises(TypeError, match="scope"), budget_scope(""):
        pass
    with pytest.raises(TypeError, match="session"), budget_scope("x", session=3):  # type: ignore[arg-type]
        pass


def test_block_follows_asyncio_tasks(clock: Any) -> None:
    mgr = _manager(clock)

    async def which() -> str:
        return select_budget(mgr).name

    async def main() -> list[str]:
        with budget_scope("user:a"):
            first = asyncio.create_task(which())
        with budget_scope("user:b"):
            second = asyncio.create_task(which())
        return [await first, await second]

    assert asyncio.run(main()) == ["user:a", "user:b"]


def test_langchain_handler_honours_the_block(clock: Any) -> None:
    mgr = _manager(clock)
    handler = BudgetCallbackHandler(mgr, default_max_tokens=50)
    model = FakeChatOpenAI(bill=Bill(30, 10))
    with budget_scope("user:42", session="conv-9"):
        model.invoke("hi", config={"callbacks": [handler]})
    # per-call metadata still wins over the block
    with budget_scope("user:42"):
        model.invoke("hi", config={"callbacks": [handler], "metadata": {"budget_scope": "user:7"}})
    assert mgr.summary("user:42")["session"]["tokens"] == 40
    assert mgr.summary("user:7")["session"]["tokens"] == 40
    assert mgr.summary("global")["session"]["tokens"] == 80
    assert mgr.get("user:42").records[0].session_id == "conv-9"
