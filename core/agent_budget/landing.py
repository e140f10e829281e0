"""How an agent lands when its budget runs out: the policy the agent integrations share.

An agent integration (LangChain's ``BudgetMiddleware``, LlamaIndex's ``BudgetLLM``)
clamps each model call's output cap to what fits, tries a cheaper fallback model when the
call does not fit, and otherwise ends the turn with a final message instead of raising;
it can also tell the model, in a short note, how much is left. This module holds the
options and the words; the integrations only translate them into their framework's
objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from .errors import BudgetExceededError
from .remaining import Remaining

__all__ = ["DEFAULT_FINAL_MESSAGE", "FinalMessage", "Landing"]

DEFAULT_FINAL_MESSAGE = (
    "I have to stop here: the budget for this conversation is used up ({limit_type} of "
    "scope {scope!r}). Please try again later, or ask for the limit to be raised."
)
"""The default final message; ``{limit_type}``, ``{scope}``, ``{used}`` and ``{limit}`` are
filled in from the refusal."""

FinalMessage = str | Callable[[BudgetExceededError], Any]
"""A text (formatted with the refusal's fields) or a function of the refusal."""

_NOTE = (
    "Budget note: about {left} left before the {limit_type} limit of scope {scope!r} is "
    "reached ({pct:.0%} used). Keep the remaining work short and finish the task."
)


@dataclass(frozen=True)
class Landing:
    """The landing options of an agent integration, validated.

    ``clamp`` lowers each call's output cap to what fits, down to ``min_output_tokens``;
    ``final_message`` ends the turn when nothing fits, unless ``on_exhausted="raise"``;
    ``note_below`` (a fraction, e.g. ``0.2``) adds a note with what is left once the
    tightest hard limit has less than that fraction left.
    """

    clamp: bool = True
    min_output_tokens: int = 64
    final_message: FinalMessage = DEFAULT_FINAL_MESSAGE
    on_exhausted: Literal["finish", "raise"] = "finish"
    note_below: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.clamp, bool):
            raise TypeError(f"clamp must be a bool, got {self.clamp!r}")
        if self.on_exhausted not in ("finish", "raise"):
            raise ValueError(f"on_exhausted must be 'finish' or 'raise', not {self.on_exhausted!r}")
        if not isinstance(self.final_message, str) and not callable(self.final_message):
            raise TypeError("final_message must be a str or a callable")
        note = self.note_below
        if note is not None and (
            isinstance(note, bool) or not isinstance(note, (int, float)) or not 0 < note <= 1
        ):
            raise ValueError(f"note_below must be a fraction in (0, 1], got {note!r}")
        floor = self.min_output_tokens
        if isinstance(floor, bool) or not isinstance(floor, int):
            raise TypeError(f"min_output_tokens must be an int, got {floor!r}")
        if floor < 1:
            raise ValueError(f"min_output_tokens must be at least 1, got {floor}")

    @property
    def floor(self) -> int | None:
        """The ``min_output_tokens`` to reserve with, or None when clamping is off."""
        return self.min_output_tokens if self.clamp else None

    def note(self, left: Remaining | None) -> str | None:
        """The note for the model, or None when enough is left (or notes are off)."""
        tightest = left.tightest if left is not None else None
        if self.note_below is None or tightest is None or not tightest.limit:
            return None
        if 1 - tightest.pct_used >= self.note_below:
            return None
        if tightest.unit == "usd":
            amount = f"${Decimal(tightest.remaining):.6f}".rstrip("0").rstrip(".")
        else:
            amount = f"{tightest.remaining} tokens"
        return _NOTE.format(
            left=amount,
            limit_type=tightest.limit_type,
            scope=tightest.scope,
            pct=min(tightest.pct_used, 1.0),
        )

    def final(self, refusal: BudgetExceededError) -> Any:
        """The final message for ``refusal`` (a text, or what ``final_message`` made of it);
        raises the refusal itself under ``on_exhausted="raise"``."""
        if self.on_exhausted == "raise":
            raise refusal
        made = self.final_message
        if callable(made):
            return made(refusal)
        return made.format(
            limit_type=refusal.limit_type,
            scope=refusal.scope,
            used=refusal.used,
            limit=refusal.limit,
        )

    @staticmethod
    def marker(refusal: BudgetExceededError) -> dict[str, Any]:
        """What a final message carries in its metadata (``"agent_budget"``), so apps and
        the agent's own tool-call parsing can tell it apart."""
        return {"exhausted": True, "scope": refusal.scope, "limit_type": refusal.limit_type}
