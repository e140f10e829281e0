"""Exact money: integer nano-dollars inside, Decimal or rounded float at the edges.

One nano-dollar is 1e-9 USD; int64 holds about $9.2e9 and a double (Lua, JSON) is exact to
about $9e6 per counter. Per-call costs are rounded *up* to the next nano-dollar so a budget
never under-counts.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from .validate import to_decimal

__all__ = [
    "NANOS_PER_USD",
    "decimal_usd_to_nanos",
    "nanos_to_decimal",
    "nanos_to_float",
    "usd_to_nanos",
]

NANOS_PER_USD = 1_000_000_000
_NANOS = Decimal(NANOS_PER_USD)


def usd_to_nanos(value: object, field: str = "amount") -> int:
    """Convert a USD amount (int, float, str, Decimal) to whole nano-dollars, rounding up."""
    dec = to_decimal(field, value)
    return int((dec * _NANOS).to_integral_value(rounding=ROUND_CEILING))


def decimal_usd_to_nanos(value: Decimal) -> int:
    """Round an exact Decimal USD amount up to whole nano-dollars."""
    return int((value * _NANOS).to_integral_value(rounding=ROUND_CEILING))


def nanos_to_decimal(nanos: int) -> Decimal:
    """Exact USD value of an integer nano-dollar amount."""
    return Decimal(nanos) / _NANOS


def nanos_to_float(nanos: int, places: int = 6) -> float:
    """USD as a float rounded to ``places`` decimals, for summaries and compatibility."""
    return round(float(nanos_to_decimal(nanos)), places)
