"""The original agent-budget API under its original module name.

Code written for the original package imports ``from agent_budget.core import ...``; the
names are the same objects as ``agent_budget``'s (``agent_budget.Budget is
agent_budget.core.Budget``). Every other public name of ``agent_budget`` is importable from
here too, so code mixing the two spellings keeps working.
"""

from __future__ import annotations

from typing import Any

from .alerts import AlertLevel, BudgetAlert
from .budget import Budget
from .errors import BudgetExceededError, BudgetWarning
from .manager import BudgetManager
from .rates import ModelRates
from .records import UsageRecord
from .scope import BudgetScope

__all__ = [
    "AlertLevel",
    "Budget",
    "BudgetAlert",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetScope",
    "BudgetWarning",
    "ModelRates",
    "UsageRecord",
]


def __getattr__(name: str) -> Any:
    import agent_budget

    if name in agent_budget.__all__:
        return getattr(agent_budget, name)
    raise AttributeError(f"module 'agent_budget.core' has no attribute {name!r}")
