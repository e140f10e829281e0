"""The OpenAI Agents SDK adapter: BudgetHooks and BudgetModel on the real SDK.

The SDK's Runner, agents, tools, handoffs, retries and streaming are real; only the model is
fake (``FakeResponsesModel``, shaped like OpenAIResponsesModel) or the real
``OpenAIChatCompletionsModel`` talking to the project's loopback OpenAI server. The first
tests pin the SDK facts the adapter relies on, so an upgrade that changes one fails here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from agents import (
    Agent,
    ModelProvider,
    ModelSettings,
    ModelTracing,
    RunConfig,
    RunHooks,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.lifecycle import RunHooksBase
from agents.retry import ModelRetrySettings

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    BudgetWarning,
    MemoryStore,
    budget_scope,
)
from agent_budget_callbacks.openai_agents import (
    BudgetHooks,
    BudgetModel,
    BudgetModelProvider,
    budget_run_config,
)
from agent_budget_callbacks.openai_agents.payload import read_event, response_text, usage_of

from .adapter_drivers import BILL, bill_usage
from .fake_agents_models import FakeResponsesModel, ToolCall
from .fake_chat_models import Bill
from .provider_checks import assert_nothing_charged, recorded_usage, sessions_by_scope
from .provider_servers import CUT_OFF_ERRORS, OpenAIServer, Reply, held
from .thread_store import ThreadNotingStore

set_tracing_disabled(True)  # tracing would export over the network


def _budget(clock: Any, tokens: int = 1_000_000, hold_ttl: float = 30.0) -> Budget:
    return Budget(
        BudgetScope("agents", max_tokens_per_session=tokens), clock=clock, hold_ttl=hold_ttl
    )


BILLED = bill_usage()


@function_tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


class Sentinel(Exception):
    pass


# -- SDK facts the adapter relies on ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["run", "run_sync", "run_streamed"])
def test_pin_an_exception_in_on_llm_start_reaches_the_caller_unchanged(mode: str) -> None:
    """Raising in RunHooks.on_llm_start stops the call before the model runs, and every
    Runner entry point raises that very exception object."""
    error = Sentinel("no")

    class Refusing(RunHooks[Any]):
        async def on_llm_start(self, *args: Any) -> None:
            raise error

    model = FakeResponsesModel()
    agent = Agent(name="a", model=model)
    with pytest.raises(Sentinel) as caught:
        _run(agent, "hi", mode, hooks=Refusing())
    assert caught.value is error
    assert model.calls.value == 0


def test_pin_hooks_and_model_receive_the_same_input_list() -> None:
    """on_llm_start's input_items is the very list the model's get_response / stream_response
    gets: it is how a BudgetModel finds the hold the hooks took for its call."""
    seen_by_hooks: list[object] = []
    seen_by_model: list[object] = []

    class Noting(RunHooks[Any]):
        async def on_llm_start(self, context: Any, agent: Any, prompt: Any, items: Any) -> None:
            seen_by_hooks.append(items)

    class Model(FakeResponsesModel):
        async def get_response(self, system_instructions: Any, input: Any, *a: Any, **k: Any):
            seen_by_model.append(input)
            return await super().get_response(system_instructions, input, *a, **k)

        def stream_response(self, system_instructions: Any, input: Any, *a: Any, **k: Any):
            seen_by_model.append(input)
            return super().stream_response(system_instructions, input, *a, **k)

    agent = Agent(
        name="a",
        model=Model(replies=[ToolCall("lookup", {"key": "k"}), "done"]),
        tools=[lookup],
    )
    for mode in ("run", "run_streamed"):
        _run(agent, "hi", mode, hooks=Noting())
    assert len(seen_by_hooks) == 4
    assert all(a is b for a, b in zip(seen_by_hooks, seen_by_model, strict=True))


def test_pin_run_hooks_is_a_subscripted_generic() -> None:
    """RunHooks is RunHooksBase[TContext, Agent]: subclass it, check against RunHooksBase."""
    hooks = BudgetHooks(Budget(BudgetScope("x")))
    assert isinstance(hooks, RunHooksBase)
    with pytest.raises(TypeError):
        issubclass(BudgetHooks, RunHooks)  # type: ignore[misc]


def test_pin_a_failing_model_call_gets_no_on_llm_end() -> None:
    """Why hooks alone cannot release the hold of a failed call (a BudgetModel can)."""
    ends: list[object] = []

    class Noting(RunHooks[Any]):
        async def on_llm_end(self, *args: Any) -> None:
            ends.append(args)

    agent = Agent(name="a", model=FakeResponsesModel(error=Sentinel("boom")))
    with pytest.raises(Sentinel):
        _run(agent, "hi", "run", hooks=Noting())
    assert ends == []


def _run(agent: Any, prompt: str, mode: str, **kwargs: Any) -> Any:
    if mode == "run_sync":
        return Runner.run_sync(agent, prompt, **kwargs)
    if mode == "run":
        return asyncio.run(Runner.run(agent, prompt, **kwargs))

    async def streamed() -> Any:
        result = Runner.run_streamed(agent, prompt, **kwargs)
        async for _event in result.stream_events():
            pass
        return result

    return asyncio.run(streamed())


# -- hooks alone ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["run", "run_sync", "run_streamed"])
def test_hooks_alone_refuse_and_record(mode: str, clock: Any) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    model = FakeResponsesModel(bill=BILL, replies=[ToolCall("lookup", {"key": "k"}), "ok"])
    agent = Agent(name="a", model=model, tools=[lookup])
    result = _run(agent, "hi", mode, hooks=hooks)
    assert result.final_output == "ok"
    assert model.calls.value == 2
    assert [recorded_usage(r) for r in budget.records] == [BILLED, BILLED]
    assert hooks.open_calls == 0 and held(budget) == 0

    poor = _budget(clock, tokens=50)
    with pytest.raises(BudgetExceededError):
        _run(agent, "hi", mode, hooks=BudgetHooks(poor))
    assert model.calls.value == 2
    assert_nothing_charged(poor)


def test_hooks_alone_keep_a_failed_calls_hold_until_its_ttl(clock: Any) -> None:
    budget = _budget(clock, hold_ttl=30.0)
    hooks = BudgetHooks(budget)
    agent = Agent(name="a", model=FakeResponsesModel(error=Sentinel("boom")))
    with pytest.raises(Sentinel):
        _run(agent, "hi", "run", hooks=hooks)
    assert held(budget) > 0
    clock.advance(31)
    assert held(budget) == 0
    assert budget.records == []


def test_hooks_alone_charge_counted_text_when_the_model_reports_no_usage(clock: Any) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    agent = Agent(name="a", model=FakeResponsesModel(report_usage=False, replies=["one two"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(agent, "hi", "run", hooks=hooks)
    (record,) = budget.records
    assert record.estimated and record.metadata["usage_source"] == "counted"
    assert record.output_tokens == hooks.calls.counter.count_text("one two")
    assert any("include_usage=True" in str(w.message) for w in caught)


# -- hooks with the model wrapped ---------------------------------------------------------------


class FakeProvider(ModelProvider):
    """Resolves every model name to one fake model (as MultiProvider resolves "gpt-4o")."""

    def __init__(self, model: FakeResponsesModel) -> None:
        self.model = model
        self.names: list[str | None] = []

    def get_model(self, model_name: str | None) -> Any:
        self.names.append(model_name)
        return self.model


@pytest.mark.parametrize("mode", ["run", "run_sync", "run_streamed"])
def test_run_config_wraps_the_providers_models_and_charges_each_call_once(
    mode: str, clock: Any
) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    model = FakeResponsesModel(bill=BILL, replies=[ToolCall("lookup", {"key": "k"}), "ok"])
    provider = FakeProvider(model)
    agent = Agent(name="a", model="gpt-4o", tools=[lookup])
    config = hooks.run_config(RunConfig(model_provider=provider))
    assert isinstance(config.model_provider, BudgetModelProvider)
    _run(agent, "hi", mode, hooks=hooks, run_config=config)
    assert provider.names == ["gpt-4o", "gpt-4o"]
    assert model.calls.value == 2
    assert [recorded_usage(r) for r in budget.records] == [
        BILLED,
        BILLED,
    ]  # once each, not by hooks and model
    assert all(r.model == "gpt-4o" for r in budget.records)
    assert hooks.open_calls == 0 and held(budget) == 0


def test_budget_run_config_keeps_the_rest_and_wraps_a_run_level_model(clock: Any) -> None:
    hooks = BudgetHooks(_budget(clock))
    model = FakeResponsesModel()
    config = budget_run_config(hooks, RunConfig(model=model, workflow_name="w"))
    assert config.workflow_name == "w"
    assert isinstance(config.model, BudgetModel) and config.model.wrapped is model
    assert budget_run_config(hooks, config) is config  # already wrapped: unchanged


def test_handoffs_charge_every_agents_calls(clock: Any) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    billing_model = FakeResponsesModel(bill=BILL, replies=["Your invoice is paid."])
    billing = Agent(name="billing", model=hooks.wrap(billing_model))
    triage_model = FakeResponsesModel(bill=BILL, replies=[ToolCall("transfer_to_billing", {})])
    triage = Agent(name="triage", model=hooks.wrap(triage_model), handoffs=[billing])
    result = _run(triage, "Is my invoice paid?", "run", hooks=hooks)
    assert result.final_output == "Your invoice is paid."
    assert (triage_model.calls.value, billing_model.calls.value) == (1, 1)
    assert [recorded_usage(r) for r in budget.records] == [BILLED, BILLED]
    assert held(budget) == 0


def test_a_refusal_by_another_budgets_model_frees_the_hooks_hold(clock: Any) -> None:
    """Hooks over one budget, the model wrapped for another: both charge each call, and
    when the model's budget refuses, the hold the hooks took is freed at once."""
    user, org = _budget(clock), _budget(clock)
    hooks = BudgetHooks(user)
    model = FakeResponsesModel(bill=BILL)
    agent = Agent(name="a", model=BudgetModel(model, org))
    _run(agent, "hi", "run", hooks=hooks)
    assert [recorded_usage(r) for r in user.records] == [BILLED]
    assert [recorded_usage(r) for r in org.records] == [BILLED]
    agent = Agent(name="a", model=BudgetModel(model, _budget(clock, tokens=50)))
    with pytest.raises(BudgetExceededError):
        _run(agent, "hi", "run", hooks=hooks)
    assert model.calls.value == 1
    assert held(user) == 0 and len(user.records) == 1


