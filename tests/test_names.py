"""Names and habits that used to mislead silently now say so: a template scope's unused name,
a reservation block left without a commit, and what BudgetManager.get() makes (in memory
only: reads never write to the store)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from agent_budget import Budget, BudgetManager, BudgetScope, BudgetWarning, ModelRates, Usage

RATES = {"m": ModelRates(input_per_1k=1, output_per_1k=2)}


# -- a template scope's name ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["user:", "user", "u"])
def test_a_template_named_after_its_prefix_is_quiet(name):
    mgr = BudgetManager()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mgr.add_template("user:", BudgetScope(name=name, max_tokens_per_day=10))
    assert mgr.get("user:42").name == "user:42"


def test_a_template_scope_name_that_is_not_used_warns():
    mgr = BudgetManager()
    with pytest.warns(BudgetWarning, match="name is not used") as caught:
        mgr.add_template("user:", BudgetScope(name="free-tier", max_tokens_per_day=10))
    (warning,) = caught
    assert warning.filename == __file__, "points at the caller's line"
    assert "'user:42'" in str(warning.message) and "Name it 'user:'" in str(warning.message)
    assert mgr.get("user:42").scope.max_tokens_per_day == 10  # the limits still apply


# -- a reservation block left without a commit ------------------------------------------------


def test_a_reserve_block_without_commit_warns_and_records_the_estimate():
    budget = Budget(BudgetScope(name="b", max_tokens_per_session=1_000), RATES)
    with pytest.warns(BudgetWarning, match=r"without commit\(\)") as caught:
        with budget.reserve("m", 10, 20):
            pass  # the provider's usage was never committed
    message = str(caught[0].message)
    assert "hold.commit(Usage(...))" in message and "hold.release()" in message
    assert caught[0].filename == __file__
    (record,) = budget.records
    assert (record.total_tokens, record.estimated) == (30, True)


def test_a_reserve_block_that_commits_or_releases_is_quiet():
    budget = Budget(BudgetScope(name="b", max_tokens_per_session=1_000), RATES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with budget.reserve("m", 10, 20) as hold:
            hold.commit(Usage(10, 5))
        with budget.reserve("m", 10, 20) as hold:
            hold.release()
        with pytest.raises(RuntimeError), budget.reserve("m", 10, 20):
            raise RuntimeError("provider down")  # released, not charged
    assert [r.total_tokens for r in budget.records] == [15]


def test_the_warning_comes_once_per_call_site():
    code = (
        "from agent_budget import Budget, BudgetScope\n"
        "b = Budget(BudgetScope(name='b', max_tokens_per_session=10**6))\n"
        "for _ in range(5):\n"
        "    with b.reserve('gpt-4o', 10, 10):\n"
        "        pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.count("without commit()") == 1


# -- BudgetManager.get() makes template scopes in memory only ------------------------------------


def _dump(db: Path) -> list[str]:
    """Every row of the SQLite file, read through a read-only connection."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.iterdump())


def test_get_and_summary_of_a_template_name_write_nothing_to_the_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    mgr = BudgetManager(store=url)
    mgr.register(BudgetScope(name="global", max_tokens_per_day=1_000))
    mgr.add_template("user:", BudgetScope(name="user:", max_tokens_per_day=100), parent="global")
    before = _dump(tmp_path / "budget.db")

    budget = mgr.get("user:42")  # made here, from the template
    assert budget is not None and budget.parent is not None
    assert mgr.summary("user:7")["day"]["tokens"] == 0
    assert "user:42" in mgr.scopes()  # this manager lists what it made
    assert mgr.get("nobody") is None  # no template: the original API's None
    assert _dump(tmp_path / "budget.db") == before, "reads and get() wrote to the store"
    mgr.close()

    other = BudgetManager(store=url)  # another process sees nothing of them
    assert other.scopes() == ["global"]
    other.close()
