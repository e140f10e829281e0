"""The lifecycle of one model call, shared by every framework adapter.

An adapter reads its framework's events and calls this object: :meth:`CallLifecycle.start`
when a call is about to reach the provider (it reserves the call's worst case, or raises
:class:`~agent_budget.BudgetExceededError` to refuse it), then exactly one of
:meth:`~CallLifecycle.end` (the provider answered), :meth:`~CallLifecycle.fail` (it raised,
was cancelled, or a stream was dropped part way) or :meth:`~CallLifecycle.cached` (a
framework cache answered; nothing was billed). Everything else lives here once: which budget
and session a call charges, the default output hold, the rule for a stream cut short, the
tracker that pairs start and end events (bounded: calls that never end are forgotten after
their hold expired), the release of holds other budget adapters took for a call one of them
refused, and the warning when a provider reports no usage.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any, TypedDict

from .budget import Budget
from .context import current_scope, select_budget
from .errors import BudgetWarning
from .manager import BudgetManager
from .records import UsageRecord
from .reservation import Reservation
from .tokens import TokenCounter, default_counter
from .tracking import RunTracker
from .usage import Usage
from .validate import check_tokens

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "UNKNOWN_MODEL",
    "CallLifecycle",
    "CallTally",
    "LifecycleAdapter",
    "LifecycleOptions",
    "accounted_by",
    "accounting_for",
    "partial_usage",
    "selection_from",
]

log = logging.getLogger("agent_budget")

DEFAULT_MAX_OUTPUT_TOKENS = 4096
"""Output tokens held for a call whose request sets no cap (``max_tokens`` and the like), in
every adapter. 4096 is the largest common default among chat APIs (Anthropic requires a cap
and most SDKs default it near this; OpenAI lets a model run to its own limit), so a smaller
hold would let an uncapped reply overshoot the cap; set ``max_tokens`` on the model (or let
an adapter clamp it) to hold less."""

UNKNOWN_MODEL = "unknown-model"
"""The model name charged when neither the call nor the adapter's ``default_model`` names
one; it is priced by the rate table's unknown-model policy."""

# Calls that never end (a timed-out request) are forgotten this long after their hold
# expired; an end arriving later still commits, since the provider billed it.
TRACKER_GRACE_SECONDS = 3600.0

Target = Budget | BudgetManager
_UNSET: Any = object()
_PROVIDER: Mapping[str, Any] = {"usage_source": "provider"}
_RESERVATION: Mapping[str, Any] = {"usage_source": "reservation"}
_COUNTED: Mapping[str, Any] = {"usage_source": "counted"}


class LifecycleOptions(TypedDict, total=False):
    """The keyword options of :class:`CallLifecycle` an adapter passes through unchanged
    (``def __init__(self, budget, **options: Unpack[LifecycleOptions])``); see
    :class:`CallLifecycle` for what each one does."""

    scope: str | None
    parent: str | None
    session_id: str | None
    scope_key: str
    parent_key: str
    session_key: str
    default_model: str | None
    default_max_output_tokens: int
    clamp: bool
    min_output_tokens: int
    wait: float
    counter: TokenCounter | None
    hold_ttl: float | None
    metadata: Mapping[str, Any] | None


