"""Recording one call's usage: price it, keep its record, add it to every counter of the
budget's chain (through the store's prepared lines when it has them), alert on thresholds
crossed, tell the listeners. Shared by :meth:`Budget.commit` and :meth:`Budget.record`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .admission import notify_waiters
from .errors import StoreError, StorePermanentError, StoreTransientError
from .events import RecordEvent
from .lines import LinePlan
from .locking import wait_for
from .outage import quarantine_alert
from .rates import ResolvedModel
from .records import UsageRecord, record_payload
from .usage import Usage

if TYPE_CHECKING:
    from .budget import Budget

__all__ = ["commit_usage"]


def commit_usage(
    self: Budget,
    hold_id: str,
    resolved: ResolvedModel,
    usage: Usage,
    tier: str | None,
    session_id: str,
    metadata: dict[str, Any],
    estimated: bool,
    started_at: float | None = None,
) -> tuple[UsageRecord, LinePlan, list[int] | None, int, int]:
    """Record usage priced as ``resolved`` in service ``tier`` at the budget's clock.

    Returns the record, the plan of its lines, the committed totals after the commit of
    the lines that alert (``plan.alerts``; None when the store was down and the commit
    was buffered), and the call's tokens and nano-USD.
    """
    now = self.clock()
    quote = resolved.quote(now, tier)
    rates = quote.rates
    cost = rates.cost_nanos(usage)
    price_tier = quote.tier
    if rates.long_context is not None:
        above = rates.tier_label(usage.input_tokens)
        if above:
            price_tier = f"{price_tier}, {above}"
    # Positional: a dataclass call with keywords costs three times as much.
    record = UsageRecord(
        session_id,
        resolved.name,
        usage.input_tokens,
        usage.output_tokens,
        cost / 1_000_000_000,  # int / int rounds correctly, as float(Decimal) does
        now,
        metadata,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        cost,
        estimated,
        self._scope.name,
        hold_id,
        usage.cache_write_1h_tokens,
        usage.web_searches,
        resolved.source,
        resolved.source_date,
        resolved.price_id,
        price_tier,
    )
    tokens = usage.input_tokens + usage.output_tokens
    plan = self._line_plan(resolved.name, "all", session_id)
    store = self.store
    payload = store.ledger_entry(record) if store.keeps_ledger else None
    down: list[StoreError] = []
    if self._pending:
        self._flush_pending(outage=down)
    totals: list[int] | None = None
    fast = plan.prepared(store, session_id)
    if fast is not None:
        totals = fast[0].commit_prepared(
            hold_id, fast[1], (tokens, cost), plan.periods(now), now=now, record=payload
        )
    if totals is None:
        lines = plan.lines(tokens, cost, session_id, now)
        try:
            if down:  # the replay just waited on a store that did not answer: not sent again
                raise StoreTransientError(
                    f"not sent, the store did not answer just before: {down[0]}",
                    maybe_applied=False,
                )
            result = store.commit(hold_id, lines, now=now, group=self.group, record=payload)
        except StoreError as exc:
            if isinstance(exc, StorePermanentError):  # never storable: quarantined, alerted
                self._pending.reject_commit(
                    hold_id, lines, now, self.group, _spoolable(payload), error=exc,
                    alert=quarantine_alert(self._alerter),
                )  # fmt: skip
            else:  # kept (spooled) for replay
                self._pending.add_commit(
                    hold_id, lines, now, self.group, _spoolable(payload), error=exc
                )
            _keep(self, record, started_at or now)
            return record, plan, None, tokens, cost
        if self._pending:  # the store answers: replay what waits for it
            self._flush_pending(answered=True)
        totals = [result.levels[alert[0]][0] for alert in plan.alerts]
    lock = self._lock
    if not lock.acquire(False):
        wait_for(lock)
    try:
        self._records.append(record)
    finally:
        lock.release()
    notify_waiters(store)
    for node in self._chain:
        if node._first_use is not None:
            node._note_first_use()
    for (_, spec, threshold, alerter, fired), total in zip(plan.alerts, totals, strict=True):
        # Below its warning threshold, with nothing fired to re-arm, a line cannot alert.
        if total >= threshold or fired:
            assert spec.target is not None
            alerter.after_commit(spec.target, total, cost if spec.is_cost else tokens)
    if self._listeners.record:
        self._listeners.emit_record(RecordEvent(record, started_at or now))
    return record, plan, totals, tokens, cost


def _spoolable(payload: Any) -> dict[str, Any] | None:
    """A ledger entry as the outage spool keeps it (JSON): a store that keeps records as
    objects (MemoryStore) gets the record's payload."""
    if payload is None or isinstance(payload, dict):
        return payload
    return record_payload(payload) if isinstance(payload, UsageRecord) else dict(payload)


def _keep(self: Budget, record: UsageRecord, started_at: float) -> None:
    """Keep a record the store could not take (it is buffered) and tell the listeners."""
    with self._lock:
        self._records.append(record)
    if self._listeners.record:
        self._listeners.emit_record(RecordEvent(record, started_at))
