"""UsageRecord: one recorded call."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .money import nanos_to_decimal

if TYPE_CHECKING:
    from .rates import ResolvedModel

__all__ = ["UsageRecord", "price_source", "record_payload"]


@dataclass
class UsageRecord:
    """A single recorded call: who, which model, how many tokens, what it cost.

    ``cost_usd`` is a float for the original API; ``cost_nanos`` (integer nano-USD) and
    :attr:`cost` (Decimal) are exact. ``estimated`` is True when the provider reported no
    usage and the pre-call estimate was recorded instead.
    """

    session_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    timestamp: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    estimated: bool = False
    scope: str = ""
    reservation_id: str = ""
    price_source: str = ""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost(self) -> Decimal:
        """Exact cost in USD."""
        return nanos_to_decimal(self.cost_nanos)


def record_payload(record: UsageRecord) -> dict[str, Any]:
    """The record as the JSON-safe mapping a store's ledger keeps (metadata values that are
    not plain scalars are left out)."""
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
        "price_source": record.price_source,
    }


def _json_safe(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


_sources: dict[int, tuple[ResolvedModel, str]] = {}
_sources_lock = threading.Lock()


def price_source(resolved: ResolvedModel) -> str:
    """Where a call's price came from: ``builtin:<row>@<effective date>`` for the built-in
    table, ``rates:<row>`` for rates the caller gave, ``fallback`` for an unknown model
    priced at the fallback rates. Cached per resolved model (resolutions are cached too)."""
    hit = _sources.get(id(resolved))
    if hit is not None and hit[0] is resolved:
        return hit[1]
    from .rates import builtin_rates

    if not resolved.known:
        source = "fallback"
    else:
        row = builtin_rates().get(resolved.price_key)
        if row is not None and row.rates is resolved.rates:
            source = f"builtin:{row.model}@{row.effective}"
        else:
            source = f"rates:{resolved.price_key}"
    with _sources_lock:
        if len(_sources) >= 4096:
            _sources.clear()
        _sources[id(resolved)] = (resolved, source)
    return source