class CallLifecycle:
    """Start, end and failure of the model calls one adapter sees, over one budget target.

    ``target`` is a :class:`Budget`, or a :class:`BudgetManager` whose scope each call names
    (per call, else the enclosing :func:`~agent_budget.budget_scope` block, else ``scope``).
    ``framework`` labels every record (``metadata["framework"]``). ``session_id`` is the
    session of calls that name none; ``default_model`` names calls whose model is unknown;
    ``default_max_output_tokens`` is held as output when a request sets no cap; ``counter``
    estimates prompts and counts streamed text; ``hold_ttl`` overrides the budget's hold
    lifetime; ``metadata`` is added to every record; ``wait`` (seconds) makes a call that
    only fails to fit because of other calls' holds wait for them (see
    :meth:`Budget.reserve`); ``clamp=True`` clamps every call's output cap to what fits,
    down to ``min_output_tokens`` (see :attr:`floor`). ``scope_key``, ``parent_key`` and
    ``session_key`` name the keys (or attributes) :meth:`select` reads from a framework's
    per-run object.
    """

    def __init__(
        self,
        target: Target,
        *,
        framework: str,
        scope: str | None = None,
        parent: str | None = None,
        session_id: str | None = None,
        default_model: str | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        counter: TokenCounter | None = None,
        hold_ttl: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        wait: float = 0.0,
        clamp: bool = False,
        min_output_tokens: int = 1,
        scope_key: str = "budget_scope",
        parent_key: str = "budget_parent",
        session_key: str = "budget_session",
    ) -> None:
        if not isinstance(target, (Budget, BudgetManager)):
            raise TypeError(
                f"budget must be a Budget or a BudgetManager, got {type(target).__name__}"
            )
        check_tokens("default_max_output_tokens", default_max_output_tokens)
        check_tokens("min_output_tokens", min_output_tokens)
        for name, value in (
            ("framework", framework),
            ("scope", scope),
            ("parent", parent),
            ("session_id", session_id),
            ("default_model", default_model),
        ):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        self.target = target
        self.framework = framework
        self.scope = scope
        self.parent = parent
        self.session_id = session_id
        self.default_model = default_model
        self.default_max_output_tokens = default_max_output_tokens
        self.counter = counter if counter is not None else default_counter()
        self.hold_ttl = hold_ttl
        self.metadata = dict(metadata or {})
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 86_400:
            raise ValueError(f"wait must be a number of seconds (0 to 86400), got {wait!r}")
        self.wait = float(wait)
        self.clamp = bool(clamp)
        self.min_output_tokens = min_output_tokens
        self.keys = (scope_key, parent_key, session_key)
        self._budget = target if isinstance(target, Budget) else None
        self._calls = RunTracker(grace_seconds=TRACKER_GRACE_SECONDS)
        self._default_source = (-1, "")  # (cap, the refusal's words for it), made once
        self._lock = threading.Lock()
        _LIVE.add(self)

    # -- which budget, which session -----------------------------------------------------

    def budget_for(self, scope: str | None = None, parent: str | None = None) -> Budget:
        """The budget a call charges (see the class docstring); raises
        :class:`~agent_budget.UnknownScopeError` when a manager has no scope for it."""
        if self._budget is not None:
            return self._budget
        return select_budget(
            self.target,
            scope=scope,
            parent=parent,
            default_scope=self.scope,
            default_parent=self.parent,
        )

    def session_for(self, session: object = None) -> str:
        """The session label of a call: its own, else the enclosing block's, else the
        adapter's ``session_id``, else ``""``."""
        if session is None:
            selection = current_scope()
            session = selection.session if selection is not None else None
        if session is None:
            session = self.session_id
        return "" if session is None else str(session)

    def select(self, source: object) -> tuple[str | None, str | None, str | None]:
        """``(scope, parent, session)`` a framework's per-run object names under
        :attr:`keys` (see :func:`selection_from`); scope and parent only count when the
        target is a :class:`BudgetManager`."""
        scope, parent, session = selection_from(source, *self.keys)
        if self._budget is not None:
            return None, None, session
        return scope, parent, session

    # -- output caps --------------------------------------------------------------------------

    @property
    def floor(self) -> int | None:
        """The ``min_output_tokens`` every start clamps down to (None: no clamping)."""
        return self.min_output_tokens if self.clamp else None

    def cap_to_send(self, requested: int | None, reservation: Reservation) -> int | None:
        """The output cap an adapter that controls the request should send, or None to
        send the request as it is: with ``clamp``, the cap the hold was sized for whenever
        the request asks for more (or sets none)."""
        if not self.clamp:
            return None
        granted = reservation.max_output_tokens
        if requested is not None and requested <= granted:
            return None
        return granted

    def _call_metadata(
        self, call_id: Hashable, extra: Mapping[str, Any] | None, selection: Any = _UNSET
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"framework": self.framework, "call_id": str(call_id)}
        if self.metadata:
            meta.update(self.metadata)
        if selection is _UNSET:
            selection = current_scope()
        if selection is not None and selection.metadata:
            meta.update(selection.metadata)
        if extra:
            meta.update(extra)
        return meta

    # -- start: may raise (that is the refusal) --------------------------------------------

    def _prepare(
        self,
        call_id: Hashable,
        model: str | None,
        input_tokens: int | Callable[[], int],
        max_output_tokens: int | None,
        scope: str | None,
        parent: str | None,
        session: object,
        metadata: Mapping[str, Any] | None,
        min_output_tokens: int | None,
        service_tier: str | None,
    ) -> tuple[Budget, dict[str, Any]]:
        budget = self._budget or self.budget_for(scope, parent)
        tokens = input_tokens() if callable(input_tokens) else input_tokens
        if max_output_tokens is None:
            cap = self.default_max_output_tokens
            said, source = self._default_source
            if said != cap:
                source = (
                    f"the default_max_output_tokens={cap} of the {self.framework} adapter, "
                    "as the request set no max_tokens"
                )
                self._default_source = (cap, source)
        else:
            cap = max_output_tokens
            source = "the request's max_tokens"
        # The enclosing budget_scope() block, read once: it names the session and metadata.
        selection = current_scope()
        if session is None:
            session = selection.session if selection is not None else None
            if session is None:
                session = self.session_id
        kwargs: dict[str, Any] = {
            "model": model or self.default_model or UNKNOWN_MODEL,
            "input_tokens": tokens,
            "max_output_tokens": cap,
            "session_id": "" if session is None else str(session),
            "ttl": self.hold_ttl,
            "metadata": self._call_metadata(call_id, metadata, selection),
            "output_from": source,
        }
        if self.wait:
            kwargs["wait"] = self.wait
        if service_tier is not None:
            kwargs["service_tier"] = service_tier
        if min_output_tokens is None:
            min_output_tokens = self.floor
        if min_output_tokens is not None:
            kwargs["clamp"] = True
            kwargs["min_output_tokens"] = min(min_output_tokens, cap)
        return budget, kwargs

    def start(
        self,
        call_id: Hashable,
        *,
        model: str | None,
        input_tokens: int | Callable[[], int],
        max_output_tokens: int | None = None,
        scope: str | None = None,
        parent: str | None = None,
        session: object = None,
        metadata: Mapping[str, Any] | None = None,
        min_output_tokens: int | None = None,
        service_tier: str | None = None,
    ) -> Reservation:
        """Reserve call ``call_id``'s worst case; raises to refuse it (the provider must
        then not be called). ``input_tokens`` may be a function, called only here;
        ``max_output_tokens=None`` means the request sets no cap. With ``min_output_tokens``
        (default: :attr:`floor`) the output cap is clamped to what fits, down to that floor:
        send the request with ``reservation.max_output_tokens``. ``service_tier`` is the
        tier the request asks for (the hold is priced in it). A second start of an open call
        returns its reservation."""
        known = self._calls.get(call_id)
        if known is not None:
            return known
        try:
            budget, kwargs = self._prepare(
                call_id,
                model,
                input_tokens,
                max_output_tokens,
                scope,
                parent,
                session,
                metadata,
                min_output_tokens,
                service_tier,
            )
            reservation = budget.reserve(**kwargs)
        except BaseException:
            release_elsewhere(self, call_id)
            raise
        self._calls.add(call_id, reservation)
        return reservation

    async def astart(
        self,
        call_id: Hashable,
        *,
        model: str | None,
        input_tokens: int | Callable[[], int],
        max_output_tokens: int | None = None,
        scope: str | None = None,
        parent: str | None = None,
        session: object = None,
        metadata: Mapping[str, Any] | None = None,
        min_output_tokens: int | None = None,
        service_tier: str | None = None,
    ) -> Reservation:
        """:meth:`start` for async adapters: the store is never awaited on the event loop."""
        known = self._calls.get(call_id)
        if known is not None:
            return known
        try:
            budget, kwargs = self._prepare(
                call_id,
                model,
                input_tokens,
                max_output_tokens,
                scope,
                parent,
                session,
                metadata,
                min_output_tokens,
                service_tier,
            )
            reservation = await budget.areserve(**kwargs)
        except BaseException:
            release_elsewhere(self, call_id)
            raise
        self._calls.add(call_id, reservation)
        return reservation

    # -- a call an adapter runs itself (a wrapped model) --------------------------------------

    @asynccontextmanager
    async def acall(
        self,
        call_id: Hashable,
        *,
        model: str | None,
        input_tokens: int | Callable[[], int],
        max_output_tokens: int | None = None,
        scope: str | None = None,
        parent: str | None = None,
        session: object = None,
        metadata: Mapping[str, Any] | None = None,
        min_output_tokens: int | None = None,
        service_tier: str | None = None,
        stream: bool = False,
        no_usage_hint: str | None = None,
    ) -> AsyncIterator[CallTally]:
        """Start call ``call_id`` (:meth:`astart`: raises to refuse it, before the block
        runs), run the block that calls the provider, and end the call from the
        :class:`CallTally` the block fills in, for adapters that wrap the model call itself.
        With ``min_output_tokens`` the output cap is clamped (send the provider
        ``tally.reservation.max_output_tokens``).

        The block leaving normally ends the call (:meth:`aend`), unless it is a ``stream``
        the block left before the provider finished (``tally.complete``): that stream was
        dropped by its consumer. An exception out of the block fails the call
        (:meth:`afail`, with the usage and text seen so far), unless the provider had
        already finished; the exception is re-raised.
        """
        reservation = await self.astart(
            call_id,
            model=model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            scope=scope,
            parent=parent,
            session=session,
            metadata=metadata,
            min_output_tokens=min_output_tokens,
            service_tier=service_tier,
        )
        tally = CallTally(reservation, stream=stream)
        try:
            yield tally
        except BaseException as exc:
            if tally.complete:
                await self.aend(
                    call_id,
                    tally.usage,
                    model=tally.model,
                    text=tally.text,
                    no_usage_hint=no_usage_hint,
                )
            else:
                await self.afail(
                    call_id, exc, usage=tally.usage, model=tally.model, text=tally.text
                )
            raise
        if stream and not tally.complete:
            await self.afail(
                call_id,
                GeneratorExit(),
                usage=tally.usage,
                model=tally.model,
                text=tally.text if tally.text is not None else "",
            )
        else:
            await self.aend(
                call_id,
                tally.usage,
                model=tally.model,
                text=tally.text,
                no_usage_hint=no_usage_hint,
            )

    # -- the end of a call: never raises ----------------------------------------------------

    def pop(self, call_id: Hashable) -> Reservation | None:
        """Forget call ``call_id`` and return its reservation (None if unknown or ended)."""
        return self._calls.pop(call_id)

    def get(self, call_id: Hashable) -> Reservation | None:
        return self._calls.get(call_id)

    def __contains__(self, call_id: Hashable) -> bool:
        return call_id in self._calls

    @property
    def open_calls(self) -> int:
        """Calls started and not yet ended (never-ended ones until they are forgotten)."""
        return len(self._calls)

    def end(
        self,
        call_id: Hashable,
        usage: Usage | None,
        *,
        model: str | None = None,
        text: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        no_usage_hint: str | None = None,
    ) -> UsageRecord | None:
        """The provider answered: commit the ``usage`` it reported, priced for the ``model``
        that answered. Without usage, the prompt estimate plus the counted ``text`` is
        charged (marked ``estimated``), or the whole hold when the text is unknown; the
        first such call per model warns, with ``no_usage_hint`` (the client setting that
        makes the provider report usage)."""
        reservation = self._calls.pop(call_id)
        if reservation is None:
            return None
        return self._settle(reservation, usage, model, text, metadata, no_usage_hint)

    async def aend(
        self,
        call_id: Hashable,
        usage: Usage | None,
        *,
        model: str | None = None,
        text: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        no_usage_hint: str | None = None,
    ) -> UsageRecord | None:
        """:meth:`end` for async adapters."""
        reservation = self._calls.pop(call_id)
        if reservation is None:
            return None
        if not reservation.budget.store.does_io:
            return self._settle(reservation, usage, model, text, metadata, no_usage_hint)
        from .aio import off_loop

        return await off_loop(
            lambda: self._settle(reservation, usage, model, text, metadata, no_usage_hint)
        )

    def _settle(
        self,
        reservation: Reservation,
        usage: Usage | None,
        model: str | None,
        text: str | None,
        metadata: Mapping[str, Any] | None,
        no_usage_hint: str | None,
    ) -> UsageRecord | None:
        # Budget.commit copies what it is given, so the usual labels are shared dicts.
        budget = reservation.budget
        try:
            if usage is not None:
                meta = {**_PROVIDER, **metadata} if metadata else _PROVIDER
                return budget.commit(reservation, usage, model=model, metadata=meta)
            self._warn_no_usage(reservation, no_usage_hint)
            if text is None:
                meta = {**_RESERVATION, **metadata} if metadata else _RESERVATION
                return budget.commit(reservation, None, model=model, metadata=meta)
            counted = Usage(reservation.input_tokens, self.count(text))
            meta = {**_COUNTED, **metadata} if metadata else _COUNTED
            return budget.commit(reservation, counted, model=model, metadata=meta, estimated=True)
        except Exception:
            log.exception("agent-budget could not record the end of call %s", reservation.id)
            return None

    def cached(self, call_id: Hashable) -> None:
        """A framework cache answered call ``call_id``: no provider call, nothing billed."""
        reservation = self._calls.pop(call_id)
        if reservation is not None:
            _quietly(reservation.release)

    async def acached(self, call_id: Hashable) -> None:
        """:meth:`cached` for async adapters."""
        reservation = self._calls.pop(call_id)
        if reservation is None:
            return
        if not reservation.budget.store.does_io:
            _quietly(reservation.release)
            return
        from .aio import off_loop

        await off_loop(lambda: _quietly(reservation.release))

    def fail(
        self,
        call_id: Hashable,
        error: BaseException,
        *,
        usage: Usage | None = None,
        model: str | None = None,
        text: str | None = None,
    ) -> UsageRecord | None:
        """Call ``call_id`` raised, was cancelled, or its stream stopped part way.

        The rule for a stream cut short: the provider billed the prompt and what it produced
        before it stopped, so a call that reported ``usage`` or produced ``text`` is
        committed as :func:`partial_usage`; one dropped by its consumer (``GeneratorExit``)
        whose text the adapter cannot see is charged its whole hold; a call cancelled with no
        sign of output keeps its hold until it expires (whether the provider bills it is
        unknown, and a loop of timeouts must stay capped); any other failure releases it.
        """
        reservation = self._calls.pop(call_id)
        if reservation is None:
            return None
        try:
            return self._fail(reservation, error, usage, model, text)
        except Exception:
            log.exception("agent-budget could not record the error of call %s", call_id)
            return None

    async def afail(
        self,
        call_id: Hashable,
        error: BaseException,
        *,
        usage: Usage | None = None,
        model: str | None = None,
        text: str | None = None,
    ) -> UsageRecord | None:
        """:meth:`fail` for async adapters."""
        reservation = self._calls.pop(call_id)
        if reservation is None:
            return None
        try:
            if not reservation.budget.store.does_io:
                return self._fail(reservation, error, usage, model, text)
            from .aio import off_loop

            return await off_loop(lambda: self._fail(reservation, error, usage, model, text))
        except Exception:
            log.exception("agent-budget could not record the error of call %s", call_id)
            return None

    def _fail(
        self,
        reservation: Reservation,
        error: BaseException,
        usage: Usage | None,
        model: str | None,
        text: str | None,
    ) -> UsageRecord | None:
        dropped = isinstance(error, GeneratorExit)
        meta: dict[str, Any] = {"partial": True, "error": type(error).__name__}
        if usage is None and not text:
            if dropped and text is None:
                # Dropped after output we cannot see: charge the whole hold, marked estimated.
                meta["usage_source"] = "reservation"
                return reservation.commit(None, model=model, metadata=meta)
            if not dropped:
                if not isinstance(error, asyncio.CancelledError):
                    reservation.release()
                return None  # cancelled: the hold expires on its own
        produced = self.count(text) if text else 0
        counted = partial_usage(usage, reservation.input_tokens, produced)
        meta["usage_source"] = "provider" if usage is not None else "counted"
        return reservation.commit(counted, model=model, metadata=meta, estimated=counted != usage)

    # -- helpers ----------------------------------------------------------------------------

    def count(self, text: str) -> int:
        """Tokens of ``text`` by this adapter's counter (0 if it cannot count)."""
        try:
            return self.counter.count_text(text)
        except Exception:
            log.exception("could not count the tokens of a response")
            return 0

    def _warn_no_usage(self, reservation: Reservation, hint: str | None) -> None:
        """Warn once per process, framework and model (adapters made per run included): a
        BudgetWarning, which filters and pytest see; logged at INFO, so stderr shows it once."""
        model = reservation.model
        key = (self.framework, model)
        with _WARNED_LOCK:
            if key in _WARNED or len(_WARNED) >= 1024:
                return
            _WARNED.add(key)
        message = (
            f"{self.framework}: a call to {model!r} ended without provider usage; "
            "its estimate was charged"
        )
        if hint:
            message = f"{message}. {hint}"
        warnings.warn(message, BudgetWarning, stacklevel=4)
        log.info(message)

    def __repr__(self) -> str:
        name = self._budget.name if self._budget is not None else "BudgetManager"
        return f"CallLifecycle({self.framework!r}, {name!r}, open={self.open_calls})"


