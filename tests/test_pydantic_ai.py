"""The pydantic-ai adapter: BudgetCapability and BudgetModel on real pydantic-ai agents.

Agents, tools, streaming, ``UsageLimits`` and the capability machinery are pydantic-ai's
own; the model is fake (``FakeOpenAIChatModel``, shaped like OpenAIChatModel), pydantic-ai's
``FunctionModel``, or the real ``OpenAIChatModel`` talking to the project's loopback server.
The first tests pin the pydantic-ai facts the adapter relies on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.messages import ModelResponse, TextPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.usage import RequestUsage, UsageLimits

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    BudgetWarning,
    MemoryStore,
    budget_scope,
)
from agent_budget_callbacks.pydantic_ai import BudgetCapability, BudgetModel, budget_model
from agent_budget_callbacks.pydantic_ai.payload import input_tokens, response_text, usage_of

from .adapter_drivers import BILL, bill_usage
from .fake_chat_models import Bill
from .fake_pydantic_models import FakeOpenAIChatModel, ToolCall
from .provider_checks import assert_nothing_charged, recorded_usage, sessions_by_scope
from .provider_servers import OpenAIServer, Reply, held
from .thread_store import ThreadNotingStore

BILLED = bill_usage()
ROOT = Path(__file__).resolve().parent.parent


def _budget(clock: Any, tokens: int = 1_000_000, store: Any = None) -> Budget:
    return Budget(
        BudgetScope("pai", max_tokens_per_session=tokens), store=store, clock=clock, hold_ttl=30
    )


def _tool_agent(model: Model, capability: BudgetCapability, **kwargs: Any) -> Agent[Any, str]:
    agent: Agent[Any, str] = Agent(model, capabilities=[capability], **kwargs)

    @agent.tool_plain
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"

    return agent


def _looping_model(**kwargs: Any) -> FakeOpenAIChatModel:
    return FakeOpenAIChatModel(
        bill=BILL, replies=[ToolCall("lookup", {"key": "k"}), "done"], **kwargs
    )


class Sentinel(Exception):
    pass


# -- pydantic-ai facts the adapter relies on -------------------------------------------------


def test_pin_get_wrapper_model_wraps_every_request_and_sees_the_run_context() -> None:
    """get_wrapper_model is called per request attempt (each step of a tool loop), and the
    current run context is set while the wrapper's request() runs: that is where the deps
    naming the tenant come from."""
    seen: list[Any] = []

    class Noting(WrapperModel):
        async def request(self, *args: Any, **kwargs: Any) -> Any:
            from pydantic_ai._run_context import get_current_run_context

            ctx = get_current_run_context()
            seen.append(ctx.deps if ctx is not None else "no context")
            return await super().request(*args, **kwargs)

    class Wrapping(AbstractCapability[Any]):
        def get_wrapper_model(self, model: Model) -> Model | None:
            return Noting(model)

    agent: Agent[Any, str] = Agent(_looping_model(), capabilities=[Wrapping()], deps_type=str)

    @agent.tool_plain
    def lookup(key: str) -> str:
        return key

    agent.run_sync("hi", deps="tenant-deps")
    assert seen == ["tenant-deps", "tenant-deps"]


def test_pin_request_stream_receives_the_run_context() -> None:
    seen: list[Any] = []

    class Noting(WrapperModel):
        def request_stream(self, messages: Any, settings: Any, params: Any, run_context: Any):
            seen.append(run_context.deps if run_context is not None else "no context")
            return super().request_stream(messages, settings, params, run_context)

    class Wrapping(AbstractCapability[Any]):
        def get_wrapper_model(self, model: Model) -> Model | None:
            return Noting(model)

    agent: Agent[Any, str] = Agent(FakeOpenAIChatModel(), capabilities=[Wrapping()], deps_type=str)
    _run(agent, "run_stream", deps="tenant-deps")
    assert seen == ["tenant-deps"]


def test_pin_a_streamed_responses_state_says_whether_it_ran_to_its_end() -> None:
    from pydantic_ai.models import ModelRequestParameters

    async def state(stop_after: int | None, cancel: bool) -> str:
        model = FakeOpenAIChatModel(replies=["one two three four"])
        async with model.request_stream([], None, ModelRequestParameters()) as stream:
            seen = 0
            async for _event in stream:
                seen += 1
                if seen == stop_after:
                    break
            if cancel:
                await stream.cancel()
            return stream.get().state

    assert asyncio.run(state(None, False)) == "complete"
    assert asyncio.run(state(2, True)) == "interrupted"
    assert asyncio.run(state(2, False)) == "incomplete"


@pytest.mark.parametrize("mode", ["run", "run_sync", "run_stream", "run_stream_sync", "iter"])
def test_pin_an_exception_from_the_wrapper_reaches_the_caller_unchanged(mode: str) -> None:
    error = Sentinel("no")

    class Refusing(WrapperModel):
        async def request(self, *args: Any, **kwargs: Any) -> Any:
            raise error

        def request_stream(self, *args: Any, **kwargs: Any) -> Any:
            raise error

    class Wrapping(AbstractCapability[Any]):
        def get_wrapper_model(self, model: Model) -> Model | None:
            return Refusing(model)

    model = FakeOpenAIChatModel()
    agent: Agent[Any, str] = Agent(model, capabilities=[Wrapping()])
    with pytest.raises(Sentinel) as caught:
        _run(agent, mode)
    assert caught.value is error
    assert model.calls.value == 0


def _run(agent: Agent[Any, Any], mode: str, prompt: str = "hi", **kwargs: Any) -> Any:
    if mode == "run_sync":
        return agent.run_sync(prompt, **kwargs).output
    if mode == "run_stream_sync":
        with agent.run_stream_sync(prompt, **kwargs) as result:
            return result.get_output()

    async def main() -> Any:
        if mode == "run":
            return (await agent.run(prompt, **kwargs)).output
        if mode == "run_stream":
            async with agent.run_stream(prompt, **kwargs) as result:
                return await result.get_output()
        async with agent.iter(prompt, **kwargs) as run:
            async for _node in run:
                pass
            assert run.result is not None
            return run.result.output

    return asyncio.run(main())


# -- the capability ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["run", "run_sync", "run_stream", "run_stream_sync", "iter"])
def test_every_request_of_a_tool_loop_is_charged_once(mode: str, clock: Any) -> None:
    budget = _budget(clock)
    capability = BudgetCapability(budget)
    model = _looping_model()
    assert _run(_tool_agent(model, capability), mode) == "done"
    assert model.calls.value == 2
    assert [recorded_usage(r) for r in budget.records] == [BILLED, BILLED]
    assert all(not r.estimated and r.metadata["framework"] == "pydantic-ai" for r in budget.records)
    assert held(budget) == 0 and capability.open_calls == 0


@pytest.mark.parametrize("mode", ["run", "run_sync", "run_stream", "run_stream_sync", "iter"])
def test_a_refusal_stops_the_run_before_the_provider(mode: str, clock: Any) -> None:
    budget = _budget(clock, tokens=50)
    model = _looping_model()
    with pytest.raises(BudgetExceededError):
        _run(_tool_agent(model, BudgetCapability(budget)), mode)
    assert model.calls.value == 0
    assert_nothing_charged(budget)


def test_a_refusal_mid_loop_keeps_what_was_spent(clock: Any) -> None:
    """Room for one request: the tool loop's second is refused; the first stays recorded."""
    budget = _budget(clock, tokens=BILL.total + 50)  # not a second hold (prompt + 100)
    model = _looping_model()
    agent = _tool_agent(model, BudgetCapability(budget), model_settings={"max_tokens": 100})
    with pytest.raises(BudgetExceededError):
        agent.run_sync("hi")
    assert model.calls.value == 1
    assert [recorded_usage(r) for r in budget.records] == [BILLED]
    assert held(budget) == 0


