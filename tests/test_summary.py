"""summary(): typed (TypedDicts), a ``remaining`` per limit, amounts printed as decimals, and
the original API's keys and float behaviour kept."""

from __future__ import annotations

import json
import pickle
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from agent_budget import Budget, BudgetManager, BudgetScope, ModelRates, Usd
from agent_budget.summary import LimitUse

ROOT = Path(__file__).resolve().parents[1]
RATES = {"m": ModelRates(input_per_1k=0.001, output_per_1k=0.002)}


def make(**limits) -> Budget:
    return Budget(BudgetScope(name="b", **limits), RATES)


def test_amounts_print_as_decimals_not_exponents():
    b = make(max_cost_per_session_usd=1)
    b.record("s", "m", 37, 0)  # $0.000037
    summary = b.summary()
    assert summary["session"]["cost_usd"] == 3.7e-05
    text = repr(summary)
    assert "0.000037" in text and "e-05" not in text
    assert str(summary["session"]["cost_usd"]) == "0.000037"
    assert f"{summary['session']['cost_usd']:.2e}" == "3.70e-05"  # formats as a float does


def test_usd_is_a_float_in_every_other_way():
    amount = Usd(3.7e-05)
    assert isinstance(amount, float)
    assert amount == 3.7e-05 and amount + 1 == 1.000037 and amount * 2 == 7.4e-05
    assert json.loads(json.dumps({"x": amount})) == {"x": 3.7e-05}
    assert pickle.loads(pickle.dumps(amount)) == amount
    assert repr(Usd(0.0)) == "0.0" and repr(Usd(12.5)) == "12.5"
    assert repr(Usd(1e-06)) == "0.000001"


def test_the_original_keys_keep_their_types():
    """The original's summary had session/day/per_model with int tokens and float USD."""
    b = Budget(BudgetScope(name="t"), {"c": ModelRates(input_per_1k=1.0, output_per_1k=0.0)})
    b.record("s1", "c", 1000, 0)
    summary = b.summary()
    assert summary["scope"] == "t"
    assert summary["session"]["cost_usd"] == 1.0 and type(summary["session"]["tokens"]) is int
    assert isinstance(summary["day"]["cost_usd"], float)
    assert summary["per_model"]["c"] == {"tokens": 1000, "cost_usd": 1.0}


def test_remaining_is_the_cap_less_committed_and_held():
    b = make(max_tokens_per_session=1_000, max_cost_per_session_usd=1)
    b.record("s", "m", 300, 0)  # 300 tokens, $0.0003
    hold = b.reserve("m", 100, 100)  # 200 tokens, $0.0003 held
    limits = b.summary()["limits"]
    tokens: LimitUse = limits["session_tokens"]
    assert tokens == {"used": 300, "reserved": 200, "limit": 1000, "remaining": 500, "pct": 0.3}
    assert limits["session_cost_usd"]["remaining"] == pytest.approx(1 - 0.0003 - 0.0003)
    hold.release()
    assert b.summary()["limits"]["session_tokens"]["remaining"] == 700


def test_remaining_never_goes_below_zero():
    b = make(max_tokens_per_session=100, hard_stop=False)
    b.record("s", "m", 150, 0)  # soft limit: recorded above the cap
    assert b.summary()["limits"]["session_tokens"]["remaining"] == 0
    assert b.summary()["limits"]["session_tokens"]["pct"] == 1.5


def test_exact_summaries_are_decimals():
    b = make(max_cost_per_session_usd=1, max_tokens_per_day=10_000)
    b.record("s", "m", 37, 0)
    exact = b.summary(exact=True)
    assert exact["session"]["cost_usd"] == Decimal("0.000037")
    assert exact["limits"]["session_cost_usd"]["remaining"] == Decimal("0.999963")
    assert exact["limits"]["day_tokens"]["remaining"] == 9_963
    manager = BudgetManager()
    manager.register(BudgetScope(name="u", max_cost_per_day_usd=2), RATES)
    manager.record("u", "s", "m", 37, 0)
    assert manager.summary("u", exact=True)["day"]["cost_usd"] == Decimal("0.000037")
    assert manager.all_summaries(exact=True)["u"]["limits"]["day_cost_usd"]["remaining"] == (
        Decimal("1.999963")
    )
    assert repr(manager.all_summaries()["u"]["day"]["cost_usd"]) == "0.000037"


def test_mypy_knows_the_shape(tmp_path):
    """A typo'd key, or a Decimal taken for a float, fails type checking."""
    api = pytest.importorskip("mypy.api")
    code = textwrap.dedent(
        """
        from decimal import Decimal
        from agent_budget import Budget, BudgetManager, BudgetScope

        b = Budget(BudgetScope(name="x"))
        ok_float: float = b.summary()["limits"]["day_tokens"]["remaining"]
        ok_exact: Decimal = b.summary(exact=True)["session"]["cost_usd"]
        ok_manager: float = BudgetManager().summary("x")["day"]["cost_usd"]
        typo = b.summary()["sesion"]
        wrong: Decimal = b.summary()["session"]["cost_usd"]
        """
    )
    target = tmp_path / "uses_summary.py"
    target.write_text(code, encoding="utf-8")
    out, _err, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(target),
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1, out
    assert len(errors) == 2, out
    assert '"sesion"' in errors[0]
    assert "Decimal" in errors[1]