def test_a_failed_call_through_a_wrapped_model_frees_its_hold(clock: Any) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    agent = Agent(name="a", model=hooks.wrap(FakeResponsesModel(error=Sentinel("boom"))))
    with pytest.raises(Sentinel):
        _run(agent, "hi", "run", hooks=hooks)
    assert_nothing_charged(budget)
    assert hooks.open_calls == 0


class FlakyOnce(FakeResponsesModel):
    """Fails its first call (a 500 bills nothing), then answers."""

    async def get_response(self, *args: Any, **kwargs: Any) -> Any:
        if self.calls.value == 0:
            self.calls.hit()
            raise Sentinel("transient")
        return await super().get_response(*args, **kwargs)


def test_each_retry_attempt_is_reserved_and_accounted(clock: Any) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    model = FlakyOnce(bill=BILL)
    settings = ModelSettings(retry=ModelRetrySettings(max_retries=2, policy=lambda ctx: True))
    agent = Agent(name="a", model=hooks.wrap(model), model_settings=settings)
    _run(agent, "hi", "run", hooks=hooks)
    assert model.calls.value == 2
    assert [recorded_usage(r) for r in budget.records] == [
        BILLED
    ]  # the failed attempt billed nothing
    assert held(budget) == 0 and hooks.open_calls == 0