class CallTally:
    """What one call produced, filled in while it runs by an adapter that sees its whole
    body (see :meth:`CallLifecycle.acall`).

    ``reservation`` is the call's hold (its ``max_output_tokens`` is the cap to send the
    provider); ``usage`` is the usage the provider reported (the latest: streams often
    report it only at the end), ``model`` the model that answered, ``complete`` is set once
    the provider finished answering. Text the call produced is added with
    :meth:`add_text`; it is what a call without usage, or a stream cut short, is charged.
    """

    __slots__ = ("_pieces", "complete", "model", "reservation", "stream", "usage")

    def __init__(self, reservation: Reservation, *, stream: bool = False) -> None:
        self.reservation = reservation
        self.stream = stream
        self.usage: Usage | None = None
        self.model: str | None = None
        self.complete = False
        self._pieces: list[str] | None = [] if stream else None

    def add_text(self, piece: str) -> None:
        """Count ``piece`` as produced by the provider."""
        if self._pieces is None:
            self._pieces = []
        if piece:
            self._pieces.append(piece)

    @property
    def text(self) -> str | None:
        """The text produced so far; None when none was seen (a call that failed before it
        answered), ``""`` for a stream that produced nothing yet."""
        return None if self._pieces is None else "".join(self._pieces)


class LifecycleAdapter:
    """Base of an adapter object that feeds one :class:`CallLifecycle` (``self._calls``):
    the properties every adapter exposes, and copies that are the object itself (frameworks
    copy configs and agents; a copy would be a second adapter charging every call again).
    Put it first among the bases, so its methods win over a framework base class's."""

    _calls: CallLifecycle

    @property
    def budget(self) -> Target:
        """The Budget or BudgetManager this adapter enforces."""
        return self._calls.target

    @property
    def calls(self) -> CallLifecycle:
        """The core lifecycle this adapter feeds."""
        return self._calls

    @property
    def open_calls(self) -> int:
        """Calls started and not yet ended (never-ended ones until they are forgotten)."""
        return self._calls.open_calls

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self

    # Equal only to itself, whatever a framework base class (a dataclass) would compare: two
    # adapters over different budgets are never the same adapter.
    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def selection_from(
    source: object,
    scope_key: str = "budget_scope",
    parent_key: str = "budget_parent",
    session_key: str = "budget_session",
) -> tuple[str | None, str | None, str | None]:
    """``(scope, parent, session)`` a framework's per-run object names (a run context, the
    dependencies of an agent run): keys of a mapping, else attributes of any other object;
    None for each one it does not name (or names as None or "")."""
    if source is None:
        return None, None, None
    found: list[str | None] = []
    for key in (scope_key, parent_key, session_key):
        value = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
        found.append(None if value is None or value == "" else str(value))
    return found[0], found[1], found[2]


