"""Property tests: random sequences of reserve, commit, release, record and clock moves."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from agent_budget import Budget, BudgetExceededError, BudgetScope, MemoryStore, ModelRates, Usage
from agent_budget.money import nanos_to_decimal

from .clock import FakeClock

RATES = {"m": ModelRates(input_per_1k="0.0013", output_per_1k="0.0071")}
TOKEN_CAP = 5_000
COST_CAP_NANOS = 20_000_000  # $0.02
DAY_TOKEN_CAP = 7_000
TTL = 300
WINDOW, BUCKET = 86_400, 900


class BudgetMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1_800_000_000.0)
        self.store = MemoryStore()
        self.budget = Budget(
            BudgetScope(
                name="p",
                max_tokens_per_session=TOKEN_CAP,
                max_cost_per_session_usd="0.02",
                max_tokens_per_day=DAY_TOKEN_CAP,
            ),
            RATES,
            store=self.store,
            clock=self.clock,
            hold_ttl=TTL,
        )
        self.records: list[tuple[float, int, int]] = []  # (time, tokens, nanos)
        self.open: dict[str, tuple[float, int, int]] = {}  # id -> (expires, tokens, nanos)
        self.overshoot = False

    def _live_open(self) -> list[tuple[float, int, int]]:
        return [v for v in self.open.values() if v[0] > self.clock()]

    @rule(target=holds, inp=st.integers(0, 1500), out=st.integers(0, 800))
    def reserve(self, inp, out):
        try:
            r = self.budget.reserve("m", inp, out)
        except BudgetExceededError:
            return None
        self.open[r.id] = (r.expires_at, r.tokens, r.cost_nanos)
        return r

    @rule(r=consumes(holds), frac=st.floats(0, 1), over=st.booleans())
    def commit(self, r, frac, over):
        if r is None:
            return
        inp = r.input_tokens
        out = int(r.max_output_tokens * frac) + (50 if over else 0)
        self.overshoot |= over
        record = r.commit(Usage(inp, out))
        self.open.pop(r.id, None)
        self.records.append((self.clock(), record.total_tokens, record.cost_nanos))

    @rule(r=consumes(holds))
    def release(self, r):
        if r is not None:
            r.release()
            self.open.pop(r.id, None)

    @rule(inp=st.integers(0, 400), out=st.integers(0, 400))
    def record(self, inp, out):
        try:
            rec = self.budget.record("s", "m", inp, out)
        except BudgetExceededError:
            rec = self.budget.records[-1]
            self.overshoot = True
        self.records.append((self.clock(), rec.total_tokens, rec.cost_nanos))
        self.overshoot = True  # record() is after the fact: it may push past a cap

    @rule(seconds=st.sampled_from([1, 60, 299, 301, 900, 3_600, 43_200, 86_400]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @invariant()
    def totals_equal_sum_of_records(self):
        usage = self.budget.usage()
        tokens = usage.get("session:tokens")
        cost = usage.get("session:cost")
        assert (tokens.committed if tokens else 0) == sum(t for _, t, _ in self.records)
        assert (cost.committed if cost else 0) == sum(n for _, _, n in self.records)

    @invariant()
    def reserved_equals_live_holds(self):
        usage = self.budget.usage()
        tokens = usage.get("session:tokens")
        assert (tokens.reserved if tokens else 0) == sum(t for _, t, _ in self._live_open())

    @invariant()
    def day_window_matches_bucket_rule(self):
        now = self.clock()
        horizon = now - WINDOW - BUCKET
        expected = sum(t for when, t, _ in self.records if (when // BUCKET) * BUCKET > horizon)
        day = self.budget.usage().get("day:tokens")
        assert (day.committed if day else 0) == expected

    @precondition(lambda self: not self.overshoot)
    @invariant()
    def never_above_cap_without_overshoot(self):
        usage = self.budget.usage()
        for metric, cap in (
            ("session:tokens", TOKEN_CAP),
            ("session:cost", COST_CAP_NANOS),
            ("day:tokens", DAY_TOKEN_CAP),
        ):
            level = usage.get(metric)
            if level:
                assert level.committed + level.reserved <= cap, metric


BudgetMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBudgetMachine = BudgetMachine.TestCase


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**12),
    st.decimals(min_value=0, max_value=100, places=6),
    st.decimals(min_value=0, max_value=100, places=6),
)
def test_record_cost_usd_is_the_exact_cost_correctly_rounded(
    input_tokens: int, output_tokens: int, input_rate: Decimal, output_rate: Decimal
) -> None:
    """A record's float ``cost_usd`` is its exact cost rounded once, as ``float(Decimal)``
    rounds it, however large the cost."""
    rates = {"m": ModelRates(str(input_rate), str(output_rate))}
    budget = Budget(BudgetScope("usd"), rates, save_definition=False)
    record = budget.record("s", "m", input_tokens, output_tokens)
    assert record.cost_usd == float(nanos_to_decimal(record.cost_nanos))


@given(st.integers(min_value=1, max_value=10**12), st.sampled_from(["0.8", "0.5", "0.333", "1"]))
def test_integer_warning_threshold_matches_the_decimal_one(amount: int, pct: str) -> None:
    """Alerts compare integer usage with ceil(pct * cap): the same verdict as the Decimal."""
    scope = BudgetScope("t", max_tokens_per_session=amount, alert_at_pct=float(pct))
    warn_at = Budget(scope)._warn_at["session_tokens"]
    exact = Decimal(pct) * amount
    for used in (warn_at - 1, warn_at, warn_at + 1):
        assert (used >= warn_at) == (used >= exact)
