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
from decimal import Decimal
from typing import Any, Literal

from .alerting import AlertCallback, Alerter, warn_thresholds
from .alerts import BudgetAlert
from .errors import (
    BudgetExceededError,
    BudgetWarning,
    StoreError,
    StorePermanentError,
    StoreUnavailableError,
)
from .outage import buffer_for, maybe_applied, quarantine_alert
from .rates import ModelRates, RateTable, ResolvedModel
from .records import UsageRecord, record_payload
from .refusals import exceeded_error, refusal_error
from .reservation import Reservation
from .scope import BudgetScope, Limit, Metric
from .stores import Level, Line, Store, open_store
from .stores.base import check_text, new_tuple
from .summary import summarize
from .usage import Usage
from .validate import MAX_TOKENS, check_metadata, check_tokens, to_decimal

__all__ = ["Budget", "StoreErrorPolicy"]

log = logging.getLogger("agent_budget")

StoreErrorPolicy = Literal["fail_closed", "fail_open"]
_LineSpec = tuple[str, str, bool, "int | None"]


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
        self._alerter = Alerter(
            scope.name,
            clock,
            warn_thresholds(self._limits, to_decimal("alert_at_pct", scope.alert_at_pct)),
            max_alerts,
        )
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

    @property
    def _warn_at(self) -> dict[str, int]:
        return self._alerter.warn_at

    # -- pricing ---------------------------------------------------------------------------

    def _resolve(self, model: str) -> ResolvedModel:
        resolved = self.rates.resolve(model)
        if not resolved.known and self.rates.on_unknown == "warn":
            first = self.rates.first_unknown(resolved.name)
            if first:
                message = (
                    f"model {model!r} has no known price; charging the fallback rates "
                    f"{self.rates.fallback}. Pass rates={{...}} to price it."
                )
                warnings.warn(message, BudgetWarning, stacklevel=3)
                self._alerter.warn(message, "unknown_model")
        return resolved

    def estimate(self, model: str, input_tokens: int, output_tokens: int = 0) -> float:
        """Cost in USD (float) of a call, without recording anything."""
        return float(self.estimate_exact(model, input_tokens, output_tokens))

    def estimate_exact(self, model: str, input_tokens: int, output_tokens: int = 0) -> Decimal:
        """Exact cost in USD of a call of this size, as :meth:`record` would charge it."""
        check_tokens("input_tokens", input_tokens)
        check_tokens("output_tokens", output_tokens)
        return self.rates.resolve(
            model, on_unknown="fallback" if self.rates.on_unknown == "warn" else None
        ).rates.cost(Usage(input_tokens, output_tokens))

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
            new_tuple(Line, (scope, metric, cost if is_cost else tokens, limit, None))
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

    def _refusal(self, line: Line, level: Level, *, detail: str = "") -> BudgetExceededError:
        """The error refusing a call at ``line`` (and its CRITICAL alert, once per crossing)."""
        found = self._limit_of(line)
        assert found is not None
        budget, limit = found
        error = refusal_error(budget.name, limit, level, line.amount, detail=detail)
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
    ) -> Reservation:
        """Hold the worst-case cost of a call in this scope and every ancestor, atomically.

        Raises :class:`BudgetExceededError` (nothing held, nothing recorded) when
        committed + reserved + this estimate would cross any hard limit.
        """
        if input_tokens.__class__ is not int or not 0 <= input_tokens <= MAX_TOKENS:
            check_tokens("input_tokens", input_tokens)
        if max_output_tokens.__class__ is not int or not 0 <= max_output_tokens <= MAX_TOKENS:
            check_tokens("max_output_tokens", max_output_tokens)
        if ttl is not None:
            _check_ttl("ttl", ttl)
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
        # Everything the commit will need is checked now, so a commit cannot fail on input.
        check_text("model", model)
        if metadata is not None:
            check_metadata("metadata", metadata)
        resolved = self._resolve(model)
        tokens = input_tokens + max_output_tokens
        cost = resolved.rates.worst_case_nanos(input_tokens, max_output_tokens)
        now = self.clock()
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
        )
        lines = self._lines(resolved.name, tokens, cost, mode="hard")
        if not lines:
            return reservation
        if self._pending:
            self._flush_pending()
        retried = False
        while True:
            try:
                result = self.store.reserve(
                    reservation.id, lines, now=now, ttl=hold_ttl, group=self.group
                )
            except StorePermanentError:
                raise
            except StoreError as exc:
                if maybe_applied(exc):  # it may hold budget after all: released once it answers
                    self._pending.add_release(reservation.id, self.group, now)
                self._admit_despite_outage(exc, "admitting the call")
                self._alerter.warn(
                    f"budget store unavailable, call admitted unchecked: {exc}",
                    "store_unavailable",
                )
                return reservation
            # The store answers: replay what waits for it. A refusal is tried once more when
            # that replay freed something (a hold left by a reserve whose reply was lost).
            if retried or not self._pending or not self._flush_pending(answered=True):
                break
            if result.admitted:
                break
            retried = True
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
            record, _lines, _levels = self._commit(
                reservation.id,
                self._answered_model(model, reservation.requested_model),
                usage,
                session_id=reservation.session_id,
                metadata=meta,
                estimated=estimated,
            )
            reservation.record = record
            reservation.held = False
            reservation.state = "committed"
            return record

    def _answered_model(self, answered: str | None, requested: str) -> str:
        """The model to price a commit with: the one that answered when the rate table knows
        it, else the one reserved for. A commit records money already spent, so an answer
        from an unpriced model (a new snapshot, an alias) must neither fail nor be priced at
        the fallback when the requested model has a price."""
        if not answered or answered == requested:
            return requested
        if not isinstance(answered, str) or not answered.strip():
            return requested
        if self.rates.resolve(answered, on_unknown="fallback").known:
            return answered
        return requested

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
            return bool(self.store.release(reservation.id, now=now, group=self.group))
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

    def _commit(
        self,
        hold_id: str,
        model: str,
        usage: Usage,
        *,
        session_id: str,
        metadata: Mapping[str, Any],
        estimated: bool,
    ) -> tuple[UsageRecord, tuple[Line, ...], tuple[Level, ...] | None]:
        """Record usage; returns the record, its lines and their levels after the commit
        (None when the store was down and the commit was buffered)."""
        resolved = self._resolve(model)
        cost = resolved.rates.cost_nanos(usage)
        now = self.clock()
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
        )
        lines = tuple(self._lines(resolved.name, usage.total_tokens, cost, mode="all"))
        payload = record_payload(record) if self.store.keeps_ledger else None
        if self._pending:
            self._flush_pending()
        try:
            result = self.store.commit(hold_id, lines, now=now, group=self.group, record=payload)
        except StoreError as exc:
            if isinstance(exc, StorePermanentError):  # never storable: quarantined, alerted
                self._pending.reject_commit(
                    hold_id, lines, now, self.group, payload, error=exc,
                    alert=quarantine_alert(self._alerter),
                )  # fmt: skip
            else:  # kept (spooled) for replay
                self._pending.add_commit(hold_id, lines, now, self.group, payload, error=exc)
            with self._lock:
                self._records.append(record)
            return record, lines, None
        if self._pending:  # the store answers: replay what waits for it
            self._flush_pending(answered=True)
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
                target[0]._alerter.after_commit(target[1], level[0], line[2])

    # -- the original API ------------------------------------------------------------------

    def check(self, model: str, input_tokens: int, output_tokens: int = 0) -> None:
        """Raise :class:`BudgetExceededError` if a call of this size would cross a hard
        limit now (counting other calls' holds). Records and holds nothing."""
        check_tokens("input_tokens", input_tokens)
        check_tokens("output_tokens", output_tokens)
        resolved = self._resolve(model)
        cost = resolved.rates.cost_nanos(Usage(input_tokens, output_tokens))
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
        except StorePermanentError:
            raise
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
    ) -> UsageRecord:
        """Record usage that already happened, then raise if a hard limit is now exceeded.

        The record is kept whatever happens; the raise only tells the caller to stop.
        """
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, got {type(session_id).__name__}")
        check_text("model", model)
        if metadata is not None:
            check_metadata("metadata", metadata)
        usage = Usage(
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens
        )
        record, lines, levels = self._commit(
            _new_hold_id(),
            model,
            usage,
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
                raise exceeded_error(found[0].name, found[1], level, line.amount)

    # -- inspection ------------------------------------------------------------------------

    def usage(self) -> dict[str, Level]:
        """Raw counters of this scope from the store: metric -> Level(committed, reserved)."""
        return dict(self.store.read(self.name, now=self.clock(), group=self.group))

    def summary(self, *, exact: bool = False, by_session: bool = False) -> dict[str, Any]:
        """Current usage: ``session``, ``day`` (rolling 24 h) and ``per_model`` token and USD
        totals, plus every limit's use. USD are floats rounded to 6 places, or Decimals with
        ``exact=True``. ``by_session`` breaks the retained records down by session_id."""
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

    def reset_session(self) -> None:
        """Start a new session: zero the session counters (day and per-model stay)."""
        self.store.reset(self.name, "session:", now=self.clock(), group=self.group)
        self._alerter.rearm(
            limit.limit_type for limit in self._limits if limit.metric.startswith("session:")
        )

    def reset(self) -> None:
        """Zero every counter of this scope: session, day window and per-model."""
        self.store.reset(self.name, "", now=self.clock(), group=self.group)
        self._alerter.clear()

    def __repr__(self) -> str:
        return f"Budget(scope={self.name!r}, store={type(self.store).__name__})"


def _check_ttl(name: str, value: object) -> None:
    dec = to_decimal(name, value, allow_zero=False)
    if dec > 10 * 365 * 86400:
        raise ValueError(f"{name} is unreasonably long: {value!r} seconds")