def partial_usage(reported: Usage | None, estimated_input: int, produced: int) -> Usage:
    """What a stream cut short was billed: the reported usage with at least ``produced``
    output tokens (chunks rarely carry usage until the last one), or the prompt estimate
    plus ``produced`` when nothing was reported."""
    if reported is None:
        return Usage(estimated_input, produced)
    inp = reported.input_tokens or estimated_input
    cache_read = min(reported.cache_read_tokens, inp)
    cache_write = min(reported.cache_write_tokens, inp - cache_read)
    out = max(reported.output_tokens, produced)
    return Usage(inp, out, cache_read, cache_write, min(reported.reasoning_tokens, out))


# (framework, model) pairs already warned about missing usage, in this process.
_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()

# Every live lifecycle, so one that refuses a call can free the holds that other budget
# adapters took for the same call id: a framework sends a refused call no end event.
_LIVE: weakref.WeakSet[CallLifecycle] = weakref.WeakSet()


def release_elsewhere(refuser: CallLifecycle, call_id: Hashable) -> None:
    """Release the holds every other lifecycle took for ``call_id``."""
    for other in list(_LIVE):
        if other is not refuser:
            held = other._calls.pop(call_id)
            if held is not None:
                _quietly(held.release)


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:
        log.exception("agent-budget could not release a hold")


