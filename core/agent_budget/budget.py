"""Budget: enforces one scope (and its ancestors) over a store, with reservations.

The class keeps the reservation protocol (reserve, commit, release) and the hot path they
share; its async forms, its reads (prices, remaining, usage, summary, resets) and the
original API (check, record) are functions of :mod:`.budget_async`, :mod:`.budget_reads` and
:mod:`.budget_original`, bound here as methods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from . import (
    budget_async,
    budget_events,
    budget_original,
    budget_pricing,
    budget_reads,
    committing,
    reserving,
)
from .admission import notify_waiters
from .alerting import AlertCallback, Alerter, warn_thresholds
from .alerts import BudgetAlert
from .budget_events import MAKING, NO_LISTENERS
from .errors import (
    BudgetExceededError,
    StoreError,
    StorePermanentError,
    StoreUnavailableError,
)
from .lines import LinePlan, LineSpec, Mode, build_specs
from .outage import buffer_for, quarantine_alert
from .rates import ModelRates, RateTable
from .records import UsageRecord
from .refusals import refusal_error
from .reservation import Reservation, new_hold_id
from .reserving import check_ttl
from .ring import Ring
from .scope import BudgetScope, Limit
from .stores import Level, Line, Store, open_store
from .usage import Usage
from .validate import check_metadata, check_tokens, to_decimal

__all__ = ["Budget", "StoreErrorPolicy"]

log = logging.getLogger("agent_budget")

StoreErrorPolicy = Literal["fail_closed", "fail_open"]


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

    _made_from = ""  # the template prefix a BudgetManager made this scope from

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
        check_ttl("hold_ttl", hold_ttl)
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
        self._warn_at_pct = warn_thresholds(
            self._limits, to_decimal("alert_at_pct", scope.alert_at_pct)
        )
        self._max_alerts = max_alerts
        self._pending = buffer_for(self.store, max_pending)
        self._fresh_state(max_records)
        if save_definition:
            definition = scope.to_dict()
            definition["parent"] = parent.name if parent else None
            self._store_call(self.store.save_scope, scope.name, definition, quiet=True)

    def _fresh_state(self, max_records: int) -> None:
        """What each budget keeps of its own: plans of its lines, session epoch, recent
        records, and (made when first needed) its alerts and listeners."""
        self._line_plans: dict[tuple[str, str, bool], LinePlan] = {}
        self._session_epoch = 0  # last reset_session() here; per-id session lines carry it
        self._made_alerter: Alerter | None = None
        self._alert_hooks: tuple[AlertCallback, ...] = ()  # given to the alerter when made
        self._listeners = NO_LISTENERS  # replaced by its own at the first listener
        self._first_use: Callable[[Budget], None] | None = None  # set by a BudgetManager
        self._lock = threading.Lock()
        self._records: Ring[UsageRecord] = Ring(max_records)

    @property
    def _alerter(self) -> Alerter:
        """This scope's alert policy and recent alerts, made at first use."""
        alerter = self._made_alerter
        if alerter is None:
            with MAKING:
                alerter = self._made_alerter
                if alerter is None:
                    alerter = Alerter(self.name, self.clock, self._warn_at_pct, self._max_alerts)
                    alerter.add_callback(self._log_alert)
                    for hook in self._alert_hooks:
                        alerter.add_callback(hook)
                    self._made_alerter = alerter
        return alerter

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

    # -- alerts and listeners (in budget_events) ----------------------------------------------

    @property
    def alerts(self) -> list[BudgetAlert]:
        return self._alerter.alerts

    on_alert = budget_events.on_alert
    on_record = budget_events.on_record
    on_refusal = budget_events.on_refusal
    remove_listener = budget_events.remove_listener
    _own_listeners = budget_events.own_listeners
    _note_first_use = budget_events.note_first_use
    _log_alert = budget_events.log_alert
    _refused = budget_events.refused

    @property
    def _warn_at(self) -> dict[str, int]:
        return self._alerter.warn_at

    # -- lines and store access --------------------------------------------------------------

    _shapes: dict[tuple[str, str, bool], LinePlan] | None = None
    """Plans of a template's scopes without parents, shared by the clones of its prototype:
    a clone's plan is the shape rebound to it (see BudgetManager)."""

    def _line_plan(self, model: str, mode: Mode, session_id: str) -> LinePlan:
        """The lines of a call (see :mod:`agent_budget.lines`), built once per kind of call."""
        key = (model, mode, bool(session_id))
        plan = self._line_plans.get(key)
        if plan is None:
            shapes = self._shapes if self.parent is None else None
            shape = shapes.get(key) if shapes is not None else None
            if shape is not None:
                plan = shape.rebind(self)
            else:
                plan = LinePlan(build_specs(self._chain, model, mode, bool(session_id)))
                if shapes is not None and len(shapes) < 1024:
                    shapes[key] = plan
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

    def _flush_pending(
        self, *, answered: bool = False, outage: list[StoreError] | None = None
    ) -> int:
        """Replay what the store missed (``answered``: it just answered a call); returns how
        many operations it took (``outage``: see :meth:`PendingOps.flush`)."""
        alert = quarantine_alert(self._alerter)
        return self._pending.flush(
            self.store, self.clock(), alert, answered=answered, outage=outage
        )

    @property
    def pending_commits(self) -> int:
        """Commits buffered while the store was unreachable (shared by every Budget over
        this store, so dropping a Budget object loses none of them)."""
        return self._pending.commits

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
        error = reserving.refusal(self, plan, outcome, waited=wait)
        self._refused(error, plan.resolved.name, plan.session_id)
        raise error

    _new_hold_id = staticmethod(new_hold_id)
    _resolve = budget_pricing.resolve
    _unknown_model = budget_pricing.unknown_model
    _answered_model = budget_pricing.answered_model
    _plan = reserving.plan
    _commit = committing.commit_usage

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
        if estimated is not None and estimated.__class__ is not bool:
            raise TypeError(f"estimated must be a bool or None, got {estimated!r}")
        if metadata is not None:
            check_metadata("metadata", metadata)
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
        now = self.clock()
        try:
            freed = bool(self.store.release(reservation.id, now=now, group=self.group))
            notify_waiters(self.store)
            return freed
        except StorePermanentError:
            log.warning(
                "could not release hold %s; it expires on its own", reservation.id, exc_info=True
            )
            return False
        except StoreError:
            self._pending.add_release(reservation.id, self.group, now)
            log.warning(
                "could not release hold %s now; it is released once the store answers",
                reservation.id,
                exc_info=True,
            )
            return False

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
