"""Budget: enforces one scope (and its ancestors) over a store, with reservations."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

from .alerts import AlertLevel, AlertState, BudgetAlert
from .errors import BudgetExceededError, BudgetWarning, StoreError, StoreUnavailableError
from .money import nanos_to_decimal, nanos_to_float
from .pending import PendingCommit, pending_for
from .rates import ModelRates, RateTable, ResolvedModel
from .records import UsageRecord
from .reservation import Reservation
from .scope import BudgetScope, Limit, Metric
from .stores import Level, Line, Store, open_store
from .stores.base import new_tuple
from .usage import Usage
from .validate import MAX_TOKENS, check_tokens, to_decimal

__all__ = ["Budget", "StoreErrorPolicy"]

log = logging.getLogger("agent_budget")

StoreErrorPolicy = Literal["fail_closed", "fail_open"]
AlertCallback = Callable[[BudgetAlert], None]
_LineSpec = tuple[str, str, bool, "int | None"]
_REFUSED = ":refused"  # alert-state key suffix for refusals, apart from usage levels


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
        self._chain_limits: dict[tuple[str, str], tuple[Budget, Limit]] = {
            (budget.name, lim.metric): (budget, lim)
            for budget in reversed(self._chain)
            for lim in budget._limits
        }
        self._line_specs: dict[tuple[str, str], tuple[_LineSpec, ...]] = {}
        self._alert_targets: dict[str, tuple[tuple[Budget, Limit] | None, ...]] = {}
        pct = to_decimal("alert_at_pct", scope.alert_at_pct)
        # Counters are integers, so "used >= pct * cap" is "used >= ceil(pct * cap)".
        self._warn_at: dict[str, int] = {
            lim.limit_type: int((pct * lim.amount).to_integral_value(rounding=ROUND_CEILING))
            for lim in self._limits
        }
        self._lock = threading.Lock()
        self._records: deque[UsageRecord] = deque(maxlen=max_records)
        self._alerts: deque[BudgetAlert] = deque(maxlen=max_alerts)
        self._alert_count = 0
        self._callbacks: list[AlertCallback] = []
        self._alert_state = AlertState()
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

    # -- alerts ----------------------------------------------------------------------------

    def on_alert(self, callback: AlertCallback) -> None:
        """Call ``callback(alert)`` on every alert of this scope; exceptions are logged."""
        if not callable(callback):
            raise TypeError("on_alert needs a callable")
        with self._lock:
            self._callbacks.append(callback)

    @property
    def alerts(self) -> list[BudgetAlert]:
        with self._lock:
            return list(self._alerts)

    def _fire(self, alert: BudgetAlert) -> None:
        with self._lock:
            self._alerts.append(alert)
            self._alert_count += 1
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(alert)
            except Exception:
                log.exception("alert callback %r failed for scope %r", callback, alert.scope)

    def _alert_for(self, limit: Limit, committed: int, amount: int) -> None:
        """Alert for ``limit`` after a commit of ``amount`` left it at ``committed``.

        A commit that started below the warning threshold begins a new crossing (the window
        moved on, the session was reset), so both this limit's level and refusal alerts
        re-arm before the new level is judged: each fires once per crossing.
        """
        warn_at = self._warn_at[limit.limit_type]
        state = self._alert_state
        if committed - amount < warn_at and state.armed:
            state.should_fire(limit.limit_type, None)
            state.should_fire(limit.limit_type + _REFUSED, None)
        if committed < warn_at:  # alert_at_pct <= 1, so also within the limit
            return
        level = AlertLevel.CRITICAL if committed > limit.amount else AlertLevel.WARNING
        if not state.should_fire(limit.limit_type, level):
            return
        value = limit.to_user(committed)
        cap = limit.to_user(limit.amount)
        pct = committed / limit.amount if limit.amount else 1.0
        if level is AlertLevel.CRITICAL:
            message = f"Budget EXCEEDED: {limit.limit_type} used={_fmt(value)} limit={_fmt(cap)}"
        else:
            message = f"Budget WARNING: {limit.limit_type} at {pct:.0%} ({_fmt(value)}/{_fmt(cap)})"
        self._fire(
            BudgetAlert(self.name, level, message, value, cap, self.clock(), limit.limit_type)
        )

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
            f"(${_fmt(float(rates['input']))} in / ${_fmt(float(rates['output']))} out per 1M "
            "tokens). Price it with rates=, aliases= or an overlay."
        )
        warnings.warn(message, BudgetWarning, stacklevel=4)
        self._fire(
            BudgetAlert(
                self.name, AlertLevel.WARNING, message, 0.0, 0.0, self.clock(), "unknown_model"
            )
        )

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
        self, model: str, tokens: int, cost: int, *, mode: Literal["hard", "limited", "all"]
    ) -> list[Line]:
        specs = self._line_specs.get((model, mode))
        if specs is None:
            specs = self._build_specs(model, mode)
            if len(self._line_specs) >= 1024:
                self._line_specs.clear()
            self._line_specs[(model, mode)] = specs
        return [
            new_tuple(Line, (scope, metric, cost if is_cost else tokens, limit))
            for scope, metric, is_cost, limit in specs
        ]

    def _build_specs(
        self, model: str, mode: Literal["hard", "limited", "all"]
    ) -> tuple[_LineSpec, ...]:
        metrics = (
            (Metric.SESSION_TOKENS, False),
            (Metric.SESSION_COST, True),
            (Metric.DAY_TOKENS, False),
            (Metric.DAY_COST, True),
            (Metric.model_tokens(model), False),
            (Metric.model_cost(model), True),
        )
        specs: list[_LineSpec] = []
        for budget in self._chain:
            hard = budget._scope.hard_stop
            for metric, is_cost in metrics:
                limit = budget._by_metric.get(metric)
                if mode == "all":
                    specs.append((budget.name, metric, is_cost, None))
                elif limit is not None and (hard or mode == "limited"):
                    specs.append((budget.name, metric, is_cost, limit.amount))
        return tuple(specs)

    def _limit_of(self, line: Line) -> tuple[Budget, Limit] | None:
        return self._chain_limits.get((line.scope, line.metric))

    def _exceeded_error(self, line: Line, level: Level, *, refused: bool) -> BudgetExceededError:
        found = self._limit_of(line)
        assert found is not None
        budget, limit = found
        used = limit.to_user(level.committed)
        reserved = limit.to_user(level.reserved)
        requested = limit.to_user(line.amount)
        cap = limit.to_user(limit.amount)
        if refused:
            message = (
                f"budget {budget.name!r} refused the call: {limit.limit_type} would reach "
                f"{_fmt(limit.to_user(level.committed + level.reserved + line.amount))} over "
                f"the limit {_fmt(cap)} (used {_fmt(used)}, reserved {_fmt(reserved)}, "
                f"requested {_fmt(requested)})"
            )
        else:
            message = (
                f"Budget EXCEEDED: {limit.limit_type} used={_fmt(used)} limit={_fmt(cap)} "
                f"in scope {budget.name!r}"
            )
        return BudgetExceededError(
            message,
            budget.name,
            limit.limit_type,
            used,
            cap,
            reserved=reserved,
            requested=requested,
        )

    def _refusal(self, line: Line, level: Level) -> BudgetExceededError:
        error = self._exceeded_error(line, level, refused=True)
        found = self._limit_of(line)
        assert found is not None
        budget, limit = found
        if budget._alert_state.should_fire(limit.limit_type + _REFUSED, AlertLevel.CRITICAL):
            budget._fire(
                BudgetAlert(
                    budget.name,
                    AlertLevel.CRITICAL,
                    str(error),
                    error.used,
                    error.limit,
                    self.clock(),
                    limit.limit_type,
                )
            )
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
        service_tier: str | None = None,
    ) -> Reservation:
        """Hold the worst-case cost of a call in this scope and every ancestor, atomically.

        Raises :class:`BudgetExceededError` (nothing held, nothing recorded) when
        committed + reserved + this estimate would cross any hard limit. ``service_tier``
        is the tier the request asks for (``"flex"``, ``"priority"``, ``"batch"``); the hold
        is priced in it, else in the rate table's default tier.
        """
        if input_tokens.__class__ is not int or not 0 <= input_tokens <= MAX_TOKENS:
            check_tokens("input_tokens", input_tokens)
        if max_output_tokens.__class__ is not int or not 0 <= max_output_tokens <= MAX_TOKENS:
            check_tokens("max_output_tokens", max_output_tokens)
        if ttl is not None:
            _check_ttl("ttl", ttl)
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        if service_tier is not None and not isinstance(service_tier, str):
            raise TypeError(f"service_tier must be a str, got {type(service_tier).__name__}")
        resolved = self._resolve(model)
        tokens = input_tokens + max_output_tokens
        now = self.clock()
        tier = self.rates.default_tier(service_tier)
        cost = resolved.quote(now, tier).rates.worst_case_nanos(input_tokens, max_output_tokens)
        hold_ttl = self.hold_ttl if ttl is None else float(ttl)
        reservation = Reservation(
            budget=self,
            id=_new_hold_id(),
            model=resolved.name,
            requested_model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            tokens=tokens,
            cost_nanos=cost,
            session_id=session_id,
            metadata=dict(metadata or {}),
            created_at=now,
            expires_at=now + hold_ttl,
            held=False,
            service_tier=tier,
        )
        lines = self._lines(resolved.name, tokens, cost, mode="hard")
        if not lines:
            return reservation
        if self._pending:
            self._flush_pending()
        try:
            result = self.store.reserve(
                reservation.id, lines, now=now, ttl=hold_ttl, group=self.group
            )
        except StoreError as exc:
            self._admit_despite_outage(exc, "admitting the call")
            self._fire(
                BudgetAlert(
                    self.name,
                    AlertLevel.WARNING,
                    f"budget store unavailable, call admitted unchecked: {exc}",
                    0.0,
                    0.0,
                    now,
                    "store_unavailable",
                )
            )
            return reservation
        if not result.admitted:
            assert result.refused_at is not None
            raise self._refusal(lines[result.refused_at], result.levels[result.refused_at])
        reservation.held = True
        return reservation

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
        with reservation.lock:
            if reservation.record is not None:
                return reservation.record
            if estimated is None:
                estimated = usage is None
            if usage is None:
                usage = Usage(reservation.input_tokens, reservation.max_output_tokens)
            meta = {**reservation.metadata, **(metadata or {})}
            record, _lines, _levels = self._commit(
                reservation.id,
                self._answered_model(model, reservation.requested_model),
                usage,
                tier=usage.service_tier or reservation.service_tier,
                session_id=reservation.session_id,
                metadata=meta,
                estimated=estimated,
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
        try:
            return bool(self.store.release(reservation.id, now=self.clock(), group=self.group))
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
        *,
        tier: str | None,
        session_id: str,
        metadata: Mapping[str, Any],
        estimated: bool,
    ) -> tuple[UsageRecord, tuple[Line, ...], tuple[Level, ...] | None]:
        """Record usage priced as ``resolved`` in service ``tier`` at the budget's clock;
        returns the record, its lines and their levels after the commit (None when the
        store was down and the commit was buffered)."""
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
        lines = tuple(self._lines(resolved.name, usage.total_tokens, cost, mode="all"))
        payload = _record_payload(record) if self.store.keeps_ledger else None
        if self._pending:
            self._flush_pending()
        try:
            result = self.store.commit(hold_id, lines, now=now, group=self.group, record=payload)
        except StoreError:
            self._pending.add(PendingCommit(hold_id, lines, now, self.group, payload))
            with self._lock:
                self._records.append(record)
            return record, lines, None
        with self._lock:
            self._records.append(record)
        self._check_alerts(resolved.name, lines, result.levels)
        return record, lines, result.levels

    def _check_alerts(self, model: str, lines: Sequence[Line], levels: Sequence[Level]) -> None:
        # The limit (and its budget) behind each of a model's commit lines, looked up once.
        targets = self._alert_targets.get(model)
        if targets is None:
            targets = tuple(self._chain_limits.get((line.scope, line.metric)) for line in lines)
            if len(self._alert_targets) >= 1024:
                self._alert_targets.clear()
            self._alert_targets[model] = targets
        for target, line, level in zip(targets, lines, levels, strict=True):
            if target is not None:
                target[0]._alert_for(target[1], level[0], line[2])

    # -- the original API ------------------------------------------------------------------

    def check(self, model: str, input_tokens: int, output_tokens: int = 0) -> None:
        """Raise :class:`BudgetExceededError` if a call of this size would cross a hard
        limit now (counting other calls' holds). Records and holds nothing."""
        check_tokens("input_tokens", input_tokens)
        check_tokens("output_tokens", output_tokens)
        resolved = self._resolve(model)
        quote = resolved.quote(self.clock(), self.rates.default_tier(None))
        cost = quote.rates.cost_nanos(Usage(input_tokens, output_tokens))
        lines = self._lines(resolved.name, input_tokens + output_tokens, cost, mode="limited")
        if not lines:
            return
        try:
            result = self.store.reserve(
                "check",
                lines,
                now=self.clock(),
                ttl=self.hold_ttl,
                group=self.group,
                dry_run=True,
            )
        except StoreError as exc:
            self._admit_despite_outage(exc, "check admits the call")
            return
        error: BudgetExceededError | None = None
        for line, level in zip(lines, result.levels, strict=True):
            assert line.limit is not None
            if level.committed + level.reserved + line.amount <= line.limit:
                continue
            found = self._limit_of(line)
            assert found is not None
            if found[0]._scope.hard_stop and error is None:
                # Only a hard limit refuses (and alerts); a soft one alerts when crossed.
                error = self._refusal(line, level)
        if error is not None:
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
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
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
        record, lines, levels = self._commit(
            _new_hold_id(),
            self._resolve(model),
            usage,
            tier=self.rates.default_tier(service_tier),
            session_id=session_id,
            metadata=dict(metadata or {}),
            estimated=False,
        )
        if levels is not None:
            self._raise_if_exceeded(lines, levels)
        return record

    def _raise_if_exceeded(self, lines: Sequence[Line], levels: Sequence[Level]) -> None:
        limits = self._chain_limits
        for line, level in zip(lines, levels, strict=True):
            found = limits.get((line.scope, line.metric))
            if found is None or not found[0]._scope.hard_stop:
                continue
            if level.committed > found[1].amount:
                hard = line._replace(limit=found[1].amount)
                raise self._exceeded_error(hard, level, refused=False)

    # -- inspection ------------------------------------------------------------------------

    def usage(self) -> dict[str, Level]:
        """Raw counters of this scope from the store: metric -> Level(committed, reserved)."""
        return dict(self.store.read(self.name, now=self.clock(), group=self.group))

    def summary(self, *, exact: bool = False, by_session: bool = False) -> dict[str, Any]:
        """Current usage: ``session``, ``day`` (rolling 24 h) and ``per_model`` token and USD
        totals, plus every limit's use. USD are floats rounded to 6 places, or Decimals with
        ``exact=True``. ``by_session`` breaks the retained records down by session_id."""
        counters = self.usage()

        def money(nanos: int) -> float | Decimal:
            return nanos_to_decimal(nanos) if exact else nanos_to_float(nanos)

        def pair(tokens_metric: str, cost_metric: str) -> dict[str, Any]:
            tok = counters.get(tokens_metric, Level())
            cost = counters.get(cost_metric, Level())
            return {
                "tokens": tok.committed,
                "cost_usd": money(cost.committed),
                "reserved_tokens": tok.reserved,
                "reserved_cost_usd": money(cost.reserved),
            }

        per_model: dict[str, dict[str, Any]] = {}
        for metric, level in counters.items():
            parsed = Metric.parse_model(metric)
            if parsed is None:
                continue
            name, kind = parsed
            entry = per_model.setdefault(name, {"tokens": 0, "cost_usd": money(0)})
            if kind == "tokens":
                entry["tokens"] = level.committed
            else:
                entry["cost_usd"] = money(level.committed)
        limits: dict[str, dict[str, Any]] = {}
        for limit in self._limits:
            level = counters.get(limit.metric, Level())
            if limit.unit == "usd":
                used: Any = money(level.committed)
                cap: Any = money(limit.amount)
                held: Any = money(level.reserved)
            else:
                used, cap, held = level.committed, limit.amount, level.reserved
            limits[limit.limit_type] = {
                "used": used,
                "reserved": held,
                "limit": cap,
                "pct": round(level.committed / limit.amount, 6) if limit.amount else 1.0,
            }
        with self._lock:
            alert_count = self._alert_count
            record_count = len(self._records)
            records = list(self._records) if by_session else []
        out: dict[str, Any] = {
            "scope": self.name,
            "parent": self.parent.name if self.parent else None,
            "session": pair(Metric.SESSION_TOKENS, Metric.SESSION_COST),
            "day": pair(Metric.DAY_TOKENS, Metric.DAY_COST),
            "per_model": per_model,
            "limits": limits,
            "alert_count": alert_count,
            "record_count": record_count,
        }
        if by_session:
            sessions: dict[str, dict[str, int]] = {}
            for rec in records:
                entry2 = sessions.setdefault(rec.session_id, {"tokens": 0, "cost_nanos": 0})
                entry2["tokens"] += rec.total_tokens
                entry2["cost_nanos"] += rec.cost_nanos
            out["sessions"] = {
                sid: {"tokens": v["tokens"], "cost_usd": money(v["cost_nanos"])}
                for sid, v in sessions.items()
            }
        return out

    @property
    def records(self) -> list[UsageRecord]:
        """The most recent records of this process (a ring of ``max_records``)."""
        with self._lock:
            return list(self._records)

    def reset_session(self) -> None:
        """Start a new session: zero the session counters (day and per-model stay)."""
        self.store.reset(self.name, "session:", now=self.clock(), group=self.group)
        for limit in self._limits:
            if limit.metric.startswith("session:"):
                self._alert_state.should_fire(limit.limit_type, None)
                self._alert_state.should_fire(limit.limit_type + _REFUSED, None)

    def reset(self) -> None:
        """Zero every counter of this scope: session, day window and per-model."""
        self.store.reset(self.name, "", now=self.clock(), group=self.group)
        self._alert_state.clear()

    def __repr__(self) -> str:
        return f"Budget(scope={self.name!r}, store={type(self.store).__name__})"


def _check_ttl(name: str, value: object) -> None:
    dec = to_decimal(name, value, allow_zero=False)
    if dec > 10 * 365 * 86400:
        raise ValueError(f"{name} is unreasonably long: {value!r} seconds")


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0")


def _record_payload(record: UsageRecord) -> dict[str, Any]:
    return {
        "session_id": record.session_id,
        "model": record.model,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost_usd": record.cost_usd,
        "timestamp": record.timestamp,
        "metadata": {k: v for k, v in record.metadata.items() if _json_safe(v)},
        "cache_read_tokens": record.cache_read_tokens,
        "cache_write_tokens": record.cache_write_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "cost_nanos": record.cost_nanos,
        "estimated": record.estimated,
        "scope": record.scope,
        "reservation_id": record.reservation_id,
        "cache_write_1h_tokens": record.cache_write_1h_tokens,
        "web_searches": record.web_searches,
        "price_source": record.price_source,
        "price_date": record.price_date,
        "price_id": record.price_id,
        "price_tier": record.price_tier,
    }


def _json_safe(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
