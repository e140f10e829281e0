"""Admission beyond yes/no: clamping the output cap, waiting for holds, what remains, and a
refusal message that says what the call asked for and what would help."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetScope,
    ModelRates,
    Usage,
)
from agent_budget.admission import largest_fitting_output
from agent_budget.stores import Level, Line
from agent_budget.windows import calendar

from .clock import FakeClock
from .store_fixtures import StoreFactory

RATES = {"m": ModelRates.per_million(input=1, output=4)}  # 1,000 and 4,000 nano-USD a token


def make(clock: FakeClock, store: Any = None, **limits: Any) -> Budget:
    return Budget(BudgetScope(name="a", **limits), RATES, clock=clock, store=store)


# -- clamping -----------------------------------------------------------------------------


def test_clamp_gives_the_largest_output_cap_that_fits(clock: FakeClock) -> None:
    b = make(clock, max_tokens_per_session=1000)
    b.record("", "m", 200, 0)
    hold = b.reserve("m", 100, 4096, clamp=True)
    assert hold.max_output_tokens == 700 and hold.tokens == 800
    assert b.summary()["session"]["reserved_tokens"] == 800
    # Nothing left: refused below the floor, naming the limit.
    with pytest.raises(BudgetExceededError) as err:
        b.reserve("m", 100, 4096, clamp=True, min_output_tokens=1)
    assert err.value.limit_type == "session_tokens"


def test_clamp_changes_nothing_when_the_call_fits(clock: FakeClock) -> None:
    b = make(clock, max_tokens_per_session=10_000)
    assert b.reserve("m", 100, 512, clamp=True).max_output_tokens == 512


def test_clamp_fits_cost_limits_and_every_ancestor(clock: FakeClock) -> None:
    root = make(clock, max_cost_per_session_usd="0.002")  # 2,000,000 nano-USD
    child = Budget(BudgetScope(name="c", max_tokens_per_session=10_000), RATES, parent=root)
    hold = child.reserve("m", 400, 4096, clamp=True)
    # 400 input at 1,000 + k output at 4,000 <= 2,000,000  ->  k = 400
    assert hold.max_output_tokens == 400
    assert hold.cost_nanos == 2_000_000
    with pytest.raises(BudgetExceededError) as err:
        child.reserve("m", 10, 100, clamp=True, min_output_tokens=10)
    assert err.value.scope == "a" and err.value.limit_type == "session_cost_usd"


def test_clamp_floor_is_respected(clock: FakeClock) -> None:
    b = make(clock, max_tokens_per_session=1000)
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 900, 4096, clamp=True, min_output_tokens=101)
    assert b.reserve("m", 900, 4096, clamp=True, min_output_tokens=100).max_output_tokens == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clamp": "yes"}, "clamp"),
        ({"clamp": True, "min_output_tokens": -1}, "min_output_tokens"),
        ({"clamp": True, "min_output_tokens": 5000}, "min_output_tokens"),
        ({"wait": -1}, "wait"),
        ({"wait": float("nan")}, "wait"),
        ({"wait": 10**9}, "wait"),
    ],
)
def test_bad_admission_options_are_refused_before_anything_changes(
    clock: FakeClock, kwargs: dict[str, Any], message: str
) -> None:
    b = make(clock, max_tokens_per_session=1000)
    with pytest.raises((TypeError, ValueError), match=message):
        b.reserve("m", 10, 100, **kwargs)
    assert b.usage() == {}


def test_largest_fitting_output_searches_both_units() -> None:
    lines = [Line("a", "session:tokens", 0, 1000), Line("a", "session:cost", 0, 3000)]
    levels = [Level(100, 0), Level(0, 500)]

    def worst(inp: int, out: int) -> int:
        return inp + 4 * out

    # tokens: 100 + k <= 900 -> 800; cost: 100 + 4k <= 2500 -> 600
    assert largest_fitting_output(100, 4096, 1, worst, lines, levels) == 600
    assert largest_fitting_output(100, 300, 1, worst, lines, levels) == 300
    assert largest_fitting_output(100, 4096, 601, worst, lines, levels) is None


def test_clamp_never_over_admits_under_threads(store_factory: StoreFactory) -> None:
    b = Budget(BudgetScope(name="a", max_tokens_per_session=5_000), RATES, store=store_factory())
    holds: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            try:
                hold = b.reserve("m", 50, 400, clamp=True, min_output_tokens=10)
            except BudgetExceededError:
                continue
            with lock:
                holds.append(hold.tokens)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(holds) <= 5_000
    assert sum(holds) >= 5_000 - 60  # clamping filled the cap down to the floor
    assert b.usage()["session:tokens"].reserved == sum(holds)


# -- waiting ------------------------------------------------------------------------------


def test_a_waiting_reserve_is_admitted_when_another_call_commits() -> None:
    b = Budget(BudgetScope(name="a", max_tokens_per_session=1000), RATES)
    first = b.reserve("m", 100, 800)
    timer = threading.Timer(0.2, lambda: first.commit(Usage(100, 50)))
    timer.start()
    started = time.monotonic()
    second = b.reserve("m", 100, 700, wait=5)
    waited = time.monotonic() - started
    timer.join()
    assert 0.1 < waited < 4
    assert second.held
    assert b.usage()["session:tokens"] == Level(150, 800)


def test_a_waiting_reserve_times_out_with_the_refusal() -> None:
    b = Budget(BudgetScope(name="a", max_tokens_per_session=1000), RATES)
    b.reserve("m", 100, 800)
    started = time.monotonic()
    with pytest.raises(BudgetExceededError, match="calls in flight"):
        b.reserve("m", 100, 700, wait=0.3)
    assert 0.25 < time.monotonic() - started < 3


def test_a_call_that_cannot_fit_without_holds_is_refused_at_once() -> None:
    b = Budget(BudgetScope(name="a", max_tokens_per_session=1000), RATES)
    b.record("", "m", 500, 0)
    b.reserve("m", 100, 100)
    started = time.monotonic()
    with pytest.raises(BudgetExceededError, match="max_tokens <= 200"):
        b.reserve("m", 100, 500, wait=30)
    assert time.monotonic() - started < 1


def test_waiters_are_served_first_come_first_served() -> None:
    b = Budget(BudgetScope(name="a", max_tokens_per_session=1000), RATES)
    blocker = b.reserve("m", 0, 1000)
    order: list[int] = []
    lock = threading.Lock()

    def waiter(n: int) -> None:
        hold = b.reserve("m", 0, 1000, wait=10)
        with lock:
            order.append(n)
        time.sleep(0.05)
        hold.release()

    threads = []
    for n in range(4):
        t = threading.Thread(target=waiter, args=(n,))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # enter the queue in order
    blocker.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3]


def test_async_wait_does_not_block_the_loop() -> None:
    b = Budget(BudgetScope(name="a", max_tokens_per_session=1000), RATES)
    ticks = 0

    async def heartbeat(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> Any:
        first = await b.areserve("m", 100, 800)
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))

        async def finish() -> None:
            await asyncio.sleep(0.3)
            await b.acommit(first, Usage(100, 10))

        done = asyncio.create_task(finish())
        second = await b.areserve("m", 100, 700, wait=5)
        await done
        stop.set()
        await beat
        return second

    second = asyncio.run(main())
    assert second.held
    assert ticks >= 10


def _commit_later(path: str, hold_id: str, delay: float) -> None:
    from agent_budget.stores.sqlite import SQLiteStore

    time.sleep(delay)
    store = SQLiteStore(path)
    store.release(hold_id, now=time.time(), group="a")
    store.close()


def test_a_waiting_reserve_sees_another_process_release(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    b = Budget(BudgetScope(name="a", max_tokens_per_session=1000), RATES, store=url)
    first = b.reserve("m", 100, 800)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_commit_later, args=(str(tmp_path / "b.db"), first.id, 0.5))
    proc.start()
    try:
        second = b.reserve("m", 100, 700, wait=20)
    finally:
        proc.join(30)
    assert second.held
    assert b.usage()["session:tokens"].reserved == 800


# -- what remains ---------------------------------------------------------------------------


def test_remaining_is_net_of_holds_in_tokens_and_exact_dollars(clock: FakeClock) -> None:
    root = make(clock, max_cost_per_day_usd="0.01")
    child = Budget(
        BudgetScope(name="c", max_tokens_per_session=1000, max_tokens_per_model={"m": 700}),
        RATES,
        parent=root,
        clock=clock,
    )
    child.record("", "m", 100, 50)  # 150 tokens, 300,000 nano-USD
    child.reserve("m", 10, 90)
    left = child.remaining()
    session = left.get("session_tokens")
    assert session is not None
    assert (session.used, session.reserved, session.remaining) == (150, 100, 750)
    model = left.get("model_m_tokens")
    assert model is not None and model.remaining == 450
    assert left.tokens == 450
    day = left.get("day_cost_usd", scope="a")
    assert day is not None and day.unit == "usd"
    assert day.used == Decimal("0.0003")
    assert day.reserved == Decimal("0.00037")
    assert day.remaining == Decimal("0.01") - Decimal("0.0003") - Decimal("0.00037")
    assert left.usd == day.remaining
    assert left.tightest is model
    assert child.remaining(model="other").get("model_m_tokens") is None


def test_remaining_never_goes_negative(clock: FakeClock) -> None:
    b = make(clock, max_tokens_per_session=100)
    with pytest.raises(BudgetExceededError):
        b.record("", "m", 150, 0)
    entry = b.remaining().get("session_tokens")
    assert entry is not None and entry.remaining == 0 and entry.used == 150


# -- the refusal says what the call asked for ----------------------------------------------


def test_refusal_names_the_hold_parts_and_the_fix(clock: FakeClock) -> None:
    b = make(clock, max_tokens_per_session=1000)
    with pytest.raises(BudgetExceededError) as err:
        b.reserve("m", 120, 4096, output_from="the adapter's default of 4096")
    text = str(err.value)
    assert "120 input tokens (estimated)" in text
    assert "4096 output tokens (the adapter's default of 4096)" in text
    assert "max_tokens <= 880" in text
    with pytest.raises(BudgetExceededError, match="used up"):
        b.reserve("m", 1000, 10)
    assert err.value.requested == 4216


def test_refusal_gives_the_fix_that_applies(clock: FakeClock) -> None:
    """Clamping already on: the floor is the cause. A wait that ran out: not "wait". A
    used-up session, day window or calendar month: how each gets room again."""
    b = make(clock, max_tokens_per_session=100)
    with pytest.raises(BudgetExceededError) as err:
        b.reserve("m", 50, 200, clamp=True, min_output_tokens=64)
    assert "floor of 64 output tokens (at most 50 fit now)" in str(err.value)
    assert "clamp=True" not in str(err.value)
    held = b.reserve("m", 50, 40)
    with pytest.raises(BudgetExceededError) as err:
        b.reserve("m", 50, 10, wait=0.05)
    assert "in the 0.05 s it waited" in str(err.value)
    assert "wait=seconds" not in str(err.value)
    held.commit(Usage(60, 40))
    with pytest.raises(BudgetExceededError, match=r"start a new session \(reset_session"):
        b.reserve("m", 1, 1)
    day = make(clock, max_tokens_per_day=10)
    with pytest.raises(BudgetExceededError, match="until usage leaves its window"):
        day.reserve("m", 20, 0)
    month = Budget(
        BudgetScope(name="mo", windows=[calendar("month", max_tokens=10)]), RATES, clock=clock
    )
    with pytest.raises(BudgetExceededError, match="until its month ends"):
        month.reserve("m", 20, 0)


def test_an_abatch_that_waits_for_holds_spends_up_to_the_cap() -> None:
    """Issue 13's abatch: 40 calls against a 3,000-token cap, each holding ~110 tokens but
    using ~60. Without waiting, calls are refused while worst-case holds are outstanding;
    with the handler's wait=, they wait for holds to end and the cap is spent, not refused
    at a third of it."""
    from agent_budget_callbacks.langchain import BudgetCallbackHandler

    from .fake_chat_models import Bill, FakeChatOpenAI

    def run(wait: float) -> tuple[int, int]:
        budget = Budget(BudgetScope(name="b", max_tokens_per_session=3_000), RATES)
        handler = BudgetCallbackHandler(budget, wait=wait)
        model = FakeChatOpenAI(bill=Bill(50, 10), max_tokens=100, model="m")
        results = asyncio.run(
            model.abatch(["hi"] * 40, config={"callbacks": [handler]}, return_exceptions=True)
        )
        refused = sum(isinstance(r, BudgetExceededError) for r in results)
        return refused, budget.usage()["session:tokens"].committed

    refused_at_once, spent_at_once = run(0.0)
    refused_waiting, spent_waiting = run(5.0)
    assert refused_waiting < refused_at_once
    assert spent_waiting > spent_at_once
    assert spent_waiting <= 3_000 and refused_waiting == 40 - spent_waiting // 60
