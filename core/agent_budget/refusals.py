"""The wording of budget errors: a refusal before a call, and a limit crossed by usage."""

from __future__ import annotations

from .alerting import format_amount
from .errors import BudgetExceededError
from .scope import Limit
from .stores import Level

__all__ = ["exceeded_error", "refusal_error"]


def refusal_error(
    scope: str,
    limit: Limit,
    level: Level,
    requested: int,
    *,
    detail: str = "",
    prospective: bool = False,
) -> BudgetExceededError:
    """The error for a call refused because ``requested`` more would cross ``limit``.

    ``detail`` says what the request was made of (input estimate, output hold) and how to
    fit it, when the caller knows. ``used`` is what is committed, or with ``prospective``
    (``check()``, as in the original API) the total the call would reach.
    """
    used = limit.to_user(level.committed)
    reserved = limit.to_user(level.reserved)
    wanted = limit.to_user(requested)
    cap = limit.to_user(limit.amount)
    total = limit.to_user(level.committed + level.reserved + requested)
    message = (
        f"budget {scope!r} refused the call: {limit.limit_type} would reach "
        f"{format_amount(total)} over the limit {format_amount(cap)} (used "
        f"{format_amount(used)}, reserved {format_amount(reserved)}, requested "
        f"{format_amount(wanted)})"
    )
    if detail:
        message = f"{message}; {detail}"
    if prospective:
        used = total
    return BudgetExceededError(
        message, scope, limit.limit_type, used, cap, reserved=reserved, requested=wanted
    )


def exceeded_error(scope: str, limit: Limit, level: Level, amount: int) -> BudgetExceededError:
    """The error for recorded usage (``amount``) that left ``limit`` exceeded; the record
    is kept."""
    used = limit.to_user(level.committed)
    cap = limit.to_user(limit.amount)
    message = (
        f"Budget EXCEEDED: {limit.limit_type} used={format_amount(used)} "
        f"limit={format_amount(cap)} in scope {scope!r}"
    )
    return BudgetExceededError(
        message,
        scope,
        limit.limit_type,
        used,
        cap,
        reserved=limit.to_user(level.reserved),
        requested=limit.to_user(amount),
    )