def test_two_budgets_on_one_agent_both_charge_and_a_refusal_frees_the_other(
    clock: Any,
) -> None:
    user, org = _budget(clock), _budget(clock)
    model = FakeOpenAIChatModel(bill=BILL)
    both = [BudgetCapability(user), BudgetCapability(org)]
    Agent(model, capabilities=both).run_sync("hi")
    assert [recorded_usage(r) for r in user.records] == [BILLED]
    assert [recorded_usage(r) for r in org.records] == [BILLED]
    poor = _budget(clock, tokens=50)
    with pytest.raises(BudgetExceededError):
        Agent(model, capabilities=[BudgetCapability(user), BudgetCapability(poor)]).run_sync("x")
    assert model.calls.value == 1
    assert held(user) == 0 and len(user.records) == 1


def test_a_failed_request_frees_its_hold(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeOpenAIChatModel(error=Sentinel("boom"))
    with pytest.raises(Sentinel):
        Agent(model, capabilities=[BudgetCapability(budget)]).run_sync("hi")
    assert model.calls.value == 1
    assert_nothing_charged(budget)


def test_a_response_without_usage_is_charged_its_counted_text(clock: Any) -> None:
    budget = _budget(clock)
    capability = BudgetCapability(budget)
    model = FakeOpenAIChatModel(report_usage=False, replies=["one two three"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Agent(model, capabilities=[capability]).run_sync("hi")
    (record,) = budget.records
    assert record.estimated and record.metadata["usage_source"] == "counted"
    assert record.output_tokens == capability.calls.counter.count_text("one two three")
    assert any(issubclass(w.category, BudgetWarning) for w in caught)


def test_clamp_sends_max_tokens_the_budget_can_hold(clock: Any) -> None:
    budget = _budget(clock, tokens=600)
    model = FakeOpenAIChatModel(bill=Bill(100, 20))
    capability = BudgetCapability(budget, clamp=True, min_output_tokens=50)
    Agent(model, capabilities=[capability]).run_sync("hi")
    sent = (model.settings_seen[0] or {}).get("max_tokens")
    assert sent is not None and 50 <= sent < 600
    # A request that asks for less than what fits keeps its own cap.
    Agent(model, capabilities=[capability], model_settings={"max_tokens": 60}).run_sync("hi")
    assert (model.settings_seen[1] or {}).get("max_tokens") == 60
    tight = BudgetCapability(_budget(clock, tokens=40), clamp=True, min_output_tokens=50)
    with pytest.raises(BudgetExceededError):
        Agent(model, capabilities=[tight]).run_sync("hi")
    assert model.calls.value == 2


def test_the_hold_is_priced_in_the_service_tier_the_request_asks_for(clock: Any) -> None:
    async def held_cost(settings: dict[str, Any]) -> int:
        budget = Budget(BudgetScope("tier", max_cost_per_session_usd=10), clock=clock)
        gate = asyncio.Event()
        model = FakeOpenAIChatModel(gate=gate)
        agent: Agent[Any, str] = Agent(
            model, capabilities=[BudgetCapability(budget)], model_settings=settings
        )
        task = asyncio.create_task(agent.run("hi"))
        while model.calls.value == 0:
            await asyncio.sleep(0.001)
        reserved = budget.usage()["session:cost"].reserved
        gate.set()
        await task
        return reserved

    plain = asyncio.run(held_cost({"max_tokens": 1000}))
    priority = asyncio.run(held_cost({"max_tokens": 1000, "service_tier": "priority"}))
    own = asyncio.run(held_cost({"max_tokens": 1000, "openai_service_tier": "priority"}))
    assert priority > plain and own == priority


def test_without_clamp_the_requests_settings_are_sent_untouched(clock: Any) -> None:
    model = FakeOpenAIChatModel()
    Agent(model, capabilities=[BudgetCapability(_budget(clock))]).run_sync("hi")
    assert "max_tokens" not in (model.settings_seen[0] or {})


def test_a_stream_the_consumer_cancels_is_charged_what_it_produced(clock: Any) -> None:
    budget = _budget(clock)
    capability = BudgetCapability(budget)
    model = FakeOpenAIChatModel(bill=BILL, replies=["one two three four five six"])
    agent: Agent[Any, str] = Agent(model, capabilities=[capability])

    async def main() -> str:
        text = ""
        async with agent.run_stream("hi") as result:
            async for delta in result.stream_text(delta=True, debounce_by=None):
                text += delta
                if len(text.split()) == 2:
                    await result.cancel()
                    break
        return text

    text = asyncio.run(main())
    (record,) = budget.records
    assert record.metadata["partial"] and record.estimated
    assert record.output_tokens == capability.calls.counter.count_text(text)
    assert held(budget) == 0


def test_a_run_timed_out_mid_stream_is_charged_what_it_streamed(clock: Any) -> None:
    budget = _budget(clock)
    capability = BudgetCapability(budget)
    model = FakeOpenAIChatModel(replies=["one two three four"], hang_after_chunks=2)
    agent: Agent[Any, str] = Agent(model, capabilities=[capability])

    async def consume() -> None:
        async with agent.run_stream("hi") as result:
            async for _delta in result.stream_text(delta=True, debounce_by=None):
                pass

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(consume(), 0.3)

    asyncio.run(main())
    (record,) = budget.records
    assert record.metadata["error"] == "CancelledError"
    assert record.output_tokens == capability.calls.counter.count_text("one two")
    assert held(budget) == 0


# -- beside UsageLimits ---------------------------------------------------------------------------


def test_usage_limits_still_apply_and_what_ran_is_recorded(clock: Any) -> None:
    budget = _budget(clock)
    model = _looping_model()
    agent = _tool_agent(model, BudgetCapability(budget))
    with pytest.raises(UsageLimitExceeded):
        agent.run_sync("hi", usage_limits=UsageLimits(request_limit=1))
    assert model.calls.value == 1
    assert [recorded_usage(r) for r in budget.records] == [BILLED]
    assert held(budget) == 0


def test_the_budget_refuses_where_generous_usage_limits_would_not(clock: Any) -> None:
    budget = _budget(clock, tokens=BILL.total + 50)  # not a second hold (prompt + 100)
    model = _looping_model()
    agent = _tool_agent(model, BudgetCapability(budget), model_settings={"max_tokens": 100})
    limits = UsageLimits(request_limit=50, total_tokens_limit=10_000)
    with pytest.raises(BudgetExceededError):
        agent.run_sync("hi", usage_limits=limits)
    assert model.calls.value == 1


def test_one_budget_is_shared_by_runs_and_processes(clock: Any, tmp_path: Path) -> None:
    """Two runs here and one in another process draw on one SQLite-backed cap that fits
    three requests: the fourth is refused, whichever process makes it."""
    path = tmp_path / "budget.db"
    cap = 3 * BILL.total + 50  # three requests, and not a fourth's hold (prompt + 100)

    def local_budget() -> Budget:
        return Budget(BudgetScope("shared", max_tokens_per_session=cap), store=f"sqlite:///{path}")

    model = FakeOpenAIChatModel(bill=BILL)
    agent: Agent[Any, str] = Agent(
        model, capabilities=[BudgetCapability(local_budget())], model_settings={"max_tokens": 100}
    )
    agent.run_sync("first")
    agent.run_sync("second")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(cap)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'core'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["ran", "refused"]
    with pytest.raises(BudgetExceededError):
        agent.run_sync("fourth")
    assert model.calls.value == 2
    fresh = local_budget()
    assert fresh.usage()["session:tokens"].committed == 3 * BILL.total


_CHILD = """
import sys
from pydantic_ai import Agent
from agent_budget import Budget, BudgetExceededError, BudgetScope
from agent_budget_callbacks.pydantic_ai import BudgetCapability
from tests.fake_pydantic_models import Bill, FakeOpenAIChatModel

path, cap = sys.argv[1], int(sys.argv[2])
budget = Budget(BudgetScope("shared", max_tokens_per_session=cap), store=f"sqlite:///{path}")
model = FakeOpenAIChatModel(bill=Bill(120, 30, cache_read=40, reasoning=10))
agent = Agent(model, capabilities=[BudgetCapability(budget)], model_settings={"max_tokens": 100})
agent.run_sync("third")
print("ran")
try:
    agent.run_sync("fourth")
except BudgetExceededError:
    print("refused")
"""


# -- tenants ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Deps:
    budget_scope: str
    budget_session: str = ""


def test_the_runs_deps_name_the_tenant_and_session(clock: Any) -> None:
    manager = BudgetManager(MemoryStore(), clock=clock)
    manager.add_template("user-", BudgetScope("user", max_tokens_per_session=10_000))
    capability = BudgetCapability(manager)
    model = FakeOpenAIChatModel(bill=Bill(100, 20))
    agent: Agent[Any, str] = Agent(model, capabilities=[capability])
    agent.run_sync("hi", deps={"budget_scope": "user-1"})
    agent.run_sync("hi", deps=Deps("user-2", budget_session="conv-2"))
    with budget_scope("user-3", session="conv-3"):
        agent.run_sync("hi")
    assert sessions_by_scope(manager, "user-1", "user-2", "user-3") == {
        "user-1": [(100, "")],
        "user-2": [(100, "conv-2")],
        "user-3": [(100, "conv-3")],
    }


def test_budget_model_wraps_a_model_for_direct_use(clock: Any) -> None:
    budget = _budget(clock)
    model = FakeOpenAIChatModel(bill=BILL)
    wrapped = budget_model(model, budget)
    assert isinstance(wrapped, BudgetModel) and wrapped.wrapped is model
    assert Agent(wrapped).run_sync("hi").output == "Hello there, friend."
    assert [recorded_usage(r) for r in budget.records] == [BILLED]
    with pytest.raises(TypeError):
        budget_model(model, wrapped.capability, clamp=True)


# -- async never blocks the loop ----------------------------------------------------------------


def test_store_round_trips_never_run_on_the_event_loop(clock: Any) -> None:
    store = ThreadNotingStore()
    agent: Agent[Any, str] = Agent(
        FakeOpenAIChatModel(), capabilities=[BudgetCapability(_budget(clock, store=store))]
    )

    async def main() -> int:
        await agent.run("hi")
        async with agent.run_stream("hi") as result:
            await result.get_output()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(store.threads) == 4 and loop_thread not in store.threads


# -- the real OpenAIChatModel against the loopback server -----------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_model_usage_equals_the_servers_ledger(stream: bool, clock: Any) -> None:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    budget = _budget(clock)
    with OpenAIServer() as server:
        server.script(Reply(input_tokens=300, output_tokens=40, cache_read_tokens=100))
        provider = OpenAIProvider(base_url=server.base_url, api_key="test")
        model = OpenAIChatModel("gpt-4o", provider=provider)
        agent: Agent[Any, str] = Agent(model, capabilities=[BudgetCapability(budget, clamp=True)])
        _run(agent, "run_stream" if stream else "run_sync")
        (served,) = server.billed
    (record,) = budget.records
    assert not record.estimated
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (
        served.usage.input_tokens,
        served.usage.output_tokens,
        served.usage.cache_read_tokens,
    )
    assert served.body.get("max_tokens") or served.body.get("max_completion_tokens")
    assert held(budget) == 0


# -- payload readers ----------------------------------------------------------------------------


def test_usage_of_treats_unmeasured_and_empty_usage_as_unreported() -> None:
    assert usage_of(RequestUsage()) is None
    assert usage_of(RequestUsage(input_tokens=5, unmeasured_requests=1)) is None
    usage = usage_of(
        RequestUsage(
            input_tokens=100, cache_read_tokens=30, output_tokens=20, output_reasoning_tokens=5
        )
    )
    assert usage is not None
    assert (usage.input_tokens, usage.cache_read_tokens, usage.reasoning_tokens) == (100, 30, 5)


def test_input_tokens_count_prompts_history_and_tool_schemas() -> None:
    captured: list[Any] = []

    def answer(messages: list[Any], info: AgentInfo) -> ModelResponse:
        captured.append((messages, info.model_request_parameters))
        return ModelResponse(parts=[TextPart("ok")], usage=RequestUsage(input_tokens=1))

    plain: Agent[Any, str] = Agent(FunctionModel(answer), instructions="Be brief.")
    plain.run_sync("What is the capital of France?")
    tooled = Agent(FunctionModel(answer), instructions="Be brief.")

    @tooled.tool_plain
    def lookup(key: str, strict: bool = False) -> str:
        """Look a key up in the very large company directory."""
        return key

    tooled.run_sync("What is the capital of France?")
    from agent_budget import default_counter

    counter = default_counter()
    without_tools = input_tokens(*captured[0], counter)
    with_tools = input_tokens(*captured[1], counter)
    assert without_tools > counter.count_text("What is the capital of France? Be brief.")
    assert with_tools > without_tools + 10
    assert response_text(ModelResponse(parts=[TextPart("a"), TextPart("b")])) == "ab"
