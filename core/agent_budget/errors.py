"""The exceptions and warnings agent-budget raises."""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "BudgetExceededError",
    "BudgetWarning",
    "PriceConfigError",
    "StoreConfigError",
    "StoreError",
    "StorePermanentError",
    "StoreTransientError",
    "StoreUnavailableError",
    "UnknownModelError",
    "UnknownScopeError",
]


class BudgetError(Exception):
    """Base class of every error agent-budget raises on its own account."""


class BudgetExceededError(BudgetError):
    """A hard limit refused a call, or was crossed by recorded usage.

    ``used`` and ``limit`` are tokens for token limits and USD (float) for cost limits;
    ``reserved`` is what in-flight calls held and ``requested`` what the refused call asked.
    """

    def __init__(
        self,
        message: str,
        scope: str,
        limit_type: str,
        used: float,
        limit: float,
        *,
        reserved: float = 0,
        requested: float = 0,
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit_type = limit_type
        self.used = used
        self.limit = limit
        self.reserved = reserved
        self.requested = requested

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_exceeded,
            (
                str(self),
                self.scope,
                self.limit_type,
                self.used,
                self.limit,
                self.reserved,
                self.requested,
            ),
        )


def _rebuild_exceeded(
    message: str,
    scope: str,
    limit_type: str,
    used: float,
    limit: float,
    reserved: float,
    requested: float,
) -> BudgetExceededError:
    return BudgetExceededError(
        message, scope, limit_type, used, limit, reserved=reserved, requested=requested
    )


class BudgetWarning(UserWarning):
    """Emitted (via :mod:`warnings`) for conditions that deserve a look, e.g. unknown models."""


class UnknownModelError(BudgetError, ValueError):
    """A model has no price and the rate table is configured to refuse unknown models."""


class UnknownScopeError(BudgetError, KeyError):
    """A call named a scope that is neither registered nor matched by a template."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StoreError(BudgetError):
    """A budget store failed; the driver's own exception is chained as ``__cause__``."""


class StoreTransientError(StoreError):
    """The store could not be reached or did not answer in time (connection refused, a
    timeout, a server busy loading or failing over): the same operation may succeed later.

    ``maybe_applied`` is False only when the operation certainly never reached the store
    (the connection could not be made); otherwise its reply may have been lost after the
    store applied it, so a retry must rely on the store's idempotency.
    """

    def __init__(self, message: str, *, maybe_applied: bool = True) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_transient, (str(self), self.maybe_applied))


def _rebuild_transient(message: str, maybe_applied: bool) -> StoreTransientError:
    return StoreTransientError(message, maybe_applied=maybe_applied)


class StorePermanentError(StoreError):
    """The store refused this operation's input (data it cannot keep, a script error):
    retrying it unchanged fails again, so it is never buffered for replay."""


class StoreUnavailableError(StoreError):
    """The store could not be reached and the budget fails closed, so the call is refused."""


class StoreConfigError(BudgetError, ValueError):
    """A store URL or store option is malformed or names an unknown scheme."""


class PriceConfigError(BudgetError, ValueError):
    """The price source ``AGENT_BUDGET_PRICES`` names cannot be used (a typo, a missing or
    unreadable file, genai-prices not installed); the message names the variable, its value
    and the accepted values."""
