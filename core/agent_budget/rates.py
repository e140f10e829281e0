"""Prices by model name: your rates, overlays, the dated catalogue, and the unknown-model
policy.

A :class:`RateTable` looks a name up in, in order: the rates you pass (``rates=``, they win),
price overlays (``overlays=``: negotiated or private prices, LiteLLM's price file), and the
catalogue generated from genai-prices (:mod:`.catalogue`). A name none of them prices gets
the fallback: by default the highest rates of its family or provider (else of the whole
catalogue), so an unknown model is never charged less than it could cost.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from .catalogue import Catalogue, default_catalogue
from .errors import UnknownModelError
from .model_rates import ModelRates
from .names import family_name, normalize_model_name, normalized_key, spellings
from .price_row import STANDARD, PriceRow, Quote
from .price_sources import PriceSource, load_prices
from .validate import check_name

__all__ = [
    "BuiltinRate",
    "ModelRates",
    "RateTable",
    "ResolvedModel",
    "builtin_rates",
    "normalize_model_name",
]

UnknownPolicy = Literal["warn", "raise", "fallback"]
_THOUSAND = Decimal(1000)


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved against a rate table.

    ``name`` is the model family used for per-model counters and limits (dated snapshots,
    aliases, router and cloud spellings folded, so ``gpt-4o-2024-08-06`` counts as
    ``gpt-4o``); ``price_key`` is the row that priced it (a catalogue model id such as
    ``gpt-4o-2024-05-13``, or your ``rates=`` key) and ``provider`` its provider;
    ``source`` and ``source_date`` say where the price came from; ``how`` how the name was
    matched (or, for an unknown model, what the fallback is); ``rates`` are the standard
    rates in force when the name was resolved. :meth:`quote` gives the rates for a call's
    time and service tier (price history, batch / flex / priority).
    """

    name: str
    rates: ModelRates
    known: bool
    price_key: str = ""
    source: str = ""
    source_date: str = ""
    provider: str = ""
    how: str = ""
    row: PriceRow | None = None
    variants: bool = True
    _flat: Quote = field(init=False, repr=False, compare=False)
    price_id: str = field(init=False, repr=False, compare=False)
    """``provider:row`` (``openai:gpt-4o``), ``rates:key`` for your rates, or
    ``fallback: ...`` for a model with no price: what a record cites."""

    def quote(self, when: float, tier: str | None = None) -> Quote:
        """The rates a call at ``when`` (epoch seconds) in service tier ``tier`` pays."""
        row = self.row
        if row is None:
            return self._flat
        if tier is None:  # the hot path: the row's standard quote, while still in force
            standard = row._standard_quote
            if standard[0] <= when < standard[1] and standard[2] is not None:
                return standard[2]
        found = row.quote(when, tier, self.variants)
        return self._flat if found is None else found

    def __post_init__(self) -> None:
        # Built once: the quote of rates with no history or tiers (your rates=, a
        # fallback) and the id a record cites.
        object.__setattr__(self, "_flat", Quote(self.rates, STANDARD, ""))
        if not self.known:
            price_id = f"fallback: {self.how}"
        else:
            price_id = f"{self.provider or 'rates'}:{self.price_key}"
        object.__setattr__(self, "price_id", price_id)


@dataclass(frozen=True)
class BuiltinRate:
    """One row of the built-in catalogue (current standard prices), with its provenance:
    ``effective`` is the date the price took effect, or the snapshot date when the source
    does not date it."""

    model: str
    rates: ModelRates
    input_per_1m: Decimal
    output_per_1m: Decimal
    cached_input_per_1m: Decimal | None
    cache_write_per_1m: Decimal | None
    effective: str
    source: str
    note: str = ""
    provider: str = ""
    cache_write_1h_per_1m: Decimal | None = None


def _builtin(row: PriceRow, quote: Quote, source: str) -> BuiltinRate:
    prices = row.prices_at(time.time())[0]

    def dec(key: str) -> Decimal | None:
        value = prices.get(key)
        if value is None:
            return None
        return Decimal(value if isinstance(value, str) else str(value[0]))

    tiers = quote.rates.long_context_threshold
    note = f"prompt-size tier above {tiers} input tokens" if tiers else ""
    return BuiltinRate(
        model=row.id,
        rates=quote.rates,
        input_per_1m=dec("input_mtok") or Decimal(0),
        output_per_1m=dec("output_mtok") or Decimal(0),
        cached_input_per_1m=dec("cache_read_mtok"),
        cache_write_per_1m=dec("cache_write_mtok"),
        effective=quote.effective or row.snapshot,
        source=source,
        note=note,
        provider=row.provider,
        cache_write_1h_per_1m=dec("cache_write_1h_mtok"),
    )


