"""Reservation: budget held for one call between its start and its end."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from .errors import BudgetWarning
from .records import UsageRecord
from .usage import Usage

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["Reservation"]


class Reservation:
    """A hold on a budget for one call's worst case, made by :meth:`Budget.reserve`.

    End it with :meth:`commit` (the call ran; record actual usage) or :meth:`release` (it did
    not run). Used as a context manager it releases on an exception and, if the block ends
    without a commit, commits the estimate (marked ``estimated``), since a call that ran
    was paid for, with a :class:`BudgetWarning` (once per call site) saying so. A hold
    never ended expires after the budget's ``hold_ttl``.

    ``tokens`` and ``cost_nanos`` are the held worst case; ``held`` is False when nothing was
    held in the store (no hard limit applied, or the store was down and the budget fails
    open). A plain slotted class: one is made per call.
    """

    __slots__ = (
        "__weakref__",
        "budget",
        "cost_nanos",
        "created_at",
        "expires_at",
        "held",
        "id",
        "input_tokens",
        "lock",
        "max_output_tokens",
        "metadata",
        "model",
        "record",
        "requested_model",
        "service_tier",
        "session_id",
        "state",
        "tokens",
    )

    def __init__(
        self,
        *,
        budget: Budget,
        id: str,
        model: str,
        requested_model: str,
        input_tokens: int,
        max_output_tokens: int,
        tokens: int,
        cost_nanos: int,
        session_id: str,
        metadata: dict[str, Any],
        created_at: float,
        expires_at: float,
        held: bool,
        service_tier: str | None = None,
    ) -> None:
        self.budget = budget
        self.id = id
        self.model = model
        self.requested_model = requested_model
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.tokens = tokens
        self.cost_nanos = cost_nanos
        self.session_id = session_id
        self.metadata = metadata
        self.created_at = created_at
        self.expires_at = expires_at
        self.held = held
        self.service_tier = service_tier  # the tier the request asked for, when it said
        self.state: Literal["open", "committed", "released"] = "open"
        self.record: UsageRecord | None = None
        self.lock = threading.Lock()

    @property
    def cost_usd(self) -> float:
        return self.cost_nanos / 1_000_000_000

    def commit(
        self,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
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
            warnings.warn(
                "a `with budget.reserve(...)` block ended without commit(): its worst case "
                "(every input token plus max_output_tokens) was recorded, marked estimated. "
                "Call hold.commit(Usage(...)) with the provider's usage inside the block, or "
                "hold.release() when the call did not run.",
                BudgetWarning,
                stacklevel=2,
            )
            self.commit()
        else:
            self.release()

    def __repr__(self) -> str:
        return (
            f"Reservation(id={self.id!r}, scope={self.budget.name!r}, model={self.model!r}, "
            f"tokens={self.tokens}, cost_usd={self.cost_usd:.9f}, state={self.state!r}, "
            f"held={self.held})"
        )
