"""Input checks shared by every public entry point: they name the field and change nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from .stores.base import SESSION_MARK, check_text

__all__ = [
    "MAX_TOKENS",
    "check_metadata",
    "check_name",
    "check_session_id",
    "check_tokens",
    "to_decimal",
]


MAX_TOKENS = 10**12
"""Largest token count accepted anywhere: far above any real call or limit, and small enough
that every amount and cost stays exact in a store (Redis Lua numbers are doubles, exact to
2^53; SQLite integers are 64-bit)."""


def check_session_id(value: object) -> str:
    """``value`` if it is a session id every store can keep: a str of valid text (a lone
    surrogate from undecodable bytes cannot be stored as UTF-8, so it is refused before
    anything is held or recorded, never found at commit)."""
    if type(value) is str and value.isascii():
        return value
    if not isinstance(value, str):
        raise TypeError(f"session_id must be a str, got {type(value).__name__}")
    return check_text("session_id", value)


def check_tokens(field: str, value: object, *, maximum: int | None = MAX_TOKENS) -> int:
    """Return ``value`` as a token count, or raise naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be a non-negative int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{field} must be a non-negative int, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{field} is implausibly large: {value} (at most {maximum})")
    return value


def to_decimal(field: str, value: object, *, allow_zero: bool = True) -> Decimal:
    """Parse a non-negative, finite amount (int, float, str or Decimal) into a Decimal.

    Floats go through ``repr`` so ``0.1`` becomes ``Decimal("0.1")``, not its binary expansion.
    """
    if isinstance(value, bool):
        raise TypeError(f"{field} must be a number, got bool {value!r}")
    if isinstance(value, Decimal):
        dec = value
    elif isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{field} must be a finite number, got {value!r}")
        dec = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            dec = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{field} must be a number, got {value!r}") from None
    else:
        raise TypeError(f"{field} must be a number, got {type(value).__name__} {value!r}")
    if not dec.is_finite():
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    if dec < 0:
        raise ValueError(f"{field} must not be negative, got {value!r}")
    if not allow_zero and dec == 0:
        raise ValueError(f"{field} must be positive, got {value!r}")
    return dec


def check_name(field: str, value: object) -> str:
    """Return ``value`` if it is a non-empty string every store can keep: valid UTF-8 text
    (no lone surrogates) without U+001F, which marks session scopes."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{field} must be a non-empty string")
    if SESSION_MARK in value:
        raise ValueError(
            f"{field} {value!r} contains U+001F, which is reserved for session scope names"
        )
    check_text(field, value)
    return value


def check_metadata(field: str, value: object) -> Mapping[str, object]:
    """Return ``value`` if it is a mapping with str keys: what every store's ledger can keep
    as JSON (values that are not plain scalars are left out of the ledger, never an error).
    Checked when a call is reserved, so its commit cannot fail on it."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{field} must be a mapping, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(
                f"{field} keys must be str (they are stored as JSON), got "
                f"{type(key).__name__} {key!r}"
            )
    return value
