from __future__ import annotations

import hypothesis  # noqa: F401 - imported now, see below
import pytest

from .clock import FakeClock

pytest_plugins = ["tests.store_fixtures"]

# hypothesis's pytest plugin imports the package lazily in its terminal summary; under
# CPython 3.11.7, an ast.parse (assertion rewriting) that late can hit "AST constructor
# recursion depth mismatch" after threads formatted tracebacks. Importing it up front keeps
# parsing to collection time.


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _fresh_no_usage_warnings() -> None:
    """The no-usage warning is given once per process, framework and model: each test
    starts as a new process would."""
    from agent_budget import calls

    calls._WARNED.clear()
