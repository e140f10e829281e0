"""The adapter conformance suite: the same promises, checked on every framework adapter.

Parametrized over LangChain, LlamaIndex, the OpenAI Agents SDK and pydantic-ai through the
drivers in tests/adapter_drivers.py (real framework objects, fake models that bill
:data:`BILL` per call and count the calls that reached them):

- a refused call never reaches the provider, in every mode, and charges nothing;
- what is recorded equals the provider's ledger, tokens and cost, in every mode;
- a stream is recorded exactly as the same call made without streaming;
- a call cancelled or timed out at the provider leaves no hold once the hold TTL passes;
- a stream its consumer abandons is charged what the provider produced;
- N concurrent calls against a cap that fits k admit k and refuse the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from agent_budget import Budget, BudgetExceededError, BudgetScope

from .adapter_drivers import BILL, DRIVERS, Driver, bill_usage, driver_for
from .provider_checks import assert_nothing_charged, record_shape, recorded_usage
from .provider_servers import builtin_price_nanos, held

pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince20"),
    pytest.mark.filterwarnings("ignore::pydantic.PydanticDeprecatedSince211"),
]

FRAMEWORKS = sorted(DRIVERS)
MODES = [(f, m) for f in FRAMEWORKS for m in DRIVERS[f].modes]
HOLD_TTL = 30.0


def _budget(clock: Any, tokens: int = 1_000_000) -> Budget:
    return Budget(
        BudgetScope("conformance", max_tokens_per_session=tokens), clock=clock, hold_ttl=HOLD_TTL
    )


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def budget(clock: Any) -> Budget:
    return _budget(clock)


@pytest.fixture
def driver(framework: str, budget: Budget) -> Iterator[Driver]:
    with driver_for(framework, budget) as d:
        yield d


@pytest.mark.parametrize(("framework", "mode"), MODES)
def test_a_refused_call_never_reaches_the_provider(framework: str, mode: str, clock: Any) -> None:
    budget = _budget(clock, tokens=50)  # every call's hold is larger
    with driver_for(framework, budget) as driver:
        with pytest.raises(BudgetExceededError):
            driver.call(mode)
        assert driver.provider_calls == 0
    assert_nothing_charged(budget)


@pytest.mark.parametrize(("framework", "mode"), MODES)
def test_records_equal_the_providers_ledger(framework: str, mode: str, clock: Any) -> None:
    budget = _budget(clock)
    with driver_for(framework, budget) as driver:
        driver.call(mode)
        driver.call(mode)
        assert driver.provider_calls == 2
    records = budget.records
    assert len(records) == 2
    for record in records:
        assert not record.estimated
        assert recorded_usage(record) == bill_usage()
        assert record.cost_nanos == builtin_price_nanos(record.model, bill_usage())
    levels = budget.usage()
    assert levels["session:tokens"].committed == 2 * BILL.total
    assert levels["session:cost"].committed == sum(r.cost_nanos for r in records)
    assert held(budget) == 0


def test_a_stream_is_recorded_as_the_same_call_without_streaming(
    driver: Driver, budget: Budget
) -> None:
    for mode in driver.modes:
        driver.call(mode)
    shapes = {mode: record_shape(r) for mode, r in zip(driver.modes, budget.records, strict=True)}
    assert len(set(shapes.values())) == 1, shapes
    assert held(budget) == 0


def test_a_cancelled_call_leaves_no_hold_past_its_ttl(
    driver: Driver, budget: Budget, clock: Any
) -> None:
    async def timed_out() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.hanging_call(), 0.2)

    asyncio.run(timed_out())
    assert driver.provider_calls == 1  # it did reach the provider, which may bill it
    clock.advance(HOLD_TTL + 1)
    assert held(budget) == 0
    assert not [r for r in budget.records if not r.metadata.get("partial")]


def test_an_abandoned_stream_is_charged_what_it_produced(driver: Driver, budget: Budget) -> None:
    text = driver.abandon_stream(3)
    assert text
    assert driver.provider_calls == 1
    (record,) = budget.records
    assert record.metadata.get("partial") is True
    assert record.output_tokens == driver.counter.count_text(text)
    assert record.input_tokens > 0
    assert record.estimated
    assert held(budget) == 0


@pytest.mark.parametrize("admitted", [1, 3])
def test_concurrent_calls_admit_at_most_what_fits(
    framework: str, clock: Any, admitted: int
) -> None:
    n = 8
    probe = _budget(clock)
    with driver_for(framework, probe) as driver:
        hold = asyncio.run(_hold_of_one_call(driver, probe))
    # Room for `admitted` holds and half of one more; nothing committed yet.
    budget = _budget(clock, tokens=admitted * hold + hold // 2)
    with driver_for(framework, budget) as driver:
        outcomes = asyncio.run(_concurrently(driver, n))
        assert driver.provider_calls == admitted
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert len(refused) == n - admitted
    assert [o for o in outcomes if o is not None and o not in refused] == []
    assert len(budget.records) == admitted
    assert held(budget) == 0


async def _hold_of_one_call(driver: Driver, budget: Budget) -> int:
    """What one call holds while it waits at the provider."""
    gate = asyncio.Event()
    task = asyncio.create_task(driver.gated_call(gate))
    while driver.provider_calls == 0:
        await asyncio.sleep(0.001)
    hold = budget.usage()["session:tokens"].reserved
    gate.set()
    await task
    return hold


async def _concurrently(driver: Driver, n: int) -> list[BaseException | None]:
    """Start ``n`` calls at once; hold the admitted ones at the provider until every call was
    admitted or refused, then let them finish."""
    gate = asyncio.Event()
    tasks = [asyncio.create_task(driver.gated_call(gate)) for _ in range(n)]
    while driver.provider_calls + sum(t.done() for t in tasks) < n:
        await asyncio.sleep(0.001)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]
