"""Further price sources a rate table consults before the catalogue: a user overlay file
(negotiated prices, private and self-hosted models) and LiteLLM's
``model_prices_and_context_window.json``.

An overlay file is JSON (USD per 1M tokens; fees in USD each)::

    {"source": "ACME contract 2026", "date": "2026-11-01",
     "models": {
        "gpt-4o": {"input": "2.00", "output": "8.00", "cache_read": "1.00"},
        "claude-sonnet-4-5": {"input": 3, "output": 15, "cache_write": 3.75,
                              "cache_write_1h": 6, "tiers": [{"above": 200000,
                              "input": 6, "output": 22.5}],
                              "service_tiers": {"batch": {"input": 1.5, "output": 7.5}}},
        "llama-local": [{"input": 0, "output": 0},
                        {"from": "2027-01-01", "input": 0.1, "output": 0.1}]},
     "aliases": {"prod-chat": "gpt-4o"}}

Both kinds become :class:`PriceRow` objects, so history, tiers and service tiers price the
same way as the catalogue's. Names match case-insensitively, in any spelling whose family
(:func:`.names.family_name`) is an entry's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from .names import family_name, spellings
from .price_row import PriceRow

__all__ = ["PriceSource", "litellm_prices", "load_prices", "overlay_prices"]

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)
_OVERLAY_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "reasoning": "output_reasoning_mtok",
}
_OVERLAY_FEES = {"per_request": "requests_kcount", "per_web_search": "web_searches_kcount"}


class PriceSource:
    """Prices by model name from one file or mapping: a label and date for provenance,
    rows keyed by lower-case name and by family, and aliases."""

    def __init__(
        self,
        label: str,
        date: str,
        rows: Mapping[str, PriceRow],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.label = label
        self.date = date
        self.rows = {name.lower(): row for name, row in rows.items()}
        self.families: dict[str, PriceRow] = {}
        for name, row in self.rows.items():
            self.families.setdefault(family_name(name), row)
        self.aliases = {k.strip().lower(): v for k, v in (aliases or {}).items()}

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"PriceSource({self.label!r}, {len(self.rows)} models, {self.date})"

    def find(self, model: str) -> tuple[PriceRow, str] | None:
        """The row pricing ``model`` and the name that matched, or None."""
        lower = model.strip().lower()
        lower = self.aliases.get(lower, lower)
        refs = [lower] + [s.ref for s in spellings(lower)]
        for ref in refs:
            row = self.rows.get(ref)
            if row is not None:
                return row, ref
        family = family_name(lower)
        row = self.families.get(family)
        return None if row is None else (row, family)


def _decimal(where: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal, float)):
        raise ValueError(f"{where}: a price must be a number, got {value!r}")
    try:
        dec = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except ArithmeticError:
        raise ValueError(f"{where}: not a number: {value!r}") from None
    if not dec.is_finite() or dec < 0:
        raise ValueError(f"{where}: a price must be a finite non-negative number: {value!r}")
    return dec


def _text(dec: Decimal) -> str:
    text = format(dec.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _overlay_prices(where: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    prices: dict[str, Any] = {}
    for key, value in entry.items():
        if key in _OVERLAY_KEYS:
            prices[_OVERLAY_KEYS[key]] = _text(_decimal(f"{where}.{key}", value))
        elif key in _OVERLAY_FEES:
            fee = _decimal(f"{where}.{key}", value) * _THOUSAND
            prices[_OVERLAY_FEES[key]] = _text(fee)
        elif key not in ("tiers", "service_tiers", "from", "note"):
            raise ValueError(f"{where}: unknown price field {key!r}")
    if "input_mtok" not in prices and "output_mtok" not in prices:
        raise ValueError(f"{where}: needs at least 'input' or 'output' (USD per 1M tokens)")
    tiers = entry.get("tiers") or []
    if not isinstance(tiers, list):
        raise ValueError(f"{where}.tiers: expected a list of {{'above': tokens, ...}}")
    for tier in tiers:
        above = tier.get("above") if isinstance(tier, Mapping) else None
        if not isinstance(above, int) or isinstance(above, bool) or above < 0:
            raise ValueError(f"{where}.tiers: 'above' must be a token count, got {above!r}")
    for tier in sorted(tiers, key=lambda t: int(t["above"])):
        above = tier["above"]
        for key, value in tier.items():
            if key == "above":
                continue
            if key not in _OVERLAY_KEYS:
                raise ValueError(f"{where}.tiers: unknown price field {key!r}")
            price_key = _OVERLAY_KEYS[key]
            tier_price = _text(_decimal(f"{where}.tiers.{key}", value))
            base = prices.get(price_key)
            if base is None:
                base = prices.get("input_mtok", "0")
            if isinstance(base, str):
                prices[price_key] = [base, [[above, tier_price]]]
            else:
                base[1].append([above, tier_price])
    return prices


def overlay_prices(doc: Mapping[str, Any], *, label: str | None = None) -> PriceSource:
    """A :class:`PriceSource` from an overlay document (see the module docstring)."""
    name = label or str(doc.get("source") or "overlay")
    models = doc.get("models")
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"{name}: an overlay needs a non-empty 'models' object")
    date = str(doc.get("date") or "")
    rows: dict[str, PriceRow] = {}
    for model, value in models.items():
        where = f"{name}: models[{model!r}]"
        entries = value if isinstance(value, list) else [value]
        periods: list[Any] = []
        variants: list[Any] = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected an object of prices")
            start = entry.get("from")
            if start is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(start)):
                raise ValueError(f"{where}: 'from' must be a YYYY-MM-DD date, got {start!r}")
            periods.append([start, _overlay_prices(where, entry)])
            for tier, partial in (entry.get("service_tiers") or {}).items():
                variants.append(
                    [{"service_tier": str(tier).lower()}, start, _overlay_prices(where, partial)]
                )
        rows[model] = PriceRow(model, name, periods, variants or None, date)
    aliases = doc.get("aliases") or {}
    if not isinstance(aliases, Mapping):
        raise ValueError(f"{name}: 'aliases' must be an object of name -> model")
    return PriceSource(name, date, rows, {str(k): str(v) for k, v in aliases.items()})


_LITELLM_TOKEN_KEYS = {
    "input_cost_per_token": "input_mtok",
    "output_cost_per_token": "output_mtok",
    "cache_read_input_token_cost": "cache_read_mtok",
    "cache_creation_input_token_cost": "cache_write_mtok",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h_mtok",
    "output_cost_per_reasoning_token": "output_reasoning_mtok",
}
_LITELLM_TIER = re.compile(r"^(.*)_above_(\d+)k_tokens$")
_LITELLM_SERVICE = re.compile(r"^(.*)_(batches|priority|flex)$")


def _litellm_row(name: str, entry: Mapping[str, Any], label: str, date: str) -> PriceRow | None:
    prices: dict[str, Any] = {}
    tiers: dict[str, list[list[Any]]] = {}
    services: dict[str, dict[str, str]] = {}
    for key, value in entry.items():
        if not isinstance(value, (int, float, Decimal)) or isinstance(value, bool):
            continue
        per_m = _text(_decimal(f"{label}: {name}.{key}", value) * _MILLION)
        if key in _LITELLM_TOKEN_KEYS:
            prices[_LITELLM_TOKEN_KEYS[key]] = per_m
            continue
        tier = _LITELLM_TIER.match(key)
        if tier and tier.group(1) in _LITELLM_TOKEN_KEYS:
            above = int(tier.group(2)) * 1000
            tiers.setdefault(_LITELLM_TOKEN_KEYS[tier.group(1)], []).append([above, per_m])
            continue
        service = _LITELLM_SERVICE.match(key)
        if service and service.group(1) in _LITELLM_TOKEN_KEYS:
            tier_name = "batch" if service.group(2) == "batches" else service.group(2)
            services.setdefault(tier_name, {})[_LITELLM_TOKEN_KEYS[service.group(1)]] = per_m
    if "input_mtok" not in prices and "output_mtok" not in prices:
        return None  # images, audio seconds, rerank: not priced by tokens
    for price_key, levels in tiers.items():
        base = prices.get(price_key, prices.get("input_mtok", "0"))
        prices[price_key] = [base, sorted(levels)]
    search = entry.get("search_context_cost_per_query")
    if isinstance(search, Mapping):
        fees = [
            _decimal(f"{label}: {name}.search_context_cost_per_query", v)
            for v in search.values()
            if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)
        ]
        if fees:  # the size is chosen per request; the dearest holds the cap
            prices["web_searches_kcount"] = _text(max(fees) * _THOUSAND)
    variants = [[{"service_tier": t}, None, p] for t, p in services.items()]
    return PriceRow(name, str(entry.get("litellm_provider") or label), prices, variants, date)


def litellm_prices(
    doc: Mapping[str, Any], *, label: str = "litellm", date: str = ""
) -> PriceSource:
    """A :class:`PriceSource` from LiteLLM's ``model_prices_and_context_window.json``
    (USD per token; ``*_above_128k_tokens`` tiers; ``*_batches`` / ``*_priority`` /
    ``*_flex`` service tiers). Entries not priced by tokens are skipped."""
    rows: dict[str, PriceRow] = {}
    for name, entry in doc.items():
        if name == "sample_spec" or not isinstance(entry, Mapping):
            continue
        row = _litellm_row(name, entry, label, date)
        if row is not None:
            rows[name] = row
    if not rows:
        raise ValueError(f"{label}: no token-priced models in this LiteLLM price file")
    return PriceSource(label, date, rows)


def load_prices(path: str | os.PathLike[str]) -> PriceSource:
    """Load an overlay file or a LiteLLM price file (told apart by their content)."""
    file = Path(path)
    try:
        doc = json.loads(file.read_text("utf-8"), parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"{file}: expected a JSON object")
    if "models" in doc and isinstance(doc["models"], Mapping):
        return overlay_prices(doc, label=str(doc.get("source") or file.name))
    date = _file_date(file)
    return litellm_prices(doc, label=f"litellm:{file.name}", date=date)


def _file_date(file: Path) -> str:
    import datetime as dt

    stamp = file.stat().st_mtime
    return dt.datetime.fromtimestamp(stamp, tz=dt.timezone.utc).date().isoformat()