@lru_cache(maxsize=1)
def builtin_rates() -> dict[str, BuiltinRate]:
    """Every token-priced model of the default catalogue, keyed by model id (when two
    providers list one id, the model's own vendor wins), with current standard prices."""
    catalogue = default_catalogue()
    now = time.time()
    table: dict[str, BuiltinRate] = {}
    order = sorted(range(len(catalogue)), key=catalogue._order)
    for index in order:
        row = catalogue.row(index)
        if row.id in table:
            continue
        quote = row.quote(now)
        if quote is not None:
            table[row.id] = _builtin(row, quote, catalogue.label)
    return table


def _key(name: str) -> str:
    """How user rate keys and aliases are matched: the normalised, tidied spelling."""
    return normalized_key(name)


def family_candidates(model: str) -> list[str]:
    """``model``'s normalised spelling, then with each date or alias suffix stripped,
    ending with its family: the keys user rates and aliases are looked up by."""
    out: list[str] = []
    for spelling in spellings(model):
        ref = spelling.ref
        if spelling.derived and "/" not in ref and ref not in out:
            out.append(ref)
    family = family_name(model)
    if family not in out:
        out.append(family)
    return out


class RateTable:
    """Looks up rates: your ``rates`` first, then ``overlays``, then the catalogue, then the
    fallback.

    ``on_unknown`` decides what a model with no price does: ``"warn"`` (the default; a budget
    raises one alert and one :class:`BudgetWarning` per model name and charges the fallback),
    ``"raise"`` (:class:`UnknownModelError` before anything is reserved or recorded; a call
    that already ran is still recorded, at the fallback, with the warning) or ``"fallback"``
    (charge the fallback silently; for tests and tools). ``fallback`` is the rates to charge;
    by default the highest rates of the model's family or provider (else of the whole
    catalogue), so the cap holds. ``aliases`` map names such as Azure deployment names to a
    priced model. ``overlays`` are :class:`PriceSource` objects or paths of overlay or
    LiteLLM price files. ``catalogue`` replaces the shipped snapshot (e.g.
    ``Catalogue.from_genai_prices()``); ``use_builtins=False`` uses no catalogue.
    ``service_tier`` is the tier a request that names none runs in (for reservations).
    """

    def __init__(
        self,
        rates: Mapping[str, ModelRates] | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
        fallback: ModelRates | None = None,
        on_unknown: UnknownPolicy = "warn",
        use_builtins: bool = True,
        overlays: Sequence[PriceSource | str | os.PathLike[str]] = (),
        catalogue: Catalogue | None = None,
        service_tier: str | None = None,
    ) -> None:
        if on_unknown not in ("warn", "raise", "fallback"):
            raise ValueError(
                f"on_unknown must be 'warn', 'raise' or 'fallback', not {on_unknown!r}"
            )
        if fallback is not None and not isinstance(fallback, ModelRates):
            raise TypeError(f"fallback must be a ModelRates, got {type(fallback).__name__}")
        if service_tier is not None:
            check_name("service_tier", service_tier)
        self._exact: dict[str, ModelRates] = {}
        self._user: dict[str, tuple[str, ModelRates]] = {}
        for key, value in (rates or {}).items():
            check_name("rates key", key)
            if not isinstance(value, ModelRates):
                raise TypeError(f"rates[{key!r}] must be a ModelRates, got {type(value).__name__}")
            self._exact[key] = value
            self._user.setdefault(_key(key), (key, value))
        self._aliases: dict[str, str] = {}
        for alias, target in (aliases or {}).items():
            check_name("alias", alias)
            check_name(f"aliases[{alias!r}]", target)
            self._aliases[_key(alias)] = target
        self.overlays: tuple[PriceSource, ...] = tuple(
            o if isinstance(o, PriceSource) else load_prices(o) for o in overlays
        )
        self.fallback = fallback
        self.on_unknown: UnknownPolicy = on_unknown
        self.service_tier = service_tier
        self._use_builtins = use_builtins
        self._catalogue = catalogue
        self._cache: dict[str, ResolvedModel] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @property
    def catalogue(self) -> Catalogue | None:
        """The catalogue consulted after your rates and overlays (loaded on first use)."""
        if not self._use_builtins:
            return None
        if self._catalogue is None:
            self._catalogue = default_catalogue()
        return self._catalogue

    def resolve(
        self,
        model: str,
        *,
        on_unknown: UnknownPolicy | None = None,
        provider: str | None = None,
    ) -> ResolvedModel:
        """Find the rates for ``model``; raises :class:`UnknownModelError` per the policy.
        ``provider`` names where the call went when the caller knows (``"openrouter"``)."""
        key = model if provider is None else f"{provider}\0{model}"
        hit = self._cache.get(key) if isinstance(model, str) else None
        if hit is None:
            check_name("model", model)
            if provider is not None:
                check_name("provider", provider)
            hit = self._lookup(model, provider)
            with self._lock:
                if len(self._cache) >= 4096:
                    self._cache.clear()
                self._cache[key] = hit
        if not hit.known and (on_unknown or self.on_unknown) == "raise":
            raise UnknownModelError(
                f"model {model!r} has no price: add it to rates=, aliases= or an overlay, "
                "or set on_unknown='warn'"
            )
        return hit

    def _lookup(self, model: str, provider: str | None) -> ResolvedModel:
        now = time.time()
        target = self._aliases.get(_key(model)) if self._aliases else None
        name = target if target is not None else model
        family = family_name(name)
        if self._exact:
            if name in self._exact:
                return self._user_rates(family, name, self._exact[name], "exact name")
            if target is None and model.strip() in self._exact:
                stripped = model.strip()
                return self._user_rates(family, stripped, self._exact[stripped], "exact name")
            for candidate in family_candidates(name):
                found = self._user.get(candidate)
                if found is not None:
                    return self._user_rates(family, found[0], found[1], f"as {candidate}")
        # Overlays win over the catalogue for the name in any spelling, except that a
        # spelling reached by stripping (a date, an alias) loses to a catalogue row that
        # prices the name as another model (gpt-4o-2024-05-13 is not gpt-4o); a family
        # fallback from an overlay serves only a name the catalogue does not know.
        matches = [(source, source.match(name)) for source in self.overlays]
        for source, match in matches:
            if match is not None and match.exact:
                resolved = self._overlay(family, source, match.row, f"as {match.key}", now)
                if resolved is not None:
                    return resolved
        catalogue = self.catalogue
        found_row = None if catalogue is None else catalogue.find(name, provider)
        for source, match in matches:
            if match is None or match.exact:
                continue
            if catalogue is not None and found_row is not None:
                same = catalogue.find(match.key, provider)
                if same is None or same.row is not found_row.row:
                    continue
            resolved = self._overlay(family, source, match.row, f"as {match.key}", now)
            if resolved is not None:
                return resolved
        if catalogue is not None and found_row is not None:
            quote = found_row.row.quote(now, None, found_row.variants)
            if quote is not None:
                row = found_row.row
                return ResolvedModel(
                    family,
                    quote.rates,
                    True,
                    row.id,
                    catalogue.label,
                    catalogue.snapshot,
                    row.provider,
                    f"{found_row.how} as {found_row.spelling}",
                    row,
                    found_row.variants,
                )
        for source in self.overlays:
            hit = source.family(name, provider, now)
            if hit is not None:
                how = f"family {family_name(name)}, the dearest row for it: {hit[1]}"
                resolved = self._overlay(family, source, hit[0], how, now)
                if resolved is not None:
                    return resolved
        return self._unknown(family, name, now)

    @staticmethod
    def _overlay(
        family: str, source: PriceSource, row: PriceRow, how: str, now: float
    ) -> ResolvedModel | None:
        quote = row.quote(now)
        if quote is None:
            return None
        return ResolvedModel(
            family,
            quote.rates,
            True,
            row.id,
            source.label,
            source.date,
            source.label,
            f"overlay {source.label!r} {how}",
            row,
        )

    def _user_rates(self, family: str, key: str, rates: ModelRates, how: str) -> ResolvedModel:
        return ResolvedModel(family, rates, True, key, "rates=", "", "", how)

    def _unknown(self, family: str, name: str, now: float) -> ResolvedModel:
        date = ""
        if self.fallback is not None:
            rates, how = self.fallback, "the fallback rates you set"
        elif self.catalogue is not None:
            rates, how = self.catalogue.ceiling(name, now)
            date = self.catalogue.snapshot
        else:
            rates, how = ModelRates(), "the default ModelRates()"
        return ResolvedModel(family, rates, False, "", "fallback", date, "", how)

    def first_unknown(self, name: str) -> bool:
        """True the first time ``name`` is reported unknown by this table (bounded memory)."""
        with self._lock:
            if name in self._warned or len(self._warned) >= 10_000:
                return False
            self._warned.add(name)
            return True

    def canonical(self, model: str) -> str:
        """The canonical (family) name of ``model`` (never raises for unknown models)."""
        return self.resolve(model, on_unknown="fallback").name

    def default_tier(self, requested: str | None) -> str | None:
        """The service tier a call runs in: the one requested, else the table's default
        (``"auto"`` and ``"default"`` ask for the standard tier)."""
        if requested is None or requested.strip().lower() == "auto":
            return self.service_tier
        return requested
