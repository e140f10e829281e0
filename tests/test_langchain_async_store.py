"""LangChain async paths never wait on a disk or network store on the event loop: the
handler is still inline (so LangChain never skips its start, langchain#39633), but its hooks
hand LangChain's async dispatcher async bodies that run store work off the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from agent_budget import Budget, BudgetExceededError, BudgetScope
from agent_budget.stores.sqlite import SQLiteStore
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .fake_chat_models import Bill, FakeChatOpenAI, FakeOpenAILLM


class SlowStore(SQLiteStore):
    """A real SQLite store whose operations take 0.3 s and note the thread they ran on."""

    schemes = ()

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.threads: list[int] = []

    def _slow(self) -> None:
        self.threads.append(threading.get_ident())
        time.sleep(0.3)

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        self._slow()
        return super().reserve(*args, **kwargs)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        self._slow()
        return super().commit(*args, **kwargs)


class InlineTracer(BaseCallbackHandler):
    """Inline, as LangSmith's LangChainTracer is."""

    run_inline = True

    def __init__(self) -> None:
        self.starts = 0

    def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        self.starts += 1


def test_ainvoke_runs_store_work_off_the_loop_and_the_loop_keeps_ticking(
    tmp_path: Path,
) -> None:
    store = SlowStore(str(tmp_path / "b.db"))
    budget = Budget(BudgetScope(name="s", max_tokens_per_session=100_000), store=store)
    handler = BudgetCallbackHandler(budget)
    model = FakeChatOpenAI(bill=Bill(100, 20), max_tokens=50)
    ticks = 0

    async def heartbeat(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> int:
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        await model.ainvoke("hi", config={"callbacks": [handler]})
        stop.set()
        await beat
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(store.threads) == 2 and loop_thread not in store.threads
    assert ticks >= 30  # about 0.6 s of store work, none of it on the loop
    assert budget.usage()["session:tokens"].committed == 120
    assert handler.run_inline is True


def test_a_refusal_on_the_async_path_is_raised_unchanged(tmp_path: Path) -> None:
    store = SlowStore(str(tmp_path / "b.db"))
    budget = Budget(BudgetScope(name="s", max_tokens_per_session=10), store=store)
    model = FakeChatOpenAI(max_tokens=50)
    with pytest.raises(BudgetExceededError):
        asyncio.run(model.ainvoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]}))
    assert model.calls.value == 0


def test_a_legacy_llm_beside_an_inline_tracer_is_still_budgeted_on_an_io_store(
    tmp_path: Path,
) -> None:
    """The #39633 case: with another inline handler, a non-inline one would never see the
    start of an async completion-model call. Ours stays inline on every store."""
    store = SQLiteStore(str(tmp_path / "b.db"))
    budget = Budget(BudgetScope(name="s", max_tokens_per_session=1), store=store)
    llm = FakeOpenAILLM()
    tracer = InlineTracer()
    with pytest.raises(BudgetExceededError):
        asyncio.run(llm.ainvoke("x", config={"callbacks": [tracer, BudgetCallbackHandler(budget)]}))
    assert llm.calls.value == 0 and tracer.starts == 1


def test_sync_paths_run_the_sync_bodies(tmp_path: Path) -> None:
    store = SlowStore(str(tmp_path / "b.db"))
    budget = Budget(BudgetScope(name="s", max_tokens_per_session=100_000), store=store)
    FakeChatOpenAI(bill=Bill(10, 5)).invoke(
        "hi", config={"callbacks": [BudgetCallbackHandler(budget)]}
    )
    assert store.threads == [threading.get_ident()] * 2
