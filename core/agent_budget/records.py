"""UsageRecord: one recorded call."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .money import nanos_to_decimal

__all__ = ["UsageRecord", "record_payload"]


@dataclass(slots=True)
class UsageRecord:
    """A single recorded call: who, which model, how many tokens, what it cost.

    ``cost_usd`` is a float for the original API; ``cost_nanos`` (integer nano-USD) and
    :attr:`cost` (Decimal) are exact. ``estimated`` is True when the provider reported no
    usage and the pre-call estimate was recorded instead.

    Where the price came from: ``price_source`` (``"genai-prices 0.2.3"``, ``"rates="``, an
    overlay's name, or ``"fallback"`` for a model with no price), ``price_date`` (the date
    of that source: the catalogue's snapshot, an overlay's ``date``), ``price_id`` (the row that
    priced the call, e.g. ``"openai:gpt-4o"``) and ``price_tier`` (the service tier priced,
    ``"standard"`` unless batch / flex / priority applied, plus ``", input>N"`` when a
    prompt-size tier did).

    Slotted (no per-record ``__dict__``): a budget keeps up to ``max_records`` of them and a
    MemoryStore's ledger as many again.
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
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    price_source: str = ""
    price_date: str = ""
    price_id: str = ""
    price_tier: str = ""

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
        "cache_write_1h_tokens": record.cache_write_1h_tokens,
        "web_searches": record.web_searches,
        "price_source": record.price_source,
        "price_date": record.price_date,
        "price_id": record.price_id,
        "price_tier": record.price_tier,
    }


def _json_safe(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
