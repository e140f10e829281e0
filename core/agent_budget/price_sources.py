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
same way as the catalogue's. Names match case-insensitively: a key in any spelling of the
name (:meth:`PriceSource.match`), else, for a name the catalogue does not know, the dearest
entry of its family (:func:`.names.family_name`) that does not belong to another provider
(:meth:`PriceSource.family`; docs/pricing.md has the order).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from .names import family_name, spellings
from .price_row import PriceRow

__all__ = ["Match", "PriceSource", "litellm_prices", "load_prices", "overlay_prices"]

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


class Match(NamedTuple):
    """An overlay row a name found: the row, the key that matched, and whether the key is
    a spelling of the name as given (``exact``: the name itself, or with router/provider
    prefixes removed) or one derived from it (Bedrock/Vertex forms tidied, dates and
    aliases stripped)."""

    row: PriceRow
    key: str
    exact: bool


def _same_provider(a: str, b: str) -> bool:
    """``vertex_ai`` names ``vertex_ai-language-models``, ``bedrock`` ``bedrock_converse``."""
    return a == b or a.startswith((b + "_", b + "-")) or b.startswith((a + "_", a + "-"))


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
        # Every row of a family, in key order (a family fallback never depends on the
        # file's order), and the providers each row serves: the key's first segment
        # (``azure/...``) and LiteLLM's ``litellm_provider``; none for a bare key of yours.
        self.families: dict[str, list[str]] = {}
        self._providers: dict[str, frozenset[str]] = {}
        for name in sorted(self.rows):
            row = self.rows[name]
            self.families.setdefault(family_name(name), []).append(name)
            serves = {name.split("/", 1)[0]} if "/" in name else set()
            if row.provider and row.provider != label:
                serves.add(row.provider.lower())
            self._providers[name] = frozenset(serves)
        self._known: frozenset[str] = frozenset().union(*self._providers.values())
        # Segments that sit inside keys (``together_ai/meta-llama/...``): organisations.
        self._inner: frozenset[str] = frozenset(
            seg for name in self.rows for seg in name.split("/")[1:-1] if seg
        )
        self.aliases = {k.strip().lower(): v for k, v in (aliases or {}).items()}

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"PriceSource({self.label!r}, {len(self.rows)} models, {self.date})"

    def _name(self, model: str) -> str:
        lower = model.strip().lower()
        return self.aliases.get(lower, lower).strip().lower()

    def match(self, model: str) -> Match | None:
        """The row whose key is ``model`` in one of its spellings (most specific first),
        or None. Never a row found only by family."""
        lower = self._name(model)
        row = self.rows.get(lower)
        if row is not None:
            return Match(row, lower, True)
        for spelling in spellings(lower):
            row = self.rows.get(spelling.ref)
            if row is not None:
                return Match(row, spelling.ref, not spelling.derived)
        return None

    def family(
        self, model: str, provider: str | None = None, when: float | None = None
    ) -> tuple[PriceRow, str] | None:
        """The row pricing ``model`` by its family when no key spells it, or None.

        When the call names a provider (a ``provider/`` prefix, or ``provider``) only rows
        of that provider (or keys naming none) serve. Among the rows left, the dearest
        (input plus output, then the key) wins, whatever the file's order, so a family
        fallback never under-charges; a free row (a local model) serves only a call that
        names its provider.
        """
        lower = self._name(model)
        keys = self.families.get(family_name(lower))
        if not keys:
            return None
        # A prefix names a provider unless this source has it only inside its keys, as the
        # model's organisation ("deepseek-ai/", "meta-llama/"), never as a host.
        known, inner = self._known, self._inner
        named = {
            seg
            for seg in lower.split("/")[:-1]
            if seg
            and (seg not in inner or any(_same_provider(seg, provider) for provider in known))
        }
        if provider:
            named.add(provider.strip().lower())
        now = time.time() if when is None else when
        best: tuple[Decimal, Decimal, str] | None = None
        for key in keys:
            serves = self._providers[key]
            names_it = any(_same_provider(a, b) for a in serves for b in named)
            if named and serves and not names_it:
                continue
            quote = self.rows[key].quote(now)
            if quote is None:
                continue
            inp, out = quote.rates._exact[:2]
            if inp + out == 0 and not names_it:
                continue
            rank = (inp + out, inp, key)
            if best is None or rank > best:
                best = rank
        return None if best is None else (self.rows[best[2]], best[2])

    def find(self, model: str, provider: str | None = None) -> tuple[PriceRow, str] | None:
        """The row pricing ``model`` and the name that matched, or None: a key spelling
        the name, else the family fallback (:meth:`family`)."""
        found = self.match(model)
        if found is not None:
            return found.row, found.key
        return self.family(model, provider)


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