def test_a_refusal_by_the_model_alone_is_final_whatever_the_retry_policy(clock: Any) -> None:
    poor = _budget(clock, tokens=50)
    model = FakeResponsesModel()
    attempts: list[str] = []

    class Counting(BudgetModel):
        async def get_response(self, *args: Any, **kwargs: Any) -> Any:
            attempts.append("get_response")
            return await super().get_response(*args, **kwargs)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            attempts.append("stream_response")
            return super().stream_response(*args, **kwargs)

    settings = ModelSettings(retry=ModelRetrySettings(max_retries=3, policy=lambda ctx: True))
    agent = Agent(name="a", model=Counting(model, poor), model_settings=settings)
    for mode in ("run", "run_sync", "run_streamed"):
        with pytest.raises(BudgetExceededError):
            _run(agent, "hi", mode)
    assert attempts == ["get_response", "get_response", "stream_response"]  # no retries
    assert model.calls.value == 0
    assert_nothing_charged(poor)


def test_the_model_holds_what_the_runs_settings_ask_for(clock: Any) -> None:
    """RunConfig.model_settings is invisible to hooks: the wrapped model holds it."""
    budget = _budget(clock)
    hooks = BudgetHooks(budget, default_max_output_tokens=100)
    gate = asyncio.Event()
    model = FakeResponsesModel(gate=gate)
    agent = Agent(name="a", model=hooks.wrap(model))
    config = RunConfig(model_settings=ModelSettings(max_tokens=2000))

    async def main() -> int:
        task = asyncio.create_task(Runner.run(agent, "hi", hooks=hooks, run_config=config))
        while model.calls.value == 0:
            await asyncio.sleep(0.001)
        reserved = budget.usage()["session:tokens"].reserved
        gate.set()
        await task
        return reserved

    reserved = asyncio.run(main())
    assert 2000 < reserved < 2100
    assert model.settings_seen[0].max_tokens == 2000
    assert len(budget.records) == 1 and held(budget) == 0


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_hold_is_priced_in_the_service_tier_extra_args_ask_for(
    wrapped: bool, clock: Any
) -> None:
    async def held_cost(extra_args: dict[str, Any] | None) -> int:
        budget = Budget(BudgetScope("tier", max_cost_per_session_usd=10), clock=clock)
        hooks = BudgetHooks(budget)
        gate = asyncio.Event()
        model = FakeResponsesModel(gate=gate)
        settings = ModelSettings(max_tokens=1000, extra_args=extra_args)
        agent = Agent(name="a", model=hooks.wrap(model) if wrapped else model)
        agent.model_settings = settings
        task = asyncio.create_task(Runner.run(agent, "hi", hooks=hooks))
        while model.calls.value == 0:
            await asyncio.sleep(0.001)
        reserved = budget.usage()["session:cost"].reserved
        gate.set()
        await task
        return reserved

    plain = asyncio.run(held_cost(None))
    priority = asyncio.run(held_cost({"service_tier": "priority"}))
    assert priority > plain


