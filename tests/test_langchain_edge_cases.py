"""Edge cases found in review: under-counted legacy batches, double charges from nested
guards, holds left by a refusal from another budget handler, unpriced answering models, and
a block's parent leaking onto a scope named per call."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    ModelRates,
    RateTable,
    budget_scope,
)
from agent_budget_callbacks.langchain import BudgetCallbackHandler, budget_guard

from .fake_chat_models import Bill, FakeChatOpenAI, FakeOpenAILLM

RATES = {"gpt-3.5-turbo-instruct": ModelRates.per_million("1.50", "2.00")}


@pytest.mark.parametrize("token_usage", [None, {}], ids=["no-key", "empty"])
def test_legacy_batch_without_reported_usage_charges_every_prompt(
    clock: Any, token_usage: dict[str, int] | None
) -> None:
    class NoUsageLLM(FakeOpenAILLM):
        def _result(self, prompts: Any) -> Any:
            result = super()._result(prompts)
            if token_usage is not None:
                result.llm_output["token_usage"] = token_usage
            return result

    batched = Budget(BudgetScope(name="b", max_tokens_per_session=10**9), RATES, clock=clock)
    NoUsageLLM(bill=None, max_tokens=20).batch(
        ["a b c", "d e f", "g h i"], config={"callbacks": [BudgetCallbackHandler(batched)]}
    )
    single = Budget(BudgetScope(name="s", max_tokens_per_session=10**9), RATES, clock=clock)
    for prompt in ["a b c", "d e f", "g h i"]:
        FakeOpenAILLM(bill=None, max_tokens=20).invoke(
            prompt, config={"callbacks": [BudgetCallbackHandler(single)]}
        )
    assert len(batched.records) == 3 and all(r.estimated for r in batched.records)
    assert batched.summary()["session"]["tokens"] == single.summary()["session"]["tokens"]
    assert batched.summary()["session"]["reserved_tokens"] == 0


def test_nested_guard_of_the_same_budget_charges_once(clock: Any) -> None:
    budget = Budget(BudgetScope(name="s", max_tokens_per_session=100_000), clock=clock)
    model = FakeChatOpenAI(bill=Bill(100, 10))

    def step(x: str) -> Any:
        with budget_guard(budget):  # a helper that guards its own calls
            return model.invoke(x)

    with budget_guard(budget):
        RunnableLambda(step).invoke("hi")
    assert model.calls.value == 1
    assert len(budget.records) == 1 and budget.summary()["session"]["tokens"] == 110


def test_refusal_by_another_budget_handler_frees_this_handlers_hold(clock: Any) -> None:
    user = Budget(BudgetScope(name="user", max_tokens_per_session=100_000), clock=clock)
    strict = Budget(BudgetScope(name="global", max_tokens_per_session=10), clock=clock)
    user_handler = BudgetCallbackHandler(user)
    model = FakeChatOpenAI(max_tokens=50)
    with budget_guard(strict), pytest.raises(BudgetExceededError) as info:
        model.invoke("hi", config={"callbacks": [user_handler]})
    assert info.value.scope == "global" and model.calls.value == 0
    assert user.summary()["session"]["reserved_tokens"] == 0
    assert user_handler.open_runs == 0


@pytest.mark.parametrize("policy", ["raise", "warn"])
def test_unpriced_answering_model_is_priced_as_the_requested_one(clock: Any, policy: Any) -> None:
    rates = RateTable({"mistral-large-latest": ModelRates.per_million("2", "6")}, on_unknown=policy)
    budget = Budget(BudgetScope(name="s", max_cost_per_session_usd=10), rates, clock=clock)
    model = FakeChatOpenAI(
        model="mistral-large-latest", answered_model="mistral-large-2411", bill=Bill(1000, 1000)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown-model warning: the answer is priced
        model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(budget)]})
    (record,) = budget.records
    assert record.model == "mistral-large" and record.cost_nanos == 8_000_000
    assert budget.summary()["session"]["reserved_tokens"] == 0


def test_block_parent_does_not_apply_to_a_scope_named_per_call(clock: Any) -> None:
    mgr = BudgetManager(clock=clock)
    mgr.register(BudgetScope(name="global"))
    mgr.register(BudgetScope(name="org-1"))
    mgr.add_template("user-", BudgetScope(name="user-"), parent="global")
    mgr.add_template("team-", BudgetScope(name="team-"))
    handler = BudgetCallbackHandler(mgr, default_max_tokens=50)
    with budget_scope("team-a", parent="org-1"):
        FakeChatOpenAI(bill=Bill(100, 10)).invoke(
            "hi", config={"callbacks": [handler], "metadata": {"budget_scope": "user-42"}}
        )
    assert mgr.get("user-42").parent.name == "global"
    assert mgr.summary("global")["session"]["tokens"] == 110
    assert mgr.summary("org-1")["session"]["tokens"] == 0
