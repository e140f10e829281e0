"""Reservation: budget held for one call between its start and its end."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .records import UsageRecord
from .usage import Usage

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["Reservation"]


@dataclass(eq=False)
class Reservation:
    """A hold on a budget for one call's worst case, made by :meth:`Budget.reserve`.

    End it with :meth:`commit` (the call ran; record actual usage) or :meth:`release` (it did
    not run). Used as a context manager it releases on an exception and, if the block ends
    without a commit, commits the estimate (marked ``estimated``), since a call that ran
    was paid for. A hold never ended expires after the budget's ``hold_ttl``.
    """

    budget: Budget = field(repr=False)
    id: str
    model: str
    requested_model: str
    input_tokens: int
    max_output_tokens: int
    tokens: int
    cost_nanos: int
    session_id: str
    metadata: dict[str, Any]
    created_at: float
    expires_at: float
    held: bool
    state: Literal["open", "committed", "released"] = "open"
    record: UsageRecord | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cost_usd(self) -> float:
        return self.cost_nanos / 1_000_000_000

    def commit(
        self,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
        estimated: bool | None = None,
    ) -> UsageRecord:
        """Record the call's actual usage (see :meth:`Budget.commit`)."""
        return self.budget.commit(self, usage, model=model, metadata=metadata, estimated=estimated)

    def release(self) -> bool:
        """Free the hold without spending (see :meth:`Budget.release`)."""
        return self.budget.release(self)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.state != "open":
            return
        if exc_type is None:
            self.commit()
        else:
            self.release()
