"""What is left of a budget: per limit, in tokens or exact dollars, net of in-flight holds."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from .money import nanos_to_decimal
from .scope import Limit, Metric
from .stores import Level
from .validate import check_session_id

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["LimitRemaining", "Remaining", "remaining_of"]


@dataclass(frozen=True)
class LimitRemaining:
    """One limit of one scope: its cap, what is committed and held, and what is left.

    Amounts are ``int`` tokens for token limits and exact ``Decimal`` USD for cost limits.
    ``remaining`` is never negative (usage can overshoot a cap; ``used`` shows by how much).
    """

    scope: str
    limit_type: str
    unit: Literal["tokens", "usd"]
    limit: int | Decimal
    used: int | Decimal
    reserved: int | Decimal
    remaining: int | Decimal
    hard: bool

    @property
    def pct_used(self) -> float:
        """Committed plus held, as a fraction of the cap."""
        if not self.limit:
            return 1.0
        return float((self.used + self.reserved) / self.limit)


@dataclass(frozen=True)
class Remaining(Sequence[LimitRemaining]):
    """Every limit that applies to a call of this budget (its own and its ancestors'),
    nearest scope first, with the tightest ones summarised in :attr:`tokens` and :attr:`usd`.
    """

    limits: tuple[LimitRemaining, ...]

    def __len__(self) -> int:
        return len(self.limits)

    def __getitem__(self, index: int) -> LimitRemaining:  # type: ignore[override]
        return self.limits[index]

    def __iter__(self) -> Iterator[LimitRemaining]:
        return iter(self.limits)

    @property
    def tokens(self) -> int | None:
        """Tokens left under the tightest hard token limit, or None when none applies."""
        values = [r.remaining for r in self.limits if r.unit == "tokens" and r.hard]
        return int(min(values)) if values else None

    @property
    def usd(self) -> Decimal | None:
        """USD left under the tightest hard cost limit, or None when none applies."""
        values = [Decimal(r.remaining) for r in self.limits if r.unit == "usd" and r.hard]
        return min(values) if values else None

    @property
    def tightest(self) -> LimitRemaining | None:
        """The hard limit closest to being used up (by fraction), or None."""
        hard = [r for r in self.limits if r.hard]
        return max(hard, key=lambda r: r.pct_used) if hard else None

    def get(self, limit_type: str, scope: str | None = None) -> LimitRemaining | None:
        """The entry for ``limit_type`` (of ``scope``, else the nearest scope having it)."""
        for entry in self.limits:
            if entry.limit_type == limit_type and (scope is None or entry.scope == scope):
                return entry
        return None


def _entry(scope: str, limit: Limit, level: Level, hard: bool) -> LimitRemaining:
    left = max(0, limit.amount - level.committed - level.reserved)
    if limit.unit == "usd":
        return LimitRemaining(
            scope,
            limit.limit_type,
            "usd",
            nanos_to_decimal(limit.amount),
            nanos_to_decimal(level.committed),
            nanos_to_decimal(level.reserved),
            nanos_to_decimal(left),
            hard,
        )
    return LimitRemaining(
        scope,
        limit.limit_type,
        "tokens",
        limit.amount,
        level.committed,
        level.reserved,
        left,
        hard,
    )


def remaining_of(budget: Budget, model: str | None = None, session_id: str = "") -> Remaining:
    """The limits of ``budget`` and its ancestors with what is left of each; with
    ``model``, per-model limits of other models are left out; with ``session_id``, the
    per-session limits of scopes that count sessions apart are that session's."""
    check_session_id(session_id)
    family = budget.rates.canonical(model) if model is not None else None
    out: list[LimitRemaining] = []
    for node in budget.chain:
        if not node.limits:
            continue
        counters = node.usage()
        apart = bool(session_id) and node.scope.per_session_id
        sessions = node.usage(session_id=session_id) if apart else counters
        hard = node.scope.hard_stop
        for limit in node.limits:
            parsed = Metric.parse_model(limit.metric)
            if family is not None and parsed is not None and parsed[0] != family:
                continue
            source = sessions if limit.per_session else counters
            out.append(_entry(node.name, limit, source.get(limit.metric, Level()), hard))
    return Remaining(tuple(out))
