"""OpenTelemetry: spans with GenAI usage and cost per call, and metrics, checked with the
SDK's in-memory span exporter and metric reader."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    ModelRates,
    Usage,
)
from agent_budget_callbacks.otel import instrument

from .clock import FakeClock

RATES = {"m": ModelRates.per_million(input="1", output="4", cached_input="0.5", cache_write="2")}


class Telemetry:
    """An SDK tracer provider and meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Every metric point: name -> [(attributes, value or histogram sum)]."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = (point.sum, point.count)  # a histogram
                        out.setdefault(metric.name, []).append((dict(point.attributes), value))
        return out


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def test_a_call_span_carries_usage_cost_and_real_times(
    telemetry: Telemetry, clock: FakeClock
) -> None:
    budget = Budget(BudgetScope("user:1", max_cost_per_day_usd=5), RATES, clock=clock)
    instrument(
        budget,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        system="openai",
    )
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("agent turn") as parent:
        hold = budget.reserve("m", 2_000, 500, session_id="conv-7")
        clock.advance(1.25)
        usage = Usage(
            2_000, 300, cache_read_tokens=1_200, cache_write_tokens=400, reasoning_tokens=120
        )
        record = hold.commit(usage)
    spans = [s for s in telemetry.spans.get_finished_spans() if s.name != "agent turn"]
    [span] = spans
    assert span.name == "chat m"
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.start_time == round(hold.created_at * 1e9)
    assert span.end_time == round(record.timestamp * 1e9)
    assert span.end_time - span.start_time == pytest.approx(1.25e9, abs=1e3)
    attributes = dict(span.attributes or {})
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.response.model": "m",
        "gen_ai.usage.input_tokens": 2_000,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1_200,
        "gen_ai.usage.cache_creation.input_tokens": 400,
        "gen_ai.usage.reasoning.output_tokens": 120,
        "gen_ai.usage.cost.amount": record.cost_nanos / 1e9,
        "gen_ai.usage.cost.currency": "USD",
        "gen_ai.usage.cost.source": "local",
        "gen_ai.conversation.id": "conv-7",
        "agent_budget.scope": "user:1",
        "agent_budget.estimated": False,
        "agent_budget.price_source": "rates=",
        "agent_budget.price_id": "rates:m",
        "agent_budget.price_tier": "standard",
        "agent_budget.reservation_id": hold.id,
    }
    # $1/M for 400 plain input, $0.5/M for 1,200 cached, $2/M for 400 written, $4/M output
    assert record.cost_nanos == 400 * 1_000 + 1_200 * 500 + 400 * 2_000 + 300 * 4_000


def test_metrics_spend_tokens_refusals_and_remaining(
    telemetry: Telemetry, clock: FakeClock
) -> None:
    glob = Budget(BudgetScope("global", max_tokens_per_day=10_000), RATES, clock=clock)
    user = Budget(
        BudgetScope("user:1", max_cost_per_day_usd="0.05"), RATES, parent=glob, clock=clock
    )
    instrument(
        user, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    first = user.record("s", "m", 1_000, 250)
    second = user.reserve("m", 500, 100).commit(Usage(500, 50))
    with pytest.raises(BudgetExceededError):
        user.reserve("m", 9_000, 0)
    points = telemetry.metrics()
    [(spend_labels, spend)] = points["agent_budget.spend"]
    assert spend_labels == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "agent_budget.scope": "user:1",
    }
    assert spend == pytest.approx((first.cost_nanos + second.cost_nanos) / 1e9)
    tokens = {
        labels["gen_ai.token.type"]: value for labels, value in points["gen_ai.client.token.usage"]
    }
    assert tokens == {"input": (1_500, 2), "output": (300, 2)}
    assert points["agent_budget.refusals"] == [
        ({"agent_budget.limit": "day_tokens", "agent_budget.scope": "global"}, 1)
    ]
    remaining_tokens = dict(
        (labels["agent_budget.scope"], value)
        for labels, value in points["agent_budget.remaining.tokens"]
    )
    assert remaining_tokens == {"global": 10_000 - 1_800}
    [(labels, left)] = points["agent_budget.remaining.cost"]
    assert labels == {"agent_budget.scope": "user:1", "agent_budget.limit": "day_cost_usd"}
    assert left == pytest.approx(0.05 - (first.cost_nanos + second.cost_nanos) / 1e9)
    [refused] = [
        s for s in telemetry.spans.get_finished_spans() if s.status.status_code == StatusCode.ERROR
    ]
    assert refused.attributes is not None
    assert refused.attributes["error.type"] == "BudgetExceededError"
    assert refused.attributes["agent_budget.refused_by"] == "global"
    assert refused.start_time == refused.end_time


