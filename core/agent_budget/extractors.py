"""Read a response's usage exactly as its provider means it, with the source's extractors.

:func:`.usage.usage_from_mapping` reads any shape without knowing the provider, which is
what framework callbacks need. A few shapes mean different things at different providers:
xAI's ``completion_tokens`` leaves reasoning out where OpenAI's includes it; Perplexity
adds citation tokens. When the caller knows the provider, :func:`extract_usage` applies the
provider's own extractors from the price catalogue (genai-prices' ``extractors``: where each
count lives in the response and which usage field it adds to), so the reading is the
source's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .catalogue import Catalogue, default_catalogue
from .matching import clause_matches
from .usage import Usage

__all__ = ["extract_usage"]

_MISSING = object()


def _step(data: Any, step: Any) -> Any:
    if isinstance(step, str):
        if isinstance(data, Mapping):
            return data.get(step, _MISSING)
        value = getattr(data, step, _MISSING)
        return value
    # ["array-match", field, clause]: the first item whose ``field`` matches the clause.
    _tag, field, clause = step
    if isinstance(data, Sequence) and not isinstance(data, str):
        for item in data:
            value = item.get(field) if isinstance(item, Mapping) else getattr(item, field, None)
            if isinstance(value, str) and clause_matches(clause, value.lower()) is not None:
                return item
    return _MISSING


def _walk(data: Any, path: Any) -> Any:
    for step in [path] if isinstance(path, str) else path:
        if data is None or data is _MISSING:
            return _MISSING
        data = _step(data, step)
    return data


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _apply(extractor: Mapping[str, Any], response: Any) -> tuple[int, dict[str, int]] | None:
    """How many of its paths an extractor finds in ``response`` and the usage values it
    reads, or None when it does not fit (its root or a required count is missing)."""
    root = _walk(response, extractor["root"])
    if root is _MISSING or root is None:
        return None
    values: dict[str, int] = {}
    found = 0
    for path, dest, required in extractor["map"]:
        value = _count(_walk(root, path))
        if value is None:
            if required:
                return None
            continue
        found += 1
        values[dest] = values.get(dest, 0) + value
    return (found, values) if values else None


def _usage(values: Mapping[str, int], tier: str | None) -> Usage | None:
    inp = values.get("input_tokens", 0)
    out = values.get("output_tokens", 0)
    if not inp and not out:
        return None
    read = min(values.get("cache_read_tokens", 0), inp)
    write = values.get("cache_write_tokens")
    write_1h = values.get("cache_write_1h_tokens", 0)
    if write is None:
        write = values.get("cache_write_5m_tokens", 0) + write_1h
    write = min(write, inp - read)
    return Usage(
        inp,
        out,
        read,
        write,
        min(values.get("output_reasoning_tokens", 0), out),
        min(write_1h, write),
        values.get("web_searches", 0),
        tier,
    )


def extract_usage(
    response: Any,
    provider: str,
    *,
    flavor: str | None = None,
    catalogue: Catalogue | None = None,
) -> Usage | None:
    """The usage ``response`` (a provider's decoded JSON, or an SDK object) reports, read
    by ``provider``'s extractors (``flavor`` names one: ``"chat"``, ``"responses"``,
    ``"anthropic"`` ...; by default the one that finds the most counts). None when none fits
    or nothing was reported. Raises ``LookupError`` for a provider the catalogue does not know.
    """
    source = catalogue or default_catalogue()
    info = source.provider(provider)
    if info is None:
        raise LookupError(f"unknown provider {provider!r}")
    extractors = [e for e in info.extractors if flavor is None or e["flavor"] == flavor]
    if flavor is not None and not extractors:
        known = ", ".join(e["flavor"] for e in info.extractors) or "none"
        raise LookupError(f"{info.id} has no usage flavor {flavor!r} (known: {known})")
    tier = response.get("service_tier") if isinstance(response, Mapping) else None
    if tier is None and not isinstance(response, Mapping):
        tier = getattr(response, "service_tier", None)
    best: tuple[int, dict[str, int], Mapping[str, Any]] | None = None
    for extractor in extractors:  # the flavor that finds the most counts; the first on ties
        read = _apply(extractor, response)
        if read is not None and (best is None or read[0] > best[0]):
            best = (read[0], read[1], extractor)
    if best is None:
        return None
    if not isinstance(tier, str):
        usage_tier = _walk(_walk(response, best[2]["root"]), "service_tier")
        tier = usage_tier if isinstance(usage_tier, str) else None
    return _usage(best[1], tier)
