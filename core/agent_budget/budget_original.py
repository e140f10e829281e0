"""The original API of a :class:`~agent_budget.Budget`: ``check()`` before a call and
``record()`` after it, with the alerts and errors the original library gave."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import BudgetExceededError, StoreError, StorePermanentError
from .records import UsageRecord
from .refusals import exceeded_error
from .stores import Level
from .stores.base import check_text, session_scope
from .usage import Usage
from .validate import check_metadata, check_session_id, check_tokens

if TYPE_CHECKING:
    from .budget import Budget
    from .lines import LineSpec

__all__ = ["check", "record"]


def check(
    self: Budget, model: str, input_tokens: int, output_tokens: int = 0, *, session_id: str = ""
) -> None:
    """Raise :class:`BudgetExceededError` if a call of this size would cross a hard
    limit now (counting other calls' holds). Records and holds nothing.

    As in the original API, the error's ``used`` is the total the call would reach
    (``requested`` and ``reserved`` say what it is made of), and the prospective total
    alerts: WARNING from ``alert_at_pct``, CRITICAL above a soft (``hard_stop=False``)
    limit, once per crossing."""
    check_session_id(session_id)
    check_tokens("input_tokens", input_tokens)
    check_tokens("output_tokens", output_tokens)
    resolved = self._resolve(model)
    now = self.clock()
    quote = resolved.quote(now, self.rates.default_tier(None))
    cost = quote.rates.cost_nanos(Usage(input_tokens, output_tokens))
    tokens = input_tokens + output_tokens
    plan = self._line_plan(resolved.name, "limited", session_id)
    if not plan.specs:
        return
    fast = plan.prepared(self.store, session_id)
    if fast is not None:
        totals = fast[0].check_prepared(fast[1], (tokens, cost), plan.periods(now), now=now)
        if totals is not None:  # every line fits: only the WARNING thresholds to look at
            for (_, spec, *_), total in zip(plan.alerts, totals, strict=True):
                assert spec.target is not None
                if total >= spec.budget._alerter.warn_at[spec.target.limit_type]:
                    spec.budget._alerter.prospective(spec.target, total)
            return
    lines = plan.lines(tokens, cost, session_id, now)
    try:
        result = self.store.reserve(
            "check", lines, now=now, ttl=self.hold_ttl, group=self.group, dry_run=True
        )
    except StorePermanentError:
        raise
    except StoreError as exc:
        self._admit_despite_outage(exc, "check admits the call")
        return
    error: BudgetExceededError | None = None
    for spec, line, level in zip(plan.specs, lines, result.levels, strict=True):
        assert line.limit is not None
        total = level.committed + level.reserved + line.amount
        limit = spec.target
        assert limit is not None
        if total > line.limit and spec.budget._scope.hard_stop:
            if error is None:  # the first hard limit crossed refuses (and alerts)
                error = self._refusal(spec, line, level, prospective=True)
        else:
            spec.budget._alerter.prospective(limit, total)
    if error is not None:
        self._refused(error, resolved.name, "")
        raise error


def record(
    self: Budget,
    session_id: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    metadata: Mapping[str, Any] | None = None,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    web_searches: int = 0,
    service_tier: str | None = None,
) -> UsageRecord:
    """Record usage that already happened, then raise if a hard limit is now exceeded.

    The record is kept whatever happens; the raise only tells the caller to stop. A
    model with no price raises :class:`UnknownModelError` first (nothing recorded)
    under ``on_unknown="raise"``.
    """
    check_session_id(session_id)
    check_text("model", model)
    if metadata is not None:
        check_metadata("metadata", metadata)
    usage = Usage(
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
        cache_write_1h_tokens,
        web_searches,
        service_tier,
    )
    record, plan, totals, tokens, cost = self._commit(
        self._new_hold_id(),
        self._resolve(model),
        usage,
        self.rates.default_tier(service_tier),
        session_id,
        dict(metadata) if metadata else {},
        False,
    )
    if totals is not None:
        for (_, spec, *_), total in zip(plan.alerts, totals, strict=True):
            limit = spec.target
            if limit is None or not spec.budget._scope.hard_stop:
                continue
            if total > limit.amount:
                level = Level(total, _held(self, spec, session_id))
                amount = cost if spec.is_cost else tokens
                raise exceeded_error(spec.budget.name, limit, level, amount)
    return record


def _held(budget: Budget, spec: LineSpec, session_id: str) -> int:
    """What calls in flight hold on ``spec``'s counter now (for the error's message)."""
    scope = session_scope(spec.budget.name, session_id) if spec.per_session else spec.budget.name
    try:
        found = budget.store.read(scope, now=budget.clock(), group=budget.group).get(spec.metric)
    except StoreError:
        return 0
    return found.reserved if found is not None else 0