def test_a_manager_with_bounded_scope_labels(telemetry: Telemetry, clock: FakeClock) -> None:
    mgr = BudgetManager(rates=RATES, clock=clock)
    mgr.register(BudgetScope("global", max_cost_per_day_usd=10))
    mgr.add_template("user:", BudgetScope("user", max_tokens_per_day=50_000), parent="global")
    mgr.add_template("conv:", BudgetScope("conv"))
    early = mgr.get("user:a")  # made before instrumenting: still heard
    assert early is not None

    def tenant(scope: str) -> str | None:
        if scope.startswith("conv:"):
            return "user:" + scope.split(":")[1].split("-")[0]
        return scope

    handle = instrument(
        mgr,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        scope_label=tenant,
    )
    early.record("s", "m", 100, 10)
    for i in range(5):
        mgr.get(f"conv:b-{i}", parent="user:b").record("s", "m", 100, 10)  # type: ignore[union-attr]
    spend = {
        labels["agent_budget.scope"]: v for labels, v in telemetry.metrics()["agent_budget.spend"]
    }
    assert set(spend) == {"user:a", "user:b"}  # five conversations, one label
    assert {s.attributes["agent_budget.scope"] for s in telemetry.spans.get_finished_spans()} == {  # type: ignore[index]
        "user:a",
        *(f"conv:b-{i}" for i in range(5)),
    }
    remaining = {
        labels["agent_budget.scope"]
        for labels, _ in telemetry.metrics()["agent_budget.remaining.tokens"]
    }
    assert remaining == {"user:a", "user:b"}
    handle.uninstrument()
    before = len(telemetry.spans.get_finished_spans())
    early.record("s", "m", 1, 1)
    assert len(telemetry.spans.get_finished_spans()) == before


def test_a_langchain_call_through_the_handler(telemetry: Telemetry, clock: FakeClock) -> None:
    """A real LangChain chat model behind the budget handler: its span carries the usage the
    model reported (cache reads and reasoning included)."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from agent_budget_callbacks.langchain import BudgetCallbackHandler

    budget = Budget(BudgetScope("app", max_cost_per_day_usd=1), clock=clock)
    instrument(
        budget, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    reply = AIMessage(
        "hi",
        usage_metadata={
            "input_tokens": 900,
            "output_tokens": 80,
            "total_tokens": 980,
            "input_token_details": {"cache_read": 512},
            "output_token_details": {"reasoning": 30},
        },
    )
    model = GenericFakeChatModel(messages=itertools.repeat(reply))
    handler = BudgetCallbackHandler(budget, default_model="gpt-4o-mini", default_max_tokens=200)
    model.invoke("hello", config={"callbacks": [handler]})
    [span] = telemetry.spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert attributes["gen_ai.usage.input_tokens"] == 900
    assert attributes["gen_ai.usage.output_tokens"] == 80
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 512
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 30
    assert attributes["gen_ai.usage.cost.amount"] == budget.records[0].cost_nanos / 1e9 > 0
    assert attributes["agent_budget.price_id"].endswith(":gpt-4o-mini")


def test_instrument_rejects_other_targets() -> None:
    with pytest.raises(TypeError, match="Budget or a BudgetManager"):
        instrument("not a budget")  # type: ignore[arg-type]
