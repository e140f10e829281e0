"""Budget: enforces one scope (and its ancestors) over a store, with reservations."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, overload

from . import reserving
from .admission import Refused, notify_waiters
from .aio import off_loop
from .alerting import AlertCallback, Alerter, format_amount, warn_thresholds
from .alerts import BudgetAlert
from .errors import (
    BudgetExceededError,
    BudgetWarning,
    StoreError,
    StorePermanentError,
    StoreUnavailableError,
)
from .events import (
    Listeners,
    RecordEvent,
    RecordListener,
    RefusalEvent,
    RefusalListener,
    alert_event,
    refusal_event,
)
from .lines import LineSpec, Mode, build_specs, make_lines
from .outage import buffer_for, quarantine_alert
from .rates import ModelRates, RateTable, ResolvedModel
from .records import UsageRecord, record_payload
from .refusals import exceeded_error, refusal_error
from .remaining import Remaining, remaining_of
from .reservation import Reservation
from .scope import BudgetScope, Limit
from .stores import Level, Line, Store, open_store
from .stores.base import check_text, session_scope
from .summary import BudgetSummary, ExactBudgetSummary, summarize
from .usage import Usage
from .validate import MAX_TOKENS, check_metadata, check_tokens, to_decimal
from .windows import period_bounds

__all__ = ["Budget", "StoreErrorPolicy"]

log = logging.getLogger("agent_budget")

StoreErrorPolicy = Literal["fail_closed", "fail_open"]


class _HoldIds:
    """Unique hold ids without uuid4's cost: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._count = itertools.count()

    def __call__(self) -> str:
        pid = os.getpid()
        if pid != self._pid:  # a new process (fork): new prefix, so ids never collide
            self._prefix = os.urandom(8).hex()
            self._count = itertools.count()
            self._pid = pid
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
        self._line_specs: dict[tuple[str, str, bool], tuple[LineSpec, ...]] = {}
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
        self._pending = buffer_for(self.store, max_pending)
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

    # -- alerts ----------------------------------------------------------------------------

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

    def estimate(self, model: str, input_tokens: int, output_tokens: int = 0) -> float:
        """Cost in USD (float) of a call, without recording anything."""
        return float(self.estimate_exact(model, input_tokens, output_tokens))

    def estimate_exact(self, model: str, input_tokens: int, output_tokens: int = 0) -> Decimal:
        """Exact cost in USD of a call of this size, as :meth:`record` would charge it now
        (the unknown-model policy applies)."""
        check_tokens("input_tokens", input_tokens)
        check_tokens("output_tokens", output_tokens)
        quote = self._resolve(model).quote(self.clock())
        return quote.rates.cost(Usage(input_tokens, output_tokens))

    # -- lines -----------------------------------------------------------------------------

    def _lines(
        self, model: str, tokens: int, cost: int, mode: Mode, session_id: str, now: float
    ) -> tuple[list[Line], tuple[LineSpec, ...]]:
        """The lines of a call (see :mod:`agent_budget.lines`) and the specs behind them."""
        key = (model, mode, bool(session_id))
        specs = self._line_specs.get(key)
        if specs is None:
            specs = build_specs(self._chain, model, mode, bool(session_id))
            if len(self._line_specs) >= 1024:
                self._line_specs.clear()
            self._line_specs[key] = specs
        return make_lines(specs, tokens, cost, session_id, now), specs

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

    # -- store access ----------------------------------------------------------------------

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

    def _flush_pending(self, *, answered: bool = False) -> int:
        """Replay what the store missed (``answered``: it just answered a call); returns how
        many operations it took."""
        return self._pending.flush(
            self.store, self.clock(), quarantine_alert(self._alerter), answered=answered
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
        if wait and outcome.waitable:
            outcome = reserving.wait_blocking(self, plan, outcome, wait)
            if isinstance(outcome, Reservation):
                return outcome
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
        # Everything the commit will need is checked now, so a commit cannot fail on input.
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
        resolved = self._resolve(model)
        tier = self.rates.default_tier(service_tier)
        return reserving.Plan(
            model,
            resolved,
            resolved.quote(self.clock(), tier).rates,
            tier,
            input_tokens,
            max_output_tokens,
            session_id=session_id,
            ttl=self.hold_ttl if ttl is None else float(ttl),
            metadata=metadata,
            clamp=clamp,
            floor=min_output_tokens if clamp else max_output_tokens,
            output_from=output_from,
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
        if usage is not None and not isinstance(usage, Usage):
            raise TypeError(f"usage must be a Usage, got {type(usage).__name__}")
        if estimated is not None and not isinstance(estimated, bool):
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
            meta = {**reservation.metadata, **(metadata or {})}
            record, _lines, _specs, _levels = self._commit(
                reservation.id,
                self._answered_model(model, reservation.requested_model),
                usage,
                tier=usage.service_tier or reservation.service_tier,
                session_id=reservation.session_id,
                metadata=meta,
                estimated=estimated,
                started_at=reservation.created_at,
            )
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

    # -- async forms: a store that waits on a disk or a network is never awaited on the loop --

    async def areserve(
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
        """:meth:`reserve` for async code: the store is never awaited on the event loop and
        ``wait`` polls without blocking it. If the awaiting task is cancelled while the
        store answers, a hold it took is released, so a cancelled call never keeps budget."""
        if not self.store.does_io and not wait:  # nothing to wait on: the sync path
            return self.reserve(
                model,
                input_tokens,
                max_output_tokens,
                session_id=session_id,
                ttl=ttl,
                metadata=metadata,
                clamp=clamp,
                min_output_tokens=min_output_tokens,
                output_from=output_from,
                service_tier=service_tier,
            )
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
        if self.store.does_io:
            outcome = await off_loop(lambda: reserving.attempt(self, plan), undo=_release_held)
        else:
            outcome = reserving.attempt(self, plan)
        if isinstance(outcome, Refused) and wait and outcome.waitable:
            outcome = await reserving.wait_async(self, plan, outcome, wait)
        if isinstance(outcome, Refused):
            error = reserving.refusal(self, plan, outcome)
            note = functools.partial(self._refused, error, plan.resolved.name, plan.session_id)
            if self.store.does_io:
                await off_loop(note)
            else:
                note()
            raise error
        return outcome

    async def acommit(
        self,
        reservation: Reservation,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        estimated: bool | None = None,
    ) -> UsageRecord:
        """:meth:`commit` for async code; the commit completes even if the task is cancelled."""
        call = functools.partial(
            self.commit, reservation, usage, model=model, metadata=metadata, estimated=estimated
        )
        if not self.store.does_io:
            return call()
        return await off_loop(call)

    async def arelease(self, reservation: Reservation) -> bool:
        """:meth:`release` for async code."""
        if not self.store.does_io:
            return self.release(reservation)
        return await off_loop(functools.partial(self.release, reservation))

    async def acheck(self, model: str, input_tokens: int, output_tokens: int = 0) -> None:
        """:meth:`check` for async code."""
        call = functools.partial(self.check, model, input_tokens, output_tokens)
        if not self.store.does_io:
            return call()
        return await off_loop(call)

    def _commit(
        self,
        hold_id: str,
        resolved: ResolvedModel,
        usage: Usage,
        *,
        tier: str | None,
        session_id: str,
        metadata: Mapping[str, Any],
        estimated: bool,
        started_at: float | None = None,
    ) -> tuple[UsageRecord, tuple[Line, ...], tuple[LineSpec, ...], tuple[Level, ...] | None]:
        """Record usage priced as ``resolved`` in service ``tier`` at the budget's clock;
        returns the record, its lines and specs, and their levels after the commit (None
        when the store was down and the commit was buffered)."""
        now = self.clock()
        quote = resolved.quote(now, tier)
        rates = quote.rates
        cost = rates.cost_nanos(usage)
        price_tier = quote.tier
        if rates.long_context is not None:
            above = rates.tier_label(usage.input_tokens)
            if above:
                price_tier = f"{price_tier}, {above}"
        record = UsageRecord(
            session_id=session_id,
            model=resolved.name,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost / 1_000_000_000,  # int / int rounds correctly, as float(Decimal) does
            timestamp=now,
            metadata=metadata if metadata.__class__ is dict else dict(metadata),
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_nanos=cost,
            estimated=estimated,
            scope=self.name,
            reservation_id=hold_id,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            web_searches=usage.web_searches,
            price_source=resolved.source,
            price_date=resolved.source_date,
            price_id=resolved.price_id,
            price_tier=price_tier,
        )
        listed, specs = self._lines(resolved.name, usage.total_tokens, cost, "all", session_id, now)
        lines = tuple(listed)
        payload = self.store.ledger_entry(record) if self.store.keeps_ledger else None
        if self._pending:
            self._flush_pending()
        try:
            result = self.store.commit(hold_id, lines, now=now, group=self.group, record=payload)
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
            with self._lock:
                self._records.append(record)
            if self._listeners.record:
                self._listeners.emit_record(RecordEvent(record, started_at or now))
            return record, lines, specs, None
        if self._pending:  # the store answers: replay what waits for it
            self._flush_pending(answered=True)
        with self._lock:
            self._records.append(record)
        notify_waiters(self.store)
        for node in self._chain:
            if node._first_use is not None:
                node._note_first_use()
        for spec, line, level in zip(specs, lines, result.levels, strict=True):
            if spec.target is not None:
                spec.budget._alerter.after_commit(spec.target, level[0], line[2])
        if self._listeners.record:
            self._listeners.emit_record(RecordEvent(record, started_at or now))
        return record, lines, specs, result.levels

    # -- the original API ------------------------------------------------------------------

    def check(
        self, model: str, input_tokens: int, output_tokens: int = 0, *, session_id: str = ""
    ) -> None:
        """Raise :class:`BudgetExceededError` if a call of this size would cross a hard
        limit now (counting other calls' holds). Records and holds nothing.

        As in the original API, the error's ``used`` is the total the call would reach
        (``requested`` and ``reserved`` say what it is made of), and the prospective total
        alerts: WARNING from ``alert_at_pct``, CRITICAL above a soft (``hard_stop=False``)
        limit, once per crossing."""
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
        check_tokens("input_tokens", input_tokens)
        check_tokens("output_tokens", output_tokens)
        resolved = self._resolve(model)
        now = self.clock()
        quote = resolved.quote(now, self.rates.default_tier(None))
        cost = quote.rates.cost_nanos(Usage(input_tokens, output_tokens))
        lines, specs = self._lines(
            resolved.name, input_tokens + output_tokens, cost, "limited", session_id, now
        )
        if not lines:
            return
        try:
            result = self.store.reserve(
                "check",
                lines,
                now=now,
                ttl=self.hold_ttl,
                group=self.group,
                dry_run=True,
            )
        except StorePermanentError:
            raise
        except StoreError as exc:
            self._admit_despite_outage(exc, "check admits the call")
            return
        error: BudgetExceededError | None = None
        for spec, line, level in zip(specs, lines, result.levels, strict=True):
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
        self,
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
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
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
        record, lines, specs, levels = self._commit(
            _new_hold_id(),
            self._resolve(model),
            usage,
            tier=self.rates.default_tier(service_tier),
            session_id=session_id,
            metadata=dict(metadata or {}),
            estimated=False,
        )
        if levels is not None:
            for spec, line, level in zip(specs, lines, levels, strict=True):
                limit = spec.target
                if limit is None or not spec.budget._scope.hard_stop:
                    continue
                if level.committed > limit.amount:
                    raise exceeded_error(spec.budget.name, limit, level, line.amount)
        return record

    # -- inspection ------------------------------------------------------------------------

    def remaining(self, model: str | None = None, *, session_id: str = "") -> Remaining:
        """What is left under every limit of this scope and its ancestors, net of the holds
        of calls in flight (tokens as ints, USD as exact Decimals); with ``model``, per-model
        limits of other models are left out; with ``session_id``, the session limits are
        that conversation's. ``remaining().tokens`` / ``.usd`` are the tightest hard limits."""
        return remaining_of(self, model, session_id)

    def usage(self, *, session_id: str = "") -> dict[str, Level]:
        """Raw counters of this scope from the store: metric -> Level(committed, reserved).

        Calendar windows read as zero once their period is over. With ``session_id``, the
        counters of that session (conversation) of the scope."""
        now = self.clock()
        if session_id:
            epoch = self._session_epoch
            periods = {"session:tokens": epoch, "session:cost": epoch} if epoch else None
            scope = session_scope(self.name, session_id)
            return dict(self.store.read(scope, now=now, group=self.group, periods=periods))
        periods = {
            lim.metric: period_bounds(lim.calendar[0], lim.calendar[1], now)[0]
            for lim in self._limits
            if lim.calendar is not None
        }
        return dict(self.store.read(self.name, now=now, group=self.group, periods=periods or None))

    @overload
    def summary(
        self, *, exact: Literal[False] = False, by_session: bool = False
    ) -> BudgetSummary: ...

    @overload
    def summary(self, *, exact: Literal[True], by_session: bool = False) -> ExactBudgetSummary: ...

    def summary(
        self, *, exact: bool = False, by_session: bool = False
    ) -> BudgetSummary | ExactBudgetSummary:
        """Current usage: ``session``, ``day`` (rolling 24 h) and ``per_model`` token and USD
        totals, plus every limit's use and ``remaining``. USD are floats rounded to 6 places
        (printed as plain decimals), or Decimals with ``exact=True``. ``by_session`` breaks
        the retained records down by session_id. See :mod:`agent_budget.summary`."""
        counters = self.usage()
        with self._lock:
            record_count = len(self._records)
            records = list(self._records) if by_session else []
        return summarize(
            scope=self.name,
            parent=self.parent.name if self.parent else None,
            counters=counters,
            limits=self._limits,
            alert_count=self._alerter.count,
            record_count=record_count,
            records=records,
            exact=exact,
            by_session=by_session,
        )

    @property
    def records(self) -> list[UsageRecord]:
        """The most recent records of this process (a ring of ``max_records``)."""
        with self._lock:
            return list(self._records)

    def reset_session(self, session_id: str = "") -> None:
        """Start a new session: zero the session counters (day and per-model stay).

        With ``session_id``, only that conversation's counters. Without, the scope's whole
        session and, for calls made through this Budget object, every conversation's
        counters (they restart at their next use)."""
        now = self.clock()
        if session_id:
            scope = session_scope(self.name, session_id)
            self.store.reset(scope, "session:", now=now, group=self.group)
        else:
            self.store.reset(self.name, "session:", now=now, group=self.group)
            self._session_epoch = max(self._session_epoch + 1, int(now))
        self._alerter.rearm(
            limit.limit_type for limit in self._limits if limit.metric.startswith("session:")
        )

    def reset(self) -> None:
        """Zero every counter of this scope: session, day window and per-model."""
        self.store.reset(self.name, "", now=self.clock(), group=self.group)
        self._alerter.clear()

    def __repr__(self) -> str:
        return f"Budget(scope={self.name!r}, store={type(self.store).__name__})"


def _spoolable(payload: Any) -> dict[str, Any] | None:
    """A ledger entry as the outage spool keeps it (JSON): a store that keeps records as
    objects (MemoryStore) gets the record's payload."""
    if payload is None or isinstance(payload, dict):
        return payload
    return record_payload(payload) if isinstance(payload, UsageRecord) else dict(payload)


def _check_ttl(name: str, value: object) -> None:
    dec = to_decimal(name, value, allow_zero=False)
    if dec > 10 * 365 * 86400:
        raise ValueError(f"{name} is unreasonably long: {value!r} seconds")


def _release_held(outcome: Reservation | Refused) -> None:
    if not isinstance(outcome, Reservation):
        return
    try:
        outcome.release()
    except Exception:
        log.warning("could not release hold %s of a cancelled call", outcome.id, exc_info=True)
