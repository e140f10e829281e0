"""How a Budget reserves: one attempt at the store, clamping the output cap to what fits,
waiting (fairly) for in-flight holds, and the refusal that names what the call asked for.

Kept apart from :mod:`agent_budget.budget` so the Budget class holds the protocol and this
module the admission policy; the sync and async paths share every step but the waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .admission import Refused, largest_fitting_output, wait_queue_for
from .errors import BudgetExceededError, StoreError, StorePermanentError
from .outage import maybe_applied
from .rates import ModelRates, ResolvedModel
from .reservation import Reservation
from .scope import Limit
from .stores.base import check_text
from .validate import MAX_TOKENS, check_metadata, check_session_id, check_tokens, to_decimal

if TYPE_CHECKING:
    from .budget import Budget

__all__ = [
    "Plan",
    "Refused",
    "attempt",
    "check_ttl",
    "plan",
    "refusal",
    "wait_async",
    "wait_blocking",
]

_CLAMP_RETRIES = 3  # re-fits when other calls take budget between a refusal and the retry
_POLL_FIRST = 0.01
_POLL_MAX = 0.5


class Plan:
    """One validated reserve request (a plain slotted class: one is made per call)."""

    __slots__ = (
        "clamp",
        "floor",
        "input_tokens",
        "max_output_tokens",
        "metadata",
        "model",
        "output_from",
        "rates",
        "resolved",
        "session_id",
        "tier",
        "ttl",
    )

    def __init__(
        self,
        model: str,
        resolved: ResolvedModel,
        rates: ModelRates,
        tier: str | None,
        input_tokens: int,
        max_output_tokens: int,
        session_id: str,
        ttl: float,
        metadata: Mapping[str, Any] | None,
        clamp: bool,
        floor: int,
        output_from: str | None,
    ) -> None:
        self.model = model
        self.resolved = resolved
        self.rates = rates  # the prices in force for this call, in its service tier
        self.tier = tier
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.session_id = session_id
        self.ttl = ttl
        self.metadata = metadata
        self.clamp = clamp
        self.floor = floor
        self.output_from = output_from


def check_ttl(name: str, value: object) -> None:
    """A hold lifetime: a positive number of seconds, at most ten years."""
    dec = to_decimal(name, value, allow_zero=False)
    if dec > 10 * 365 * 86400:
        raise ValueError(f"{name} is unreasonably long: {value!r} seconds")


def plan(
    budget: Budget,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    session_id: str,
    ttl: float | None,
    metadata: Mapping[str, Any] | None,
    clamp: bool,
    min_output_tokens: int,
    wait: float,
    output_from: str | None,
    service_tier: str | None,
) -> Plan:
    """Validate a reserve request (changing nothing) and price its model."""
    if input_tokens.__class__ is not int or not 0 <= input_tokens <= MAX_TOKENS:
        check_tokens("input_tokens", input_tokens)
    if max_output_tokens.__class__ is not int or not 0 <= max_output_tokens <= MAX_TOKENS:
        check_tokens("max_output_tokens", max_output_tokens)
    if ttl is not None:
        check_ttl("ttl", ttl)
    if session_id.__class__ is not str or not session_id.isascii():
        check_session_id(session_id)
    # Everything the commit will need is checked now, so a commit cannot fail on input.
    if model.__class__ is not str or not model.isascii():
        check_text("model", model)
    if metadata is not None:
        check_metadata("metadata", metadata)
    if clamp is not False:
        if not isinstance(clamp, bool):
            raise TypeError(f"clamp must be a bool, got {clamp!r}")
        check_tokens("min_output_tokens", min_output_tokens)
        if min_output_tokens > max_output_tokens:
            raise ValueError(
                f"min_output_tokens ({min_output_tokens}) must not exceed "
                f"max_output_tokens ({max_output_tokens})"
            )
    if wait:
        dec = to_decimal("wait", wait)
        if dec > 86_400:
            raise ValueError(f"wait is unreasonably long: {wait!r} seconds")
    if output_from is not None and not isinstance(output_from, str):
        raise TypeError(f"output_from must be a str or None, got {output_from!r}")
    if service_tier is not None and not isinstance(service_tier, str):
        raise TypeError(f"service_tier must be a str, got {type(service_tier).__name__}")
    resolved = budget._resolve(model)
    tier = budget.rates.default_tier(service_tier)
    return Plan(
        model,
        resolved,
        resolved.quote(budget.clock(), tier).rates,
        tier,
        input_tokens,
        max_output_tokens,
        session_id,
        budget.hold_ttl if ttl is None else float(ttl),
        metadata,
        clamp,
        min_output_tokens if clamp else max_output_tokens,
        output_from,
    )


def _once(budget: Budget, plan: Plan, cap: int) -> Reservation | Refused:
    resolved = plan.resolved
    input_tokens = plan.input_tokens
    session_id = plan.session_id
    tokens = input_tokens + cap
    cost = plan.rates.worst_case_nanos(input_tokens, cap)
    now = budget.clock()
    reservation = Reservation(  # positional: a call with keywords costs twice as much
        budget,
        budget._new_hold_id(),
        resolved.name,
        plan.model,
        input_tokens,
        cap,
        tokens,
        cost,
        session_id,
        dict(plan.metadata) if plan.metadata else {},
        now,
        now + plan.ttl,
        False,
        plan.tier,
    )
    lines_plan = budget._line_plan(resolved.name, "hard", session_id)
    if not lines_plan.specs:
        return reservation
    if budget._pending:
        down: list[StoreError] = []
        budget._flush_pending(outage=down)
        if down:  # the replay just waited on a store that did not answer: not asked again
            return _admitted_unchecked(budget, reservation, down[0])
    fast = lines_plan.prepared(budget.store, session_id)
    if fast is not None and fast[0].hold_prepared(
        reservation.id, fast[1], (tokens, cost), lines_plan.periods(now), now=now, ttl=plan.ttl
    ):
        reservation.held = True
        return reservation
    # The general path (and the whole answer when the fast one did not hold).
    lines = lines_plan.lines(tokens, cost, session_id, now)
    retried = False
    while True:
        try:
            result = budget.store.reserve(
                reservation.id, lines, now=now, ttl=plan.ttl, group=budget.group
            )
        except StorePermanentError:
            raise
        except StoreError as exc:
            if maybe_applied(exc):  # it may hold budget after all: released once it answers
                budget._pending.add_release(reservation.id, budget.group, now)
            return _admitted_unchecked(budget, reservation, exc)
        # The store answers: replay what waits for it. A refusal is tried once more when
        # that replay freed something (a hold left by a reserve whose reply was lost).
        if retried or not budget._pending or not budget._flush_pending(answered=True):
            break
        if result.admitted:
            break
        retried = True
    if not result.admitted:
        assert result.refused_at is not None
        return Refused(tuple(lines), result.levels, result.refused_at, lines_plan.specs)
    reservation.held = True
    return reservation


def attempt(budget: Budget, plan: Plan) -> Reservation | Refused:
    """Reserve once; with ``plan.clamp``, retry with the largest output cap that fits."""
    outcome = _once(budget, plan, plan.max_output_tokens)
    if not plan.clamp:
        return outcome
    wanted = plan.max_output_tokens
    for _ in range(_CLAMP_RETRIES):
        if not isinstance(outcome, Refused) or wanted <= plan.floor:
            return outcome
        fitted = largest_fitting_output(
            plan.input_tokens,
            wanted - 1,
            plan.floor,
            plan.rates.worst_case_nanos,
            outcome.lines,
            outcome.levels,
        )
        if fitted is None:
            return outcome
        wanted = fitted
        outcome = _once(budget, plan, fitted)
    return outcome


def wait_blocking(
    budget: Budget, plan: Plan, refused: Refused, wait: float
) -> Reservation | Refused:
    """Retry a refused reserve as holds end, first come first served, for up to ``wait``
    seconds; gives up at once when the call would not fit even with every hold gone."""
    queue = wait_queue_for(budget.store, budget.name)
    ticket = queue.enter()
    deadline = time.monotonic() + wait
    delay = _POLL_FIRST
    outcome: Reservation | Refused = refused
    try:
        while isinstance(outcome, Refused) and outcome.waitable:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            queue.wait(ticket, min(delay, left))
            if not queue.is_next(ticket):
                continue
            outcome = attempt(budget, plan)
            delay = min(delay * 2, _POLL_MAX)
    finally:
        queue.leave(ticket)
    return outcome


async def wait_async(
    budget: Budget, plan: Plan, refused: Refused, wait: float
) -> Reservation | Refused:
    """:func:`wait_blocking` for async code: polls without blocking the event loop."""
    from .aio import off_loop

    queue = wait_queue_for(budget.store, budget.name)
    ticket = queue.enter()
    deadline = time.monotonic() + wait
    delay = _POLL_FIRST
    outcome: Reservation | Refused = refused
    try:
        while isinstance(outcome, Refused) and outcome.waitable:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(delay, left))
            if not queue.is_next(ticket):
                continue
            if budget.store.does_io:
                outcome = await off_loop(lambda: attempt(budget, plan), undo=_release_held)
            else:
                outcome = attempt(budget, plan)
            delay = min(delay * 2, _POLL_MAX)
    finally:
        queue.leave(ticket)
    return outcome


def _release_held(outcome: Reservation | Refused) -> None:
    if isinstance(outcome, Reservation):
        outcome.release()


def refusal(
    budget: Budget, plan: Plan, refused: Refused, *, waited: float = 0.0
) -> BudgetExceededError:
    """The error for a refused reserve, naming what the call asked for and what would help
    (``waited``: how long it already waited for calls in flight)."""
    source = plan.output_from or "max_output_tokens"
    detail = (
        f"the call asked for {plan.input_tokens} input tokens (estimated) + "
        f"{plan.max_output_tokens} output tokens ({source})"
    )
    fits = None
    if plan.max_output_tokens > 1:
        fits = largest_fitting_output(
            plan.input_tokens,
            plan.max_output_tokens - 1,
            1,
            plan.rates.worst_case_nanos,
            refused.lines,
            refused.levels,
        )
    spec = refused.specs[refused.index]
    if refused.waitable and waited:
        detail += (
            f"; it fits once the calls in flight end, which did not happen in the {waited:g} s "
            "it waited: retry later, or wait longer"
        )
    elif refused.waitable:
        detail += (
            "; it fits once the calls in flight end: retry then, or reserve with "
            "wait=seconds to wait for them"
        )
    elif fits is not None and plan.clamp:
        detail += (
            f"; clamping could not keep its floor of {plan.floor} output tokens (at most "
            f"{fits} fit now): lower min_output_tokens, or raise the limit"
        )
    elif fits is not None:
        detail += (
            f"; a smaller output cap (max_tokens <= {fits}) would fit now: set it on the "
            "model, or let clamping pick it (reserve(clamp=True), BudgetMiddleware, "
            "BudgetLLM, or the OpenAI Agents and pydantic-ai adapters' clamp=True)"
        )
    else:
        detail += f"; {_until(spec.target)}"
    return budget._refusal(spec, refused.line, refused.level, detail=detail)


def _until(limit: Limit | None) -> str:
    """When a used-up limit has room again, in words."""
    if limit is not None and limit.calendar is not None:
        return f"the limit is used up until its {limit.calendar[0]} ends, or it is raised"
    if limit is not None and limit.metric.startswith("session:"):
        return "the session's limit is used up: start a new session (reset_session()) or raise it"
    if limit is not None and limit.windowed:
        return "the limit is used up until usage leaves its window, or it is raised"
    return "the limit is used up until it is raised"


def _admitted_unchecked(budget: Budget, reservation: Reservation, exc: StoreError) -> Reservation:
    """The outage policy for a reserve the store could not answer: raise (fail_closed), or
    warn and admit the call unchecked (fail_open)."""
    budget._admit_despite_outage(exc, "admitting the call")
    budget._alerter.warn(
        f"budget store unavailable, call admitted unchecked: {exc}", "store_unavailable"
    )
    return reservation
