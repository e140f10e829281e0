from __future__ import annotations

import pytest

from .clock import FakeClock

pytest_plugins = ["tests.store_fixtures"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
