"""Prices: per-model rates, the built-in dated table, and model-name normalisation."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from .errors import UnknownModelError
from .money import decimal_usd_to_nanos
from .usage import Usage
from .validate import check_name, check_tokens, to_decimal

__all__ = [
    "BuiltinRate",
    "ModelRates",
    "RateTable",
    "ResolvedModel",
    "builtin_rates",
    "normalize_model_name",
]

_THOUSAND = Decimal(1000)
_ATTO_PER_1K = Decimal(10**15)  # a rate per 1k tokens, as atto-USD per token
_ATTO_PER_NANO = 10**9
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelRates:
    """USD per 1,000 tokens for one model.

    The two positional fields keep the original API (``ModelRates(input_per_1k=...,
    output_per_1k=...)``, default 0.002 / 0.002). Cached input and cache writes fall back to
    the input rate when not given. Above ``long_context_threshold`` input tokens the whole
    call is priced with ``long_context`` rates, as providers with long-context tiers bill.
    Values may be float, int, str or Decimal; they are held exactly.
    """

    input_per_1k: float | Decimal | str = 0.002
    output_per_1k: float | Decimal | str = 0.002
    cached_input_per_1k: float | Decimal | str | None = None
    cache_write_per_1k: float | Decimal | str | None = None
    long_context_threshold: int | None = None
    long_context: ModelRates | None = None
    _exact: tuple[Decimal, Decimal, Decimal, Decimal] = field(init=False, repr=False, compare=False)
    _atto: tuple[int, int, int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        inp = to_decimal("input_per_1k", self.input_per_1k)
        out = to_decimal("output_per_1k", self.output_per_1k)
        cached = (
            inp
            if self.cached_input_per_1k is None
            else to_decimal("cached_input_per_1k", self.cached_input_per_1k)
        )
        write = (
            inp
            if self.cache_write_per_1k is None
            else to_decimal("cache_write_per_1k", self.cache_write_per_1k)
        )
        if (self.long_context_threshold is None) != (self.long_context is None):
            raise ValueError("long_context_threshold and long_context must be given together")
        if self.long_context_threshold is not None:
            check_tokens("long_context_threshold", self.long_context_threshold)
            if not isinstance(self.long_context, ModelRates):
                raise TypeError("long_context must be a ModelRates")
        object.__setattr__(self, "_exact", (inp, out, cached, write))
        # The same rates as whole atto-dollars (1e-18 USD) per token, when they are whole, so
        # costs are integer arithmetic; otherwise costs take the Decimal path.
        atto = [rate * _ATTO_PER_1K for rate in (inp, out, cached, write)]
        whole = all(a == a.to_integral_value() for a in atto)
        object.__setattr__(self, "_atto", tuple(int(a) for a in atto) if whole else None)

    @classmethod
    def per_million(
        cls,
        input: object,
        output: object,
        cached_input: object | None = None,
        cache_write: object | None = None,
        *,
        long_context_threshold: int | None = None,
        long_context: ModelRates | None = None,
    ) -> ModelRates:
        """Build rates from USD per 1M tokens, the unit providers publish."""

        def conv(name: str, v: object | None) -> float | Decimal | None:
            if v is None:
                return None
            exact = to_decimal(name, v) / _THOUSAND
            # A float when it round-trips exactly, so rates compare equal to plain literals.
            as_float = float(exact)
            return as_float if Decimal(repr(as_float)) == exact else exact

        inp = conv("input", input)
        out = conv("output", output)
        assert inp is not None and out is not None
        return cls(
            inp,
            out,
            conv("cached_input", cached_input),
            conv("cache_write", cache_write),
            long_context_threshold,
            long_context,
        )

    @classmethod
    def for_model(cls, model: str) -> ModelRates:
        """Built-in rates for ``model`` (normalised), or the default ``ModelRates()``."""
        resolved = RateTable().resolve(model, on_unknown="fallback")
        return resolved.rates

    def _tier(self, input_tokens: int) -> ModelRates:
        if (
            self.long_context is not None
            and self.long_context_threshold is not None
            and input_tokens > self.long_context_threshold
        ):
            return self.long_context
        return self

    def cost(self, usage: Usage) -> Decimal:
        """Exact USD cost of ``usage``: cached input and cache writes at their own rates."""
        inp, out, cached, write = self._tier(usage.input_tokens)._exact
        total = (
            usage.uncached_input_tokens * inp
            + usage.cache_read_tokens * cached
            + usage.cache_write_tokens * write
            + usage.output_tokens * out
        )
        return total / _THOUSAND

    def cost_nanos(self, usage: Usage) -> int:
        """Cost of ``usage`` in whole nano-dollars, rounded up."""
        tier = self._tier(usage.input_tokens)
        atto = tier._atto
        if atto is None:
            return decimal_usd_to_nanos(tier.cost(usage))
        total = (
            usage.uncached_input_tokens * atto[0]
            + usage.cache_read_tokens * atto[2]
            + usage.cache_write_tokens * atto[3]
            + usage.output_tokens * atto[1]
        )
        return -(-total // _ATTO_PER_NANO)

    def worst_case_nanos(self, input_tokens: int, max_output_tokens: int) -> int:
        """The most a call of this size can cost: every input token at the dearer of the
        input and cache-write rates, every output token at the output rate."""
        tier = self._tier(input_tokens)
        atto = tier._atto
        if atto is None:
            inp, out, _cached, write = tier._exact
            return decimal_usd_to_nanos(
                (input_tokens * max(inp, write) + max_output_tokens * out) / _THOUSAND
            )
        total = input_tokens * max(atto[0], atto[3]) + max_output_tokens * atto[1]
        return -(-total // _ATTO_PER_NANO)

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost in USD as a float (original API); use :meth:`cost` for the exact value."""
        check_tokens("input_tokens", input_tokens)
        check_tokens("output_tokens", output_tokens)
        return float(self.cost(Usage(input_tokens, output_tokens)))


