"""Model names as they reach a callback: normalisation, the family used for counters, and
the spellings a price lookup tries.

Names arrive as providers, clouds and routers spell them: dated snapshots
(``gpt-4o-2024-08-06``, ``claude-3-5-sonnet-20241022``, ``gpt-4-0613``), ``-latest`` and
``-0`` aliases, ``ft:`` fine-tunes, ``provider/model`` router prefixes (LiteLLM's
``openai/...``, OpenRouter's ``anthropic/claude-3.5-sonnet``), Bedrock ids (``anthropic.``,
regional ``us.`` / ``eu.`` / ``apac.``, ``global.``, ``-v1:0``), Vertex ``@`` dates and the
Gemini REST ``models/`` prefix. Nothing here knows prices: :mod:`.catalogue` tries the
spellings :func:`spellings` lists, in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Spelling", "family_name", "normalize_model_name", "normalized_key", "spellings"]

_REGIONS = r"us|eu|apac|global|us-gov|ca|jp|au|in|sa|uk|regional"
_BEDROCK_VENDORS = (
    r"anthropic|amazon|meta|cohere|ai21|mistral|deepseek|openai|qwen|writer|moonshotai|zai"
    r"|google|nvidia|stability|twelvelabs|minimax"
)
_BEDROCK = re.compile(rf"^(?:(?:{_REGIONS})\.)?(?:{_BEDROCK_VENDORS})\.(.+)$")
_BEDROCK_REGIONAL = re.compile(rf"^(?:{_REGIONS})\.(?:{_BEDROCK_VENDORS})\.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$|:\d+$")
_ROUTER_VARIANT = re.compile(r":(?:free|beta|thinking|online|nitro|floor|extended|exacto)$")
_CLAUDE_DOTS = re.compile(r"(?<=\d)\.(?=\d)")
# Suffixes a family name drops, one at a time: a date (2024-08-06, 20241022, 08-2024, MMDD,
# YYMM), -latest, a 3-digit version (gemini-1.5-pro-002) or a -0 alias (claude-sonnet-4-0).
_SUFFIX = re.compile(
    r"(?:-\d{4}-\d{2}-\d{2}"
    r"|-20\d{6}"
    r"|-(?:0[1-9]|1[0-2])-20\d{2}"
    r"|-(?:(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])|2[3-9](?:0[1-9]|1[0-2]))"
    r"|-latest"
    r"|-\d{3}"
    r"|(?<=-\d)-0)$"
)
# Spellings the source itself lacks, mapped to one it has (reported upstream as gaps).
_SOURCE_GAPS = {
    "gemini-1.5-flash-8b": "gemini-flash-1.5-8b",
}


def normalize_model_name(model: str) -> str:
    """Canonical spelling of a model id as it reaches a callback.

    Lower-cases, drops provider prefixes (``openai/``, ``models/``), Bedrock ids and their
    regional prefixes and ``-v1:0`` versions, and Vertex ``@`` dates. Dated snapshots are
    kept here (:func:`family_name` strips them).
    """
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    match = _BEDROCK.match(name)
    if match:
        name = _BEDROCK_VERSION.sub("", match.group(1))
    return name.replace("@", "-")


def _strip_once(name: str) -> str:
    found = _SUFFIX.search(name)
    return name[: found.start()] if found is not None and found.start() > 0 else name


def _tidy(name: str) -> str:
    """Spelling fixes that keep the model: router variants, Claude's dotted versions,
    Azure's ``gpt-35``."""
    if name.startswith("ft:"):
        return name
    name = _ROUTER_VARIANT.sub("", name)
    if name.startswith("claude"):
        name = _CLAUDE_DOTS.sub("-", name)
    if name.startswith("gpt-35"):
        name = "gpt-3.5" + name[6:]
    return name


