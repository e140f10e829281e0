"""Convert genai-prices' provider objects into agent-budget's compact price document.

Used by ``scripts/make_prices.py`` (``make prices``) to write the shipped snapshot
``data/prices.json``, and at run time by :func:`agent_budget.catalogue.Catalogue.from_genai_prices`
when a user opts in to genai-prices' live data. The objects are read by attribute and class
name only, so this module imports nothing from genai-prices (the core stays stdlib-only).

The document keeps what pricing needs and drops the prose: per provider its id, the clauses
that recognise its model names (``match``) and provider names (``provider_match``), the
providers it falls back to, its usage extractors, and its models; per model its id, match
clause, prices (a list of ``[constraint, prices]`` when prices changed over time) and
request variants (service tiers, batch). Prices are decimal strings in the source's own
units (``*_mtok``: USD per 1M tokens, ``*_kcount``: USD per 1,000).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

__all__ = ["FORMAT", "convert_providers", "dump_document"]

FORMAT = "agent-budget-prices/1"

_CLAUSES = {
    "ClauseEquals": ("eq", "equals"),
    "ClauseStartsWith": ("sw", "starts_with"),
    "ClauseEndsWith": ("ew", "ends_with"),
    "ClauseContains": ("in", "contains"),
    "ClauseRegex": ("re", "regex"),
}


def _clause(clause: Any) -> Any:
    """A match clause as ``[kind, value]``; ``or`` / ``and`` nest lists of clauses."""
    if clause is None:
        return None
    kind = type(clause).__name__
    if kind in _CLAUSES:
        tag, attr = _CLAUSES[kind]
        return [tag, getattr(clause, attr)]
    if kind == "ClauseOr":
        return ["or", [_clause(c) for c in clause.or_]]
    if kind == "ClauseAnd":
        return ["and", [_clause(c) for c in clause.and_]]
    raise ValueError(f"unknown match clause {kind}")


def _decimal(value: Any) -> str:
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _price_value(value: Any) -> Any:
    if type(value).__name__ == "TieredPrices":
        return [_decimal(value.base), [[int(t.start), _decimal(t.price)] for t in value.tiers]]
    return _decimal(value)


def _prices(model_price: Any) -> dict[str, Any]:
    return {
        key: _price_value(value)
        for key, value in vars(model_price).items()
        if not key.startswith("_") and value is not None
    }


def _constraint(constraint: Any) -> Any:
    if constraint is None:
        return None
    kind = type(constraint).__name__
    if kind == "StartDateConstraint":
        return constraint.start_date.isoformat()
    if kind == "TimeOfDateConstraint":
        return ["time", _utc_time(constraint.start_time), _utc_time(constraint.end_time)]
    raise ValueError(f"unknown price constraint {kind}")


def _utc_time(value: _dt.time) -> str:
    if value.tzinfo is not None:
        value = (
            _dt.datetime.combine(_dt.date(1970, 1, 1), value).astimezone(_dt.timezone.utc).time()
        )
    return value.replace(tzinfo=None).isoformat()


def _path(path: Any) -> Any:
    if isinstance(path, str):
        return path
    out: list[Any] = []
    for step in path:
        if isinstance(step, str):
            out.append(step)
        else:  # ArrayMatch: the first item of a list whose ``field`` matches
            out.append(["array-match", step.field, _clause(step.match)])
    return out


def _extractor(extractor: Any) -> dict[str, Any]:
    return {
        "flavor": extractor.api_flavor,
        "root": _path(extractor.root),
        "model": _path(extractor.model_path),
        "map": [[_path(m.path), m.dest, bool(m.required)] for m in extractor.mappings],
    }


def _model(model: Any) -> list[Any]:
    prices: Any
    if isinstance(model.prices, list):
        prices = [[_constraint(c.constraint), _prices(c.prices)] for c in model.prices]
    else:
        prices = _prices(model.prices)
    row: list[Any] = [model.id, _clause(model.match), prices]
    variants = getattr(model, "price_variants", None)
    if variants:
        row.append([[dict(v.when), _constraint(v.constraint), _prices(v.prices)] for v in variants])
    return row


def _start_dates(providers: Iterable[Any]) -> Iterable[str]:
    for provider in providers:
        for model in provider.models:
            for cond in model.prices if isinstance(model.prices, list) else ():
                found = _constraint(cond.constraint)
                if isinstance(found, str):
                    yield found


def convert_providers(
    providers: Iterable[Any],
    *,
    source: str = "genai-prices",
    version: str = "",
    snapshot: str | None = None,
    url: str = "https://github.com/pydantic/genai-prices",
    license: str = "MIT; Copyright (c) Pydantic Services Inc. 2025 to present",
) -> dict[str, Any]:
    """The price document for genai-prices ``providers`` (its ``data.providers`` list or a
    refreshed snapshot's). ``snapshot`` is the date the data was taken (default: today)."""
    providers = list(providers)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "version": version,
        "snapshot": snapshot or _dt.date.today().isoformat(),
        "latest_change": max(_start_dates(providers), default=None),
        "url": url,
        "license": license,
        "units": {"*_mtok": "USD per 1M tokens", "*_kcount": "USD per 1,000"},
        "providers": [],
    }
    for provider in providers:
        doc["providers"].append(
            {
                "id": provider.id,
                "name": provider.name,
                "match": _clause(provider.model_match),
                "provider_match": _clause(provider.provider_match),
                "fallback": list(provider.fallback_model_providers or []),
                "extractors": [_extractor(e) for e in provider.extractors or []],
                "models": [_model(m) for m in provider.models],
            }
        )
    return doc


def dump_document(doc: Mapping[str, Any]) -> str:
    """The document as JSON text with one model per line, so a price update reads as a
    small diff."""
    head = {k: v for k, v in doc.items() if k != "providers"}
    lines = ["{"]
    for key, value in head.items():
        lines.append(f" {json.dumps(key)}: {_compact(value)},")
    lines.append(' "providers": [')
    providers = list(doc["providers"])
    for p_index, provider in enumerate(providers):
        lines.append("  {")
        for key, value in provider.items():
            if key == "models":
                continue
            lines.append(f"   {json.dumps(key)}: {_compact(value)},")
        lines.append('   "models": [')
        models = provider["models"]
        for m_index, model in enumerate(models):
            comma = "," if m_index < len(models) - 1 else ""
            lines.append(f"    {_compact(model)}{comma}")
        lines.append("   ]")
        lines.append("  }" + ("," if p_index < len(providers) - 1 else ""))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