@dataclass(frozen=True)
class BuiltinRate:
    """One row of the built-in price table, with where and when it was read."""

    model: str
    rates: ModelRates
    input_per_1m: Decimal
    output_per_1m: Decimal
    cached_input_per_1m: Decimal | None
    cache_write_per_1m: Decimal | None
    effective: str
    source: str
    note: str = ""


def _rates_from_row(row: Mapping[str, Any]) -> ModelRates:
    lc = row.get("long_context")
    long_rates = None
    if lc:
        long_rates = ModelRates.per_million(
            lc["input"], lc["output"], lc.get("cached_input"), lc.get("cache_write")
        )
    return ModelRates.per_million(
        row["input"],
        row["output"],
        row.get("cached_input"),
        row.get("cache_write"),
        long_context_threshold=lc["threshold"] if lc else None,
        long_context=long_rates,
    )


@lru_cache(maxsize=1)
def builtin_rates() -> dict[str, BuiltinRate]:
    """The built-in table (package data ``data/rates.json``), keyed by canonical name."""
    text = resources.files("agent_budget").joinpath("data/rates.json").read_text("utf-8")
    doc = json.loads(text)
    table: dict[str, BuiltinRate] = {}
    for row in doc["models"]:

        def dec(key: str, row: Mapping[str, Any] = row) -> Decimal | None:
            return Decimal(row[key]) if row.get(key) is not None else None

        table[row["model"]] = BuiltinRate(
            model=row["model"],
            rates=_rates_from_row(row),
            input_per_1m=Decimal(row["input"]),
            output_per_1m=Decimal(row["output"]),
            cached_input_per_1m=dec("cached_input"),
            cache_write_per_1m=dec("cache_write"),
            effective=row["effective"],
            source=row["source"],
            note=row.get("note", ""),
        )
    return table


_BEDROCK = re.compile(
    r"^(?:(?:us|eu|apac|global|us-gov|ca|jp|au)\.)?"
    r"(?:anthropic|amazon|meta|cohere|ai21|mistral|deepseek|openai)\.(.+)$"
)
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$|:\d+$")
_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-2024-08-06
    re.compile(r"-\d{8}$"),  # claude-3-5-sonnet-20241022
    re.compile(r"-latest$"),
    re.compile(r"-\d{3}$"),  # gemini-1.5-pro-002
)


def normalize_model_name(model: str) -> str:
    """Canonical spelling of a model id as it reaches a callback.

    Lower-cases, drops provider prefixes (``openai/``, ``models/``), Bedrock ids and their
    regional prefixes and ``-v1:0`` versions, and Vertex ``@`` dates. Dated snapshots are
    kept here; :class:`RateTable` strips them only when the dated name has no row of its own.
    """
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    match = _BEDROCK.match(name)
    if match:
        name = match.group(1)
        name = _BEDROCK_VERSION.sub("", name)
    name = name.replace("@", "-")
    return name