# What an outer layer already accounts for in this context: an agent middleware or wrapping
# model reserves and commits its calls itself, and a callback handler attached underneath
# must not charge them again. Marks are the layer's target (a Budget or manager object) and
# the scopes its call charges: the budget and each ancestor, named by store and scope, so
# a handler of another object of one of those scopes (``manager.get("team")`` beside a
# middleware of the manager, a parent's budget beside a child's) is accounted too.
_ACCOUNTED: ContextVar[frozenset[Hashable]] = ContextVar(
    "agent_budget_accounted", default=frozenset()
)


def _charged_scopes(budget: Budget) -> frozenset[Hashable]:
    """(store, tree, scope name) of every scope a commit on ``budget`` counts in: a scope
    of one name in another tree is another scope (Redis keys counters by the tree's root,
    and its limits are its own)."""
    store = budget.store
    where: Hashable = store.spool_key() or id(store)
    group = budget.group
    return frozenset((where, group, node.name) for node in budget.chain)


@contextmanager
def accounting_for(target: Target, budget: Budget | None = None) -> Iterator[None]:
    """Mark model calls made inside the block as accounted for by the caller: ``target``,
    and the scopes ``budget`` (the call's, default ``target`` when it is a Budget) charges."""
    marks: set[Hashable] = {id(target)}
    charged = budget if budget is not None else target if isinstance(target, Budget) else None
    if charged is not None:
        marks |= _charged_scopes(charged)
    token = _ACCOUNTED.set(_ACCOUNTED.get() | marks)
    try:
        yield
    finally:
        _ACCOUNTED.reset(token)


def accounted_by(target: Target) -> bool:
    """True inside an :func:`accounting_for` block of ``target``, or of a budget whose
    commit already counts in every scope ``target`` (a Budget) would charge."""
    marked = _ACCOUNTED.get()
    if not marked:
        return False
    if id(target) in marked:
        return True
    return isinstance(target, Budget) and _charged_scopes(target) <= marked
