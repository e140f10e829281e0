"""Budget: enforces one scope (and its ancestors) over a store, with reservations.

The class keeps the reservation protocol (reserve, commit, release) and the hot path they
share; its async forms, its reads (prices, remaining, usage, summary, resets) and the
original API (check, record) are functions of :mod:`.budget_async`, :mod:`.budget_reads` and
:mod:`.budget_original`, bound here as methods.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

from . import budget_async, budget_original, budget_reads, reserving
from .admission import notify_waiters
from .alerting import AlertCallback, Alerter, format_amount, warn_thresholds
from .alerts import BudgetAlert
from .errors import BudgetExceededError, BudgetWarning, StoreError, StoreUnavailableError
from .events import (
    Listeners,
    RecordEvent,
    RecordListener,
    RefusalEvent,
    RefusalListener,
    alert_event,
    refusal_event,
)
from .lines import LinePlan, LineSpec, Mode, build_specs
from .pending import PendingCommit, pending_for
from .rates import ModelRates, RateTable, ResolvedModel
from .records import UsageRecord
from .refusals import refusal_error
from .reservation import Reservation
from .scope import BudgetScope, Limit
from .stores import Level, Line, Store, open_store
from .usage import Usage
from .validate import MAX_TOKENS, check_tokens, to_decimal

__all__ = ["Budget", "StoreErrorPolicy"]

log = logging.getLogger("agent_budget")

StoreErrorPolicy = Literal["fail_closed", "fail_open"]


class _HoldIds:
    """Unique hold ids without uuid4's cost: a random per-process prefix and a counter.

    A forked child takes a new prefix at once (``os.register_at_fork``), so ids never
    collide across processes; a spawned one imports this module afresh."""

    def __init__(self) -> None:
        self._fresh()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._fresh)

    def _fresh(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):x}"


_new_hold_id = _HoldIds()


class Budget:
    """Enforces one :class:`BudgetScope`: refuses calls before they run, records what they used.

    State lives in ``store`` (a :class:`Store`, a URL such as ``sqlite:///b.db``, or None for a
    private in-memory store), so several Budget objects, threads or processes over one store
    share one budget. ``parent`` chains budgets (conversation -> user -> global): a call must
    fit every ancestor and is reserved in all of them atomically.

    ``clock`` returns wall-clock seconds (injectable for tests); ``hold_ttl`` is how long a
    reservation holds budget if it is never committed or released; ``on_store_error`` picks
    what a store outage does to a new call: refuse it (``"fail_closed"``, the default when
    ``hard_stop`` is on) or admit it and log (``"fail_open"``).
    """

    def __init__(
        self,
        scope: BudgetScope,
        rates: Mapping[str, ModelRates] | RateTable | None = None,
        *,
        store: Store | str | None = None,
        parent: Budget | None = None,
        clock: Callable[[], float] = time.time,
        hold_ttl: float = 600.0,
        on_store_error: StoreErrorPolicy | None = None,
        max_records: int = 10_000,
        max_alerts: int = 1_000,
        max_pending: int = 10_000,
        save_definition: bool = True,
    ) -> None:
        if not isinstance(scope, BudgetScope):
            raise TypeError(f"scope must be a BudgetScope, got {type(scope).__name__}")
        if parent is not None and not isinstance(parent, Budget):
            raise TypeError(f"parent must be a Budget, got {type(parent).__name__}")
        _check_ttl("hold_ttl", hold_ttl)
        if on_store_error not in (None, "fail_closed", "fail_open"):
            raise ValueError(
                f"on_store_error must be 'fail_closed' or 'fail_open', not {on_store_error!r}"
            )
        for name, value in (
            ("max_records", max_records),
            ("max_alerts", max_alerts),
            ("max_pending", max_pending),
        ):
            check_tokens(name, value)
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self._scope = scope
        self.rates = rates if isinstance(rates, RateTable) else RateTable(rates)
        self.store: Store = (
            open_store(store) if parent is None or store is not None else parent.store
        )
        self.parent = parent
        self._check_chain()
        self._chain: tuple[Budget, ...] = (self, *(parent._chain if parent else ()))
        self._group = self._chain[-1].name
        self.clock = clock
        self.hold_ttl = float(hold_ttl)
        self.on_store_error: StoreErrorPolicy = on_store_error or (
            "fail_closed" if scope.hard_stop else "fail_open"
        )
        self._limits: tuple[Limit, ...] = scope.limits(self.rates.canonical)
        self._by_metric: dict[str, Limit] = {lim.metric: lim for lim in self._limits}
        self._line_plans: dict[tuple[str, str, bool], LinePlan] = {}
        self._session_epoch = 0  # last reset_session() here; per-id session lines carry it
        self._alerter = Alerter(
            scope.name,
            clock,
            warn_thresholds(self._limits, to_decimal("alert_at_pct", scope.alert_at_pct)),
            max_alerts,
        )
        self._listeners = Listeners()
        self._first_use: Callable[[], None] | None = None  # set by a BudgetManager
        self._alerter.add_callback(self._log_alert)
        self._lock = threading.Lock()
        self._records: deque[UsageRecord] = deque(maxlen=max_records)
        self._pending = pending_for(self.store, max_pending)
        if save_definition:
            definition = scope.to_dict()
            definition["parent"] = parent.name if parent else None
            self._store_call(self.store.save_scope, scope.name, definition, quiet=True)

    # -- identity ------------------------------------------------------------------------

    @property
    def scope(self) -> BudgetScope:
        return self._scope

    @property
    def name(self) -> str:
        return self._scope.name

    @property
    def chain(self) -> list[Budget]:
        """This budget and its ancestors, nearest first."""
        return list(self._chain)

    @property
    def group(self) -> str:
        """The root scope's name: every key of one tree shares it (one Redis Cluster slot)."""
        return self._group

    @property
    def limits(self) -> tuple[Limit, ...]:
        return self._limits

    def _check_chain(self) -> None:
        seen: set[str] = set()
        node: Budget | None = self
        while node is not None:
            if node.name in seen:
                raise ValueError(f"budget parents form a cycle through {node.name!r}")
            seen.add(node.name)
            if node.store is not self.store:
                raise ValueError("a budget and its parents must share one store")
            node = node.parent

    # -- alerts and listeners ---------------------------------------------------------------

    def on_alert(self, callback: AlertCallback) -> None:
        """Call ``callback(alert)`` on every alert of this scope; exceptions are logged."""
        self._alerter.add_callback(callback)

    @property
    def alerts(self) -> list[BudgetAlert]:
        return self._alerter.alerts

    def on_record(self, callback: RecordListener) -> None:
        """Call ``callback(RecordEvent)`` after each call of this scope is recorded (the
        record and when the call started); exceptions are logged."""
        self._listeners.add_record(callback)

    def on_refusal(self, callback: RefusalListener) -> None:
        """Call ``callback(RefusalEvent)`` when a call made on this scope is refused, by its
        own limits or an ancestor's; exceptions are logged."""
        self._listeners.add_refusal(callback)

    def remove_listener(self, callback: Callable[..., None]) -> bool:
        """Stop calling an ``on_record`` / ``on_refusal`` callback; True if it was there."""
        return self._listeners.remove(callback)

    def _note_first_use(self) -> None:
        """Tell the manager that made this scope that it has recorded usage (once)."""
        callback, self._first_use = self._first_use, None
        if callback is not None:
            callback()

    def _log_alert(self, alert: BudgetAlert) -> None:
        """Keep an alert in the store's events log (not an outage alert: the store is down)."""
        if alert.limit_type == "store_unavailable":
            return
        limit = next((lim for lim in self._limits if lim.limit_type == alert.limit_type), None)
        event = alert_event(alert, limit.unit if limit is not None else "")
        self._store_call(self.store.record_event, event, group=self.group, quiet=True)

    def _refused(self, error: BudgetExceededError, model: str, session_id: str) -> None:
        """Note a refusal in the store's events log (best effort) and tell the listeners."""
        unit = next(
            (
                lim.unit
                for budget in self._chain
                if budget.name == error.scope
                for lim in budget._limits
                if lim.limit_type == error.limit_type
            ),
            "",
        )
        event = RefusalEvent(error, self.name, model, session_id, unit, self.clock())
        self._store_call(
            self.store.record_event, refusal_event(event), group=self.group, quiet=True
        )
        if self._listeners.refusal:
            self._listeners.emit_refusal(event)

    @property
    def _warn_at(self) -> dict[str, int]:
        return self._alerter.warn_at

    # -- pricing ---------------------------------------------------------------------------

    def _resolve(self, model: str) -> ResolvedModel:
        """``model``'s price under the table's unknown-model policy: ``"raise"`` raises
        :class:`UnknownModelError`, ``"warn"`` warns once per model name and charges the
        fallback, ``"fallback"`` charges it silently."""
        resolved = self.rates.resolve(model)
        if not resolved.known:
            self._unknown_model(model, resolved)
        return resolved

    def _unknown_model(self, model: str, resolved: ResolvedModel) -> None:
        if self.rates.on_unknown == "fallback":
            return
        if not self.rates.first_unknown(model.strip().lower()):
            return
        rates = resolved.rates.per_million_dict()
        message = (
            f"model {model!r} has no known price; charging {resolved.how} "
            f"(${format_amount(float(rates['input']))} in / "
            f"${format_amount(float(rates['output']))} out per 1M "
            "tokens). Price it with rates=, aliases= or an overlay."
        )
        warnings.warn(message, BudgetWarning, stacklevel=4)
        self._alerter.warn(message, "unknown_model")

    # -- lines and store access --------------------------------------------------------------

    def _line_plan(self, model: str, mode: Mode, session_id: str) -> LinePlan:
        """The lines of a call (see :mod:`agent_budget.lines`), built once per kind of call."""
        key = (model, mode, bool(session_id))
        plan = self._line_plans.get(key)
        if plan is None:
            plan = LinePlan(build_specs(self._chain, model, mode, bool(session_id)))
            if len(self._line_plans) >= 1024:
                self._line_plans.clear()
            self._line_plans[key] = plan
        return plan

    def _refusal(
        self,
        spec: LineSpec,
        line: Line,
        level: Level,
        *,
        detail: str = "",
        prospective: bool = False,
    ) -> BudgetExceededError:
        """The error refusing a call at ``line`` (and its CRITICAL alert, once per crossing)."""
        budget, limit = spec.budget, spec.target
        assert limit is not None
        error = refusal_error(
            budget.name, limit, level, line.amount, detail=detail, prospective=prospective
        )
        budget._alerter.refused(limit.limit_type, str(error), error.used, error.limit)
        return error

    def _store_call(
        self, fn: Callable[..., Any], *args: Any, quiet: bool = False, **kwargs: Any
    ) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            if quiet:
                log.warning(
                    "budget store call %s failed", getattr(fn, "__name__", fn), exc_info=True
                )
                return None
            raise

    def _admit_despite_outage(self, exc: StoreError, what: str) -> None:
        """The outage policy for a new call: raise under fail_closed, else log and go on."""
        if self.on_store_error == "fail_closed":
            raise StoreUnavailableError(
                f"budget store unavailable, refusing the call (fail_closed): {exc}"
            ) from exc
        log.warning("budget store unavailable; %s (fail_open): %s", what, exc)

    def _flush_pending(self) -> None:
        self._pending.flush(self.store)

    @property
    def pending_commits(self) -> int:
        """Commits buffered while the store was unreachable (shared by every Budget over
        this store, so dropping a Budget object loses none of them)."""
        return len(self._pending)

    # -- the reservation protocol -----------------------------------------------------------

    def reserve(
        self,
        model: str,
        input_tokens: int,
        max_output_tokens: int = 0,
        *,
        session_id: str = "",
        ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        clamp: bool = False,
        min_output_tokens: int = 1,
        wait: float = 0.0,
        output_from: str | None = None,
        service_tier: str | None = None,
    ) -> Reservation:
        """Hold the worst-case cost of a call in this scope and every ancestor, atomically.

        Raises :class:`BudgetExceededError` (nothing held, nothing recorded) when
        committed + reserved + this estimate would cross any hard limit.

        ``clamp=True`` admits the call with the largest output cap up to
        ``max_output_tokens`` that fits every limit (``reservation.max_output_tokens``; pass
        it on to the provider), refusing only below ``min_output_tokens``. ``wait`` (seconds)
        waits, first come first served, for calls in flight to end instead of refusing at
        once; a call that could not fit even with every hold gone is refused at once.
        ``output_from`` says where the output cap came from, for the refusal message.
        ``service_tier`` is the tier the request asks for (``"flex"``, ``"priority"``,
        ``"batch"``); the hold is priced in it, else in the rate table's default tier.
        """
        plan = self._plan(
            model,
            input_tokens,
            max_output_tokens,
            session_id,
            ttl,
            metadata,
            clamp,
            min_output_tokens,
            wait,
            output_from,
            service_tier,
        )
        outcome = reserving.attempt(self, plan)
        if isinstance(outcome, Reservation):
            return outcome
        assert isinstance(outcome, reserving.Refused)
        if wait and outcome.waitable:
            waited = reserving.wait_blocking(self, plan, outcome, wait)
            if isinstance(waited, Reservation):
                return waited
            outcome = waited
        error = reserving.refusal(self, plan, outcome)
        self._refused(error, plan.resolved.name, plan.session_id)
        raise error

    def _plan(
        self,
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
    ) -> reserving.Plan:
        """Validate a reserve request (changing nothing) and price its model."""
        if input_tokens.__class__ is not int or not 0 <= input_tokens <= MAX_TOKENS:
            check_tokens("input_tokens", input_tokens)
        if max_output_tokens.__class__ is not int or not 0 <= max_output_tokens <= MAX_TOKENS:
            check_tokens("max_output_tokens", max_output_tokens)
        if ttl is not None:
            _check_ttl("ttl", ttl)
        if session_id.__class__ is not str:
            raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
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
        resolved = self._resolve(model)
        tier = self.rates.default_tier(service_tier)
        return reserving.Plan(
            model,
            resolved,
            resolved.quote(self.clock(), tier).rates,
            tier,
            input_tokens,
            max_output_tokens,
            session_id,
            self.hold_ttl if ttl is None else float(ttl),
            metadata,
            clamp,
            min_output_tokens if clamp else max_output_tokens,
            output_from,
        )

    _new_hold_id = staticmethod(_new_hold_id)

    def commit(
        self,
        reservation: Reservation,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        estimated: bool | None = None,
    ) -> UsageRecord:
        """Record what the call really used and free its hold; never raises for limits.

        ``usage=None`` records the reservation's estimate, marked ``estimated``; pass
        ``estimated=True`` with a usage that was itself reconstructed (a stream cut short).
        ``model`` is the model that actually answered, when the provider reports one.
        Repeated commits return the first record.
        """
        if not isinstance(reservation, Reservation) or reservation.budget is not self:
            raise TypeError("commit needs a Reservation made by this budget")
        if usage is not None and usage.__class__ is not Usage and not isinstance(usage, Usage):
            raise TypeError(f"usage must be a Usage, got {type(usage).__name__}")
        with reservation.lock:
            if reservation.record is not None:
                return reservation.record
            if estimated is None:
                estimated = usage is None
            if usage is None:
                usage = Usage(reservation.input_tokens, reservation.max_output_tokens)
            own = reservation.metadata
            meta = {**own, **metadata} if metadata else dict(own)
            record = self._commit(
                reservation.id,
                self._answered_model(model, reservation.requested_model),
                usage,
                usage.service_tier or reservation.service_tier,
                reservation.session_id,
                meta,
                estimated,
                reservation.created_at,
            )[0]
            reservation.record = record
            reservation.held = False
            reservation.state = "committed"
            return record

    def _answered_model(self, answered: str | None, requested: str) -> ResolvedModel:
        """The price of a commit: the model that answered when it is named, else the one
        reserved for. A commit records money already spent, so it never raises: an answer
        from a model with no price is charged the fallback (never silently the requested
        model's price, which may be far lower) and warned about unless the policy is
        ``"fallback"``."""
        if (
            not answered
            or answered == requested
            or not isinstance(answered, str)
            or not answered.strip()
        ):
            return self.rates.resolve(requested, on_unknown="fallback")
        resolved = self.rates.resolve(answered, on_unknown="fallback")
        if not resolved.known:
            self._unknown_model(answered, resolved)
        return resolved

    def release(self, reservation: Reservation) -> bool:
        """Free a reservation without spending (the call failed before it was billed)."""
        if not isinstance(reservation, Reservation) or reservation.budget is not self:
            raise TypeError("release needs a Reservation made by this budget")
        with reservation.lock:
            if reservation.state != "open":
                return False
            reservation.state = "released"
            if not reservation.held:
                return True
            reservation.held = False
        try:
            freed = bool(self.store.release(reservation.id, now=self.clock(), group=self.group))
            notify_waiters(self.store)
            return freed
        except StoreError:
            log.warning(
                "could not release hold %s; it expires on its own", reservation.id, exc_info=True
            )
            return False

    def _commit(
        self,
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
        if self._pending:
            self._flush_pending()
        totals: list[int] | None = None
        fast = plan.prepared(store, session_id)
        if fast is not None:
            totals = fast[0].commit_prepared(
                hold_id, fast[1], (tokens, cost), plan.periods(now), now=now, record=payload
            )
        if totals is None:
            lines = plan.lines(tokens, cost, session_id, now)
            try:
                result = store.commit(hold_id, lines, now=now, group=self.group, record=payload)
            except StoreError:
                self._pending.add(PendingCommit(hold_id, tuple(lines), now, self.group, payload))
                self._keep(record, started_at or now)
                return record, plan, None, tokens, cost
            totals = [result.levels[alert[0]][0] for alert in plan.alerts]
        with self._lock:
            self._records.append(record)
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

    def _keep(self, record: UsageRecord, started_at: float) -> None:
        """Keep a record the store could not take (it is buffered) and tell the listeners."""
        with self._lock:
            self._records.append(record)
        if self._listeners.record:
            self._listeners.emit_record(RecordEvent(record, started_at))

    # -- the async forms, the reads and the original API (each in its own module) ------------

    areserve = budget_async.areserve
    acommit = budget_async.acommit
    arelease = budget_async.arelease
    acheck = budget_async.acheck
    estimate = budget_reads.estimate
    estimate_exact = budget_reads.estimate_exact
    remaining = budget_reads.remaining
    usage = budget_reads.usage
    summary = budget_reads.summary
    reset_session = budget_reads.reset_session
    reset = budget_reads.reset
    check = budget_original.check
    record = budget_original.record

    @property
    def records(self) -> list[UsageRecord]:
        """The most recent records of this process (a ring of ``max_records``)."""
        with self._lock:
            return list(self._records)

    def __repr__(self) -> str:
        return f"Budget(scope={self.name!r}, store={type(self.store).__name__})"


def _check_ttl(name: str, value: object) -> None:
    dec = to_decimal(name, value, allow_zero=False)
    if dec > 10 * 365 * 86400:
        raise ValueError(f"{name} is unreasonably long: {value!r} seconds")
