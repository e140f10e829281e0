"""One catalogue model's prices: history (the price in force at a call's time), service-tier
variants (batch, flex, priority) and prompt-size tiers, turned into :class:`ModelRates`.

Prices come in genai-prices' units and keys (``input_mtok`` USD per 1M tokens,
``requests_kcount`` USD per 1,000 requests ...). A row is built lazily the first time its
model is priced, and it caches the quote in force together with the span of time it stays
in force, so pricing a call on the hot path is a dictionary lookup and two comparisons.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from .model_rates import ModelRates

__all__ = ["BILLED_KEYS", "STANDARD", "PriceRow", "Quote", "rates_from_prices", "tier_context"]

STANDARD = "standard"
# Source price keys the price model bills; others (audio, image, ...) are listed as unbilled.
BILLED_KEYS = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_1h_mtok",
    "output_reasoning_mtok",
    "requests_kcount",
    "web_searches_kcount",
)
_THOUSAND = Decimal(1000)
_DAY = 86_400.0
_FREE = ModelRates(0, 0)


class Quote(NamedTuple):
    """The rates a call pays: ``tier`` is the service tier priced (``"standard"`` unless a
    tier variant applied) and ``effective`` the date those prices took effect (``""`` when
    the source does not date them)."""

    rates: ModelRates
    tier: str
    effective: str


def tier_context(tier: str) -> dict[str, str]:
    """The request context a service-tier name selects variants with: ``"batch"`` is
    batch processing, other names are the ``service_tier`` (or ``speed``) a request asked
    for or a response reported; ``"key=value,..."`` gives the context literally."""
    tier = tier.strip()
    if "=" in tier:
        pairs = (part.split("=", 1) for part in tier.split(",") if "=" in part)
        return {k.strip(): v.strip() for k, v in pairs}
    name = tier.lower()
    context = {"service_tier": name, "speed": name}
    if name == "batch":
        context["processing"] = "batch"
    return context


def _at(value: Any, level: int | None) -> str | None:
    """A price value (a decimal string, or ``[base, [[start, price], ...]]``) at the
    prompt-size level where input exceeds ``level`` tokens (None: the base tier)."""
    if value is None or isinstance(value, str):
        return value
    base, tiers = value[0], value[1]
    price = base
    if level is not None:
        for start, tier_price in tiers:
            if start <= level:
                price = tier_price
    return str(price)


def _per_unit(value: str | None) -> Decimal:
    return Decimal(0) if value is None else Decimal(value) / _THOUSAND


def rates_from_prices(prices: Mapping[str, Any]) -> ModelRates | None:
    """:class:`ModelRates` for one set of source prices, prompt-size tiers chained as
    ``long_context``; None when the model is priced by something other than tokens (audio
    hours, pages). No prices at all is a free model (``:free`` router variants, free tiers),
    as the source prices it."""
    if not prices:
        return _FREE
    if "input_mtok" not in prices and "output_mtok" not in prices:
        return None
    thresholds = sorted({int(t[0]) for v in prices.values() if isinstance(v, list) for t in v[1]})
    rates: ModelRates | None = None
    levels: list[int | None] = [None, *thresholds]
    for index in range(len(levels) - 1, -1, -1):
        level = levels[index]

        def at(key: str, level: int | None = level) -> str | None:
            return _at(prices.get(key), level)

        write = at("cache_write_mtok") or at("cache_write_5m_mtok")
        rates = ModelRates.per_million(
            at("input_mtok") or "0",
            at("output_mtok") or "0",
            at("cache_read_mtok"),
            write,
            cache_write_1h=at("cache_write_1h_mtok"),
            reasoning=at("output_reasoning_mtok"),
            per_request=_per_unit(at("requests_kcount")),
            per_web_search=_per_unit(at("web_searches_kcount")),
            long_context_threshold=levels[index + 1] if rates is not None else None,
            long_context=rates,
        )
    return rates


def _midnight(date: str) -> float:
    day = _dt.date.fromisoformat(date)
    return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc).timestamp()


def _seconds(clock: str) -> float:
    t = _dt.time.fromisoformat(clock)
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _active(constraint: Any, when: float) -> bool:
    """genai-prices' constraint semantics: a start date is in force from 00:00 UTC that
    day; a time-of-day window is [start, end) UTC, wrapping past midnight."""
    if constraint is None:
        return True
    if isinstance(constraint, str):
        return when >= _midnight(constraint)
    start, end = _seconds(constraint[1]), _seconds(constraint[2])
    now = when % _DAY
    if end < start:
        return now >= start or now < end
    return start <= now < end


def _boundaries(constraint: Any, when: float) -> list[float]:
    if constraint is None:
        return []
    if isinstance(constraint, str):
        return [_midnight(constraint)]
    day = math.floor(when / _DAY) * _DAY
    return [
        day + offset * _DAY + _seconds(clock)
        for offset in (-1, 0, 1)
        for clock in (constraint[1], constraint[2])
    ]


class PriceRow:
    """One model of a catalogue: its id, provider, price periods and tier variants."""

    __slots__ = (
        "_cache",
        "_lock",
        "_periods",
        "_standard_quote",
        "_variants",
        "id",
        "provider",
        "snapshot",
    )

    def __init__(
        self,
        id: str,
        provider: str,
        prices: Any,
        variants: Sequence[Any] | None,
        snapshot: str,
    ) -> None:
        self.id = id
        self.provider = provider
        self.snapshot = snapshot
        self._periods: list[tuple[Any, Mapping[str, Any]]] = (
            [(None, prices)] if isinstance(prices, Mapping) else [(c, p) for c, p in prices]
        )
        self._variants: list[tuple[Mapping[str, str], Any, Mapping[str, Any]]] = [
            (w, c, p) for w, c, p in variants or ()
        ]
        self._cache: dict[tuple[str | None, bool], tuple[float, float, Quote | None]] = {}
        # (from, until, quote): the standard quote and the span it stays in force.
        self._standard_quote: tuple[float, float, Quote | None] = (0.0, -1.0, None)
        self._lock = threading.Lock()

    def quote(self, when: float, tier: str | None = None, variants: bool = True) -> Quote | None:
        """The rates in force at ``when`` (epoch seconds) for ``tier``; None when the model
        is not priced by tokens. ``variants=False`` ignores tier variants (genai-prices
        applies them only to a provider's own models, not to ones it falls back to)."""
        if tier is None:  # the hot path: standard prices, in force until the next change
            standard = self._standard_quote
            if standard[0] <= when < standard[1]:
                return standard[2]
            quote = self._quote(when, None, variants)
            self._standard_quote = (*self._window(when), quote)
            return quote
        key = (tier, variants)
        cached = self._cache.get(key)
        if cached is not None and cached[0] <= when < cached[1]:
            return cached[2]
        quote = self._quote(when, tier, variants)
        low, high = self._window(when)
        with self._lock:
            if len(self._cache) >= 64:
                self._cache.clear()
            self._cache[key] = (low, high, quote)
        return quote

    def _standard(self, when: float) -> tuple[Any, Mapping[str, Any]]:
        periods = self._periods
        if len(periods) == 1:
            return periods[0]
        for constraint, prices in reversed(periods):
            if _active(constraint, when):
                return constraint, prices
        return periods[0]

    def prices_at(
        self, when: float, tier: str | None = None, variants: bool = True
    ) -> tuple[Mapping[str, Any], str, str]:
        """The source prices in force (tier variants applied), the tier name and the date
        they took effect (``""`` when undated)."""
        constraint, prices = self._standard(when)
        effective = constraint if isinstance(constraint, str) else ""
        label = STANDARD
        if tier and variants and self._variants:
            context = tier_context(tier)
            overrides: dict[str, Any] = {}
            for when_, constraint_v, partial in self._variants:
                if constraint_v is not None and not _active(constraint_v, when):
                    continue
                if all(context.get(k) == v for k, v in when_.items()):
                    label = tier.strip().lower()
                    if isinstance(constraint_v, str) and partial:
                        effective = max(effective, constraint_v)
                    for key, value in partial.items():
                        overrides.setdefault(key, value)
            if overrides:
                prices = {**prices, **overrides}
        return prices, label, effective

    def _quote(self, when: float, tier: str | None, variants: bool) -> Quote | None:
        prices, label, effective = self.prices_at(when, tier, variants)
        rates = rates_from_prices(prices)
        return None if rates is None else Quote(rates, label, effective)

    def _window(self, when: float) -> tuple[float, float]:
        """The span around ``when`` in which no constraint of this row changes state."""
        low, high = -math.inf, math.inf
        constraints = [c for c, _ in self._periods] + [c for _, c, _ in self._variants]
        for constraint in constraints:
            for edge in _boundaries(constraint, when):
                if edge <= when:
                    low = max(low, edge)
                else:
                    high = min(high, edge)
        return low, high

    def history(self) -> list[tuple[str, Mapping[str, Any]]]:
        """Every price period as ``(constraint in words, prices)``, oldest first."""
        out = []
        for constraint, prices in self._periods:
            if constraint is None:
                words = "always" if len(self._periods) == 1 else "initially"
            elif isinstance(constraint, str):
                words = f"from {constraint}"
            else:
                words = f"daily {constraint[1]}-{constraint[2]} UTC"
            out.append((words, prices))
        return out

    def variant_names(self) -> list[str]:
        """The request contexts of this row's tier variants, e.g. ``service_tier=flex``."""
        return [",".join(f"{k}={v}" for k, v in w.items()) for w, _c, _p in self._variants]

    def unbilled_keys(self, when: float) -> list[str]:
        """Source price keys in force that agent-budget's usage cannot bill (audio, ...)."""
        prices = self._standard(when)[1]
        return sorted(k for k in prices if k not in BILLED_KEYS and k != "cache_write_5m_mtok")