def test_clamp_sends_the_output_cap_the_budget_can_hold(clock: Any) -> None:
    budget = _budget(clock, tokens=600)
    hooks = BudgetHooks(budget, clamp=True, min_output_tokens=50)
    model = FakeResponsesModel(bill=Bill(100, 20))
    agent = Agent(name="a", model=hooks.wrap(model))
    _run(agent, "hi", "run", hooks=hooks)
    sent = model.settings_seen[0].max_tokens
    assert sent is not None and 50 <= sent < 600
    assert len(budget.records) == 1
    # Once less than the floor fits, the call is refused before the provider.
    tiny = _budget(clock, tokens=40)  # the prompt and 50 output tokens do not fit
    tight = BudgetHooks(tiny, clamp=True, min_output_tokens=50)
    with pytest.raises(BudgetExceededError):
        _run(Agent(name="a", model=tight.wrap(model)), "hi", "run", hooks=tight)
    assert model.calls.value == 1


def test_clamp_with_an_unwrapped_model_warns_that_the_cap_was_not_sent(clock: Any) -> None:
    hooks = BudgetHooks(_budget(clock), clamp=True)
    model = FakeResponsesModel()
    agent = Agent(name="unwrapped-clamp", model=model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(agent, "hi", "run", hooks=hooks)
        _run(agent, "hi", "run", hooks=hooks)
    notes = [str(w.message) for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(notes) == 1 and "hooks.run_config()" in notes[0]
    assert model.settings_seen[0].max_tokens is None  # nothing sent it


def test_a_cancelled_streamed_run_is_charged_what_it_streamed(clock: Any) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    model = FakeResponsesModel(replies=["one two three four five six"], hang_after_chunks=2)
    agent = Agent(name="a", model=hooks.wrap(model))

    async def main() -> None:
        result = Runner.run_streamed(agent, "hi", hooks=hooks)
        deltas = 0
        async for event in result.stream_events():
            if getattr(getattr(event, "data", None), "type", "") == "response.output_text.delta":
                deltas += 1
                if deltas == 2:
                    result.cancel()

    asyncio.run(main())
    (record,) = budget.records
    assert record.metadata["partial"] and record.estimated
    assert record.output_tokens == hooks.calls.counter.count_text("one two")
    assert held(budget) == 0 and hooks.open_calls == 0


# -- tenants --------------------------------------------------------------------------------


@dataclasses.dataclass
class AppContext:
    user: str
    budget_scope: str
    budget_session: str


def _manager(clock: Any) -> BudgetManager:
    manager = BudgetManager(MemoryStore(), clock=clock)
    manager.add_template("user-", BudgetScope("user", max_tokens_per_session=400))
    return manager


def test_the_run_context_names_the_tenant_and_session(clock: Any) -> None:
    manager = _manager(clock)
    hooks = BudgetHooks(manager)
    model = FakeResponsesModel(bill=Bill(100, 20))
    agent = Agent(name="a", model=model, model_settings=ModelSettings(max_tokens=50))
    _run(agent, "hi", "run", hooks=hooks, context={"budget_scope": "user-1"})
    ctx = AppContext("bob", budget_scope="user-2", budget_session="conv-9")
    _run(agent, "hi", "run_sync", hooks=hooks, context=ctx)
    with budget_scope("user-3", session="conv-3"):
        _run(agent, "hi", "run", hooks=hooks, run_config=hooks.run_config())
    assert sessions_by_scope(manager, "user-1", "user-2", "user-3") == {
        "user-1": [(100, "")],
        "user-2": [(100, "conv-9")],
        "user-3": [(100, "conv-3")],
    }


def test_one_tenant_out_of_budget_does_not_stop_another(clock: Any) -> None:
    manager = _manager(clock)
    hooks = BudgetHooks(manager)
    model = FakeResponsesModel(bill=Bill(300, 80))
    agent = Agent(name="a", model=hooks.wrap(model), model_settings=ModelSettings(max_tokens=50))
    _run(agent, "hi", "run", hooks=hooks, context={"budget_scope": "user-1"})
    with pytest.raises(BudgetExceededError):
        _run(agent, "hi", "run", hooks=hooks, context={"budget_scope": "user-1"})
    _run(agent, "hi", "run", hooks=hooks, context={"budget_scope": "user-2"})
    assert model.calls.value == 2


# -- async never blocks the loop ----------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
def test_store_round_trips_never_run_on_the_event_loop(wrapped: bool, clock: Any) -> None:
    store = ThreadNotingStore()
    budget = Budget(BudgetScope("io", max_tokens_per_session=10_000), store=store, clock=clock)
    hooks = BudgetHooks(budget)
    model = FakeResponsesModel()
    agent = Agent(name="a", model=hooks.wrap(model) if wrapped else model)

    async def main() -> int:
        await Runner.run(agent, "hi", hooks=hooks)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(store.threads) == 2 and loop_thread not in store.threads


# -- the real OpenAIChatCompletionsModel against the loopback server -----------------------------


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


def _chat_model(server: OpenAIServer, hooks: BudgetHooks) -> Any:
    from agents import OpenAIChatCompletionsModel
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    return hooks.wrap(OpenAIChatCompletionsModel("gpt-4o", client))


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_usage_equals_the_servers_ledger(
    server: OpenAIServer, stream: bool, clock: Any
) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    server.script(Reply(input_tokens=300, output_tokens=40, cache_read_tokens=100))

    async def main() -> None:
        settings = ModelSettings(max_tokens=200, include_usage=True)
        agent = Agent(name="a", model=_chat_model(server, hooks), model_settings=settings)
        if stream:
            result = Runner.run_streamed(agent, "hi", hooks=hooks)
            async for _event in result.stream_events():
                pass
        else:
            await Runner.run(agent, "hi", hooks=hooks)

    asyncio.run(main())
    (served,) = server.billed
    (record,) = budget.records
    assert not record.estimated
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (
        served.usage.input_tokens,
        served.usage.output_tokens,
        served.usage.cache_read_tokens,
    )
    assert served.body["max_tokens"] == 200
    assert held(budget) == 0


def test_a_chat_completions_stream_without_usage_warns_once(
    server: OpenAIServer, clock: Any
) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)

    async def main() -> None:
        agent = Agent(name="a", model=_chat_model(server, hooks))
        for _ in range(2):
            result = Runner.run_streamed(agent, "hi", hooks=hooks)
            async for _event in result.stream_events():
                pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
    notes = [w for w in caught if issubclass(w.category, BudgetWarning)]
    assert len(notes) == 1 and "include_usage=True" in str(notes[0].message)
    assert [r.metadata["usage_source"] for r in budget.records] == ["counted", "counted"]


def test_a_chat_completions_stream_cut_off_is_charged_what_it_streamed(
    server: OpenAIServer, clock: Any
) -> None:
    budget = _budget(clock)
    hooks = BudgetHooks(budget)
    server.script(Reply(text="alpha beta gamma delta epsilon", cut_after=2))

    async def main() -> None:
        settings = ModelSettings(include_usage=True)
        agent = Agent(name="a", model=_chat_model(server, hooks), model_settings=settings)
        result = Runner.run_streamed(agent, "hi", hooks=hooks)
        async for _event in result.stream_events():
            pass

    with pytest.raises(CUT_OFF_ERRORS):
        asyncio.run(main())
    (record,) = budget.records
    assert record.metadata["partial"]
    assert record.output_tokens == hooks.calls.counter.count_text("alpha beta")
    assert held(budget) == 0


# -- payload readers ----------------------------------------------------------------------------


def test_usage_of_reads_the_sdks_usage_and_treats_zero_as_unreported() -> None:
    from agents import Usage as AgentsUsage

    assert usage_of(AgentsUsage()) is None
    assert usage_of(None) is None
    model = FakeResponsesModel(bill=BILL)
    response = asyncio.run(
        model.get_response(
            None,
            "hi",
            ModelSettings(),
            [],
            None,
            [],
            ModelTracing.DISABLED,
            previous_response_id=None,
            conversation_id=None,
            prompt=None,
        )
    )
    usage = usage_of(response.usage)
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (120, 30)
    assert (usage.cache_read_tokens, usage.reasoning_tokens) == (40, 10)
    assert response_text(response) == "Hello there, friend."


def test_read_event_sees_text_and_the_final_usage() -> None:
    model = FakeResponsesModel(bill=BILL, replies=["a b"])

    async def events() -> list[Any]:
        stream = model.stream_response(
            None, "hi", ModelSettings(), [], None, [], ModelTracing.DISABLED
        )
        return [e async for e in stream]

    read = [read_event(e) for e in asyncio.run(events())]
    assert "".join(r.text or "" for r in read) == "a b"
    final = read[-1]
    assert final.done and final.model == "gpt-4o-2024-08-06"
    assert final.usage is not None and final.usage.output_tokens == 30