def _candidates(name: str) -> list[str]:
    out = [name]
    current = name
    changed = True
    while changed:
        changed = False
        for pattern in _SUFFIXES:
            stripped = pattern.sub("", current)
            if stripped != current and stripped:
                current = stripped
                out.append(current)
                changed = True
    return out


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved against a rate table.

    ``name`` is the model family used for per-model counters and limits (dated snapshot and
    ``-latest`` suffixes stripped, so ``gpt-4o-2024-08-06`` counts as ``gpt-4o``);
    ``price_key`` is the row that priced it, which may be the dated snapshot.
    """

    name: str
    rates: ModelRates
    known: bool
    price_key: str = ""


UnknownPolicy = Literal["warn", "raise", "fallback"]


class RateTable:
    """Looks up rates: user rates first, then the built-in table, then the fallback.

    ``on_unknown`` decides what an unpriced model does: ``"warn"`` (the default; the budget
    raises one alert and one :class:`BudgetWarning` per model and prices it at ``fallback``),
    ``"raise"`` (:class:`UnknownModelError` before anything is recorded) or ``"fallback"``
    (price at ``fallback`` silently; for tests and tools). ``aliases`` map names such as
    Azure deployment names to a priced model.
    """

    def __init__(
        self,
        rates: Mapping[str, ModelRates] | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
        fallback: ModelRates | None = None,
        on_unknown: UnknownPolicy = "warn",
        use_builtins: bool = True,
    ) -> None:
        if on_unknown not in ("warn", "raise", "fallback"):
            raise ValueError(
                f"on_unknown must be 'warn', 'raise' or 'fallback', not {on_unknown!r}"
            )
        self._exact: dict[str, ModelRates] = {}
        self._user: dict[str, ModelRates] = {}
        for key, value in (rates or {}).items():
            check_name("rates key", key)
            if not isinstance(value, ModelRates):
                raise TypeError(f"rates[{key!r}] must be a ModelRates, got {type(value).__name__}")
            self._exact[key] = value
            self._user[normalize_model_name(key)] = value
        self._aliases = {
            normalize_model_name(k): normalize_model_name(v) for k, v in (aliases or {}).items()
        }
        self.fallback = fallback if fallback is not None else ModelRates()
        self.on_unknown: UnknownPolicy = on_unknown
        self._use_builtins = use_builtins
        self._cache: dict[str, ResolvedModel] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def resolve(self, model: str, *, on_unknown: UnknownPolicy | None = None) -> ResolvedModel:
        """Find the rates for ``model``; raises :class:`UnknownModelError` per the policy."""
        hit = self._cache.get(model) if isinstance(model, str) else None
        if hit is None:
            check_name("model", model)
            hit = self._lookup(model)
            with self._lock:
                if len(self._cache) >= 4096:
                    self._cache.clear()
                self._cache[model] = hit
        policy = on_unknown or self.on_unknown
        if not hit.known and policy == "raise":
            raise UnknownModelError(
                f"model {model!r} has no price: add it to rates= or set on_unknown='warn'"
            )
        return hit

    def _lookup(self, model: str) -> ResolvedModel:
        name = normalize_model_name(model)
        name = self._aliases.get(name, name)
        candidates = _candidates(name)
        family = candidates[-1]
        if model in self._exact:
            return ResolvedModel(family, self._exact[model], True, model)
        builtins = builtin_rates() if self._use_builtins else {}
        # User rates win over built-ins, even a user family row over a built-in snapshot row.
        for table in (self._user, {k: v.rates for k, v in builtins.items()}):
            for candidate in candidates:
                candidate = self._aliases.get(candidate, candidate)
                if candidate in table:
                    return ResolvedModel(family, table[candidate], True, candidate)
        return ResolvedModel(family, self.fallback, False, "")

    def first_unknown(self, name: str) -> bool:
        """True the first time ``name`` is reported unknown by this table (bounded memory)."""
        with self._lock:
            if name in self._warned or len(self._warned) >= 10_000:
                return False
            self._warned.add(name)
            return True

    def canonical(self, model: str) -> str:
        """The canonical name of ``model`` (never raises for unknown models)."""
        return self.resolve(model, on_unknown="fallback").name