def normalized_key(model: str) -> str:
    """The spelling user rate keys and aliases are filed under: normalised and tidied
    (``OpenAI/GPT-4o`` -> ``gpt-4o``, ``anthropic/claude-3.5-sonnet`` ->
    ``claude-3-5-sonnet``), dates kept."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        return name
    return _tidy(normalize_model_name(name))


def _fine_tune_base(name: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org::id`` -> ``ft:gpt-4o-mini-2024-07-18``."""
    return "ft:" + name[3:].split(":", 1)[0]


def family_name(model: str) -> str:
    """The model family a name counts under (per-model counters and limits).

    Dated snapshots, ``-latest`` / ``-0`` aliases, router prefixes and variants, Bedrock and
    Vertex spellings all count as their family: ``us.anthropic.claude-sonnet-4-5-20250929-v1:0``,
    ``anthropic/claude-sonnet-4.5`` and ``claude-sonnet-4-5@20250929`` are
    ``claude-sonnet-4-5``. A fine-tune counts as ``ft:`` plus its base family.
    """
    name = model.strip().lower()
    if name.startswith("ft:"):
        return "ft:" + family_name(_fine_tune_base(name)[3:])
    name = _tidy(normalize_model_name(name))
    while True:
        stripped = _strip_once(name)
        if stripped == name:
            return name
        name = stripped


@dataclass(frozen=True)
class Spelling:
    """One spelling to look up: ``ref`` in the providers ``hints`` names (innermost first),
    then by the source's own provider detection. ``exact_only`` spellings (ones we derived
    by stripping suffixes) are matched against known names and the source's rules alike."""

    ref: str
    hints: tuple[str, ...] = ()
    derived: bool = False


def spellings(model: str) -> Iterator[Spelling]:
    """The spellings a price lookup tries for ``model``, most specific first (lazily: a
    lookup usually stops at the first).

    First the name as given and with each router/provider prefix removed (each removed
    prefix becomes a provider hint), then derived spellings: Bedrock and Vertex ids reduced
    to the model, router variants and dotted Claude versions tidied, dated and alias
    suffixes stripped one at a time. A suffix is only ever a date, ``-latest``, ``-0`` or a
    version: a longer name is never cut down to a shorter model's name.
    """
    lower = model.strip().lower()
    lower = _SOURCE_GAPS.get(lower, lower)
    seen: set[tuple[str, tuple[str, ...]]] = set()
    base_hints: tuple[str, ...] = ("openai",) if lower.startswith("ft:") else ()
    segments = [lower] if "/" not in lower else lower.split("/")
    hints = base_hints
    for index in range(len(segments)):
        ref = segments[index] if index == len(segments) - 1 else "/".join(segments[index:])
        if index:
            hints = (segments[index - 1], *hints)
        ref_hints = hints
        if "." in ref and not ref.startswith("ft:") and _BEDROCK.match(ref):
            ref_hints = ("aws", *hints)
        if ref and (ref, ref_hints) not in seen:
            seen.add((ref, ref_hints))
            yield Spelling(ref, ref_hints, False)
    last = segments[-1]
    last_hints = ("aws", *hints) if "." in last and _BEDROCK.match(last) else hints
    for ref in _derived(last):
        for ref_hints in (last_hints, hints):
            if ref and (ref, ref_hints) not in seen:
                seen.add((ref, ref_hints))
                yield Spelling(ref, ref_hints, True)


def _derived(last: str) -> Iterator[str]:
    """Spellings derived from the last path segment of a name, in order."""
    if last.startswith("ft:"):
        yield _fine_tune_base(last)
        return
    current = _SOURCE_GAPS.get(last, last)
    yield current
    if _BEDROCK_REGIONAL.match(current):
        yield current.split(".", 1)[1]  # anthropic.claude-...-v2:0
    current = _tidy(normalize_model_name(current))
    yield _SOURCE_GAPS.get(current, current)
    while True:
        stripped = _strip_once(current)
        if stripped == current:
            return
        current = stripped
        yield _SOURCE_GAPS.get(current, current)
