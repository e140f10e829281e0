"""The price catalogue: models, their match rules and prices, from a maintained dated source.

The shipped snapshot ``data/prices.json`` is generated from genai-prices by ``make prices``
(never hand-edited; its licence notice ships beside it). It loads lazily, the first time a
price is needed, and is cached for the process. With genai-prices installed a user may opt in
to its live data instead (:meth:`Catalogue.from_genai_prices`, or the environment variable
``AGENT_BUDGET_PRICES=genai-prices``); nothing is ever fetched over the network here.

Name resolution follows the source: a name in a provider's namespace is matched by that
provider's rules, in the source's order, falling back to the providers it resells. Around it
sit the spellings of :func:`.names.spellings`: router prefixes name a provider, Bedrock ids
go to AWS (whose regional rows carry the regional uplift), derived spellings (dates and
aliases stripped) are tried only after every spelling as given.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from .errors import PriceConfigError
from .matching import Clause, Matcher, clause_matches
from .model_rates import ModelRates
from .names import family_name, spellings
from .price_row import PriceRow, rates_from_prices

__all__ = ["Catalogue", "Found", "ProviderInfo", "default_catalogue"]

ENV_VAR = "AGENT_BUDGET_PRICES"
# Router and SDK prefixes that name a provider differently from the source's ids.
_PROVIDER_ALIASES = {
    "azure_ai": "azure",
    "azure_openai": "azure",
    "bedrock_converse": "aws",
    "converse": "aws",
    "fireworks_ai": "fireworks",
    "google_genai": "google",
    "vertex_ai_beta": "google",
    "xai": "x-ai",
}
# Where a name no provider claims is looked up, after the model vendors, in this order.
_HOSTS = ("aws", "azure", "groq", "together", "fireworks", "cerebras", "openrouter")


class ProviderInfo(NamedTuple):
    """A provider of the catalogue: its models are rows ``start`` to ``end - 1``."""

    id: str
    name: str
    start: int
    end: int
    fallback: tuple[str, ...]
    match: Clause | None
    provider_match: Clause | None
    extractors: tuple[Mapping[str, Any], ...]


class Found(NamedTuple):
    """Where a name resolved: the row, whether tier variants apply (not when the row was
    found through a provider's fallback), the spelling that matched and how."""

    row: PriceRow
    variants: bool
    spelling: str
    how: str


class Catalogue:
    """Every model of one price source, indexed for name lookups."""

    def __init__(self, doc: Mapping[str, Any], *, origin: str = "snapshot") -> None:
        self.source: str = doc.get("source", "")
        self.version: str = doc.get("version", "")
        self.snapshot: str = doc.get("snapshot", "")
        self.latest_change: str | None = doc.get("latest_change")
        self.url: str = doc.get("url", "")
        self.license: str = doc.get("license", "")
        self.origin = origin
        live = " (live)" if origin == "genai-prices" else ""
        self.label = f"{self.source} {self.version}{live}".strip()
        providers: list[ProviderInfo] = []
        raw_rows: list[tuple[int, Sequence[Any]]] = []
        for p_index, provider in enumerate(doc["providers"]):
            start = len(raw_rows)
            raw_rows.extend((p_index, model) for model in provider["models"])
            providers.append(
                ProviderInfo(
                    provider["id"],
                    provider.get("name", provider["id"]),
                    start,
                    len(raw_rows),
                    tuple(provider.get("fallback") or ()),
                    provider.get("match"),
                    provider.get("provider_match"),
                    tuple(provider.get("extractors") or ()),
                )
            )
        self.providers: tuple[ProviderInfo, ...] = tuple(providers)
        self._raw = raw_rows
        self._rows: list[PriceRow | None] = [None] * len(raw_rows)
        self._by_id = {p.id: i for i, p in enumerate(providers)}
        self._models = Matcher((model[1], index) for index, (_p, model) in enumerate(raw_rows))
        self._ids: dict[str, list[int]] = {}
        for index, (_p, model) in enumerate(raw_rows):
            self._ids.setdefault(model[0].lower(), []).append(index)
        self._by_provider = [
            Matcher((raw_rows[i][1][1], i) for i in range(p.start, p.end)) for p in providers
        ]
        self._vendors = Matcher((p.match, i) for i, p in enumerate(providers) if p.match)
        self._tokens: dict[str, int | None] = {}
        vendors = [i for i, p in enumerate(providers) if p.match]
        hosts = [self._by_id[h] for h in _HOSTS if h in self._by_id]
        rest = [i for i in range(len(providers)) if i not in vendors and i not in hosts]
        rest.sort(key=lambda i: providers[i].id.startswith("huggingface"))
        self._rank = {p: rank for rank, p in enumerate(vendors + hosts + rest)}
        self._ceilings: dict[tuple[int | None, str], tuple[ModelRates, str] | None] = {}
        self._families: dict[int | None, list[tuple[str, int]]] = {}
        self._lock = threading.Lock()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str, *, origin: str) -> Catalogue:
        doc = json.loads(text)
        if not str(doc.get("format", "")).startswith("agent-budget-prices/"):
            raise ValueError(f"{origin}: not an agent-budget price catalogue")
        return cls(doc, origin=origin)

    @classmethod
    def snapshot_file(cls) -> Catalogue:
        """The catalogue shipped with this package (``data/prices.json``)."""
        text = resources.files("agent_budget").joinpath("data/prices.json").read_text("utf-8")
        return cls.from_text(text, origin="snapshot")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Catalogue:
        """A catalogue generated by ``scripts/make_prices.py`` (e.g. a newer one)."""
        return cls.from_text(Path(path).read_text("utf-8"), origin=str(path))

    @classmethod
    def from_genai_prices(cls) -> Catalogue:
        """genai-prices' own current data (its bundled data, or what its ``UpdatePrices``
        fetched in this process), converted now. Needs ``agent-budget[prices]``."""
        try:
            from importlib.metadata import version

            from genai_prices.data_snapshot import get_snapshot
        except ImportError:
            raise ImportError(
                "live prices need genai-prices: pip install 'agent-budget[prices]'"
            ) from None
        from .genai_convert import convert_providers

        snapshot = get_snapshot()
        doc = convert_providers(
            snapshot.providers,
            version=version("genai-prices"),
            snapshot=snapshot.timestamp.date().isoformat(),
        )
        return cls(doc, origin="genai-prices")

    # -- rows -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._raw)

    def row(self, index: int) -> PriceRow:
        """Row ``index``, built on first use."""
        row = self._rows[index]
        if row is None:
            p_index, raw = self._raw[index]
            row = PriceRow(
                raw[0],
                self.providers[p_index].id,
                raw[2],
                raw[3] if len(raw) > 3 else None,
                self.snapshot,
            )
            self._rows[index] = row
        return row

    def rows(self) -> Iterator[tuple[int, PriceRow]]:
        for index in range(len(self._raw)):
            yield index, self.row(index)

    def match_clause_of(self, row: PriceRow) -> Clause | None:
        """The match clause of ``row``, when it is one of this catalogue's."""
        provider = self.provider_index(row.provider)
        if provider is None:
            return None
        info = self.providers[provider]
        for index in range(info.start, info.end):
            if self._rows[index] is row:
                return self._raw[index][1][1]  # type: ignore[no-any-return]
        return None

    def provider(self, provider_id: str) -> ProviderInfo | None:
        index = self.provider_index(provider_id)
        return None if index is None else self.providers[index]

    def provider_index(self, token: str) -> int | None:
        """The provider a prefix or id names (genai-prices' ``provider_id`` rules: the id,
        then each provider's ``provider_match``), or None."""
        if token in self._tokens:
            return self._tokens[token]
        name = token.lower().strip()
        name = _PROVIDER_ALIASES.get(name, name)
        found = self._by_id.get(name)
        if found is None:
            for index, provider in enumerate(self.providers):
                if provider.provider_match and clause_matches(provider.provider_match, name):
                    found = index
                    break
        with self._lock:
            if len(self._tokens) < 4096:
                self._tokens[token] = found
        return found

    # -- lookups -----------------------------------------------------------------------------

    def _in_provider(self, p_index: int, ref: str) -> tuple[int, bool] | None:
        """genai-prices' ``Provider.find_model``: the provider's first model matching
        ``ref``, else the first of each provider it resells (variants then do not apply),
        then the same with compact dates spelled with dashes; last, a model whose id is
        ``ref`` though no rule matches it (the source cannot find those at all)."""
        dashed = _dashed_dates(ref) if _COMPACT_DATE.search(ref) else ref
        for attempt in (ref, dashed) if dashed != ref else (ref,):
            own = self._by_provider[p_index].match(attempt)
            if own:
                return min(own), True
            for name in self.providers[p_index].fallback:
                other = self._by_id.get(name)
                if other is not None:
                    found = self._by_provider[other].match(attempt)
                    if found:
                        return min(found), False
        by_id = self._ids.get(ref)
        if by_id:
            provider = self.providers[p_index]
            own_ids = [i for i in by_id if provider.start <= i < provider.end]
            if own_ids:
                return own_ids[0], True
        return None

    def find(self, model: str, provider: str | None = None) -> Found | None:
        """The row pricing ``model`` (any spelling), or None. ``provider`` names where the
        call went (``"openai"``, ``"aws"``, ``"openrouter"`` ...) when the caller knows.

        In order: the name as given in ``provider``, in the providers its prefixes name
        and in the provider whose names it looks like (the source's rules, so the source's
        own answer whenever it has one); a name under a prefix that names no provider
        (``meta-llama/...``) as a known name anywhere; each shorter spelling the same way
        (prefixes removed, then dates and aliases stripped); then any provider's known
        name, then any provider's rule.
        """
        extra = self.provider_index(provider) if provider else None
        tried: list[str] = []
        searched: set[tuple[int, str]] = set()  # (provider, spelling) pairs already tried
        full = True
        for spelling in spellings(model):
            ref = spelling.ref
            if ref not in tried:
                tried.append(ref)
            indices = [self.provider_index(h) for h in spelling.hints]
            if full and "/" in ref:
                indices += [self.provider_index(seg) for seg in ref.split("/")[:-1]]
            if extra is not None:
                indices.insert(0, extra)
            for p_index in indices:
                if p_index is not None and (p_index, ref) not in searched:
                    searched.add((p_index, ref))
                    hit = self._in_provider(p_index, ref)
                    if hit is not None:
                        return self._found(hit, ref, f"provider {self.providers[p_index].id}")
            vendors = self._vendors.match(ref)
            if vendors and (min(vendors), ref) not in searched:
                vendor = min(vendors)
                searched.add((vendor, ref))
                hit = self._in_provider(vendor, ref)
                if hit is not None:
                    other = self._longer_known(vendor, hit[0], ref)
                    if other is not None:
                        return self._found((other, True), ref, "known name")
                    return self._found(hit, ref, f"vendor {self.providers[vendor].id}")
            if full and "/" in ref and all(i is None for i in indices):
                exact = self._exact(ref)
                if exact is not None:
                    return self._found((exact, True), ref, "known name")
            full = False
        for ref in tried:
            exact = self._exact(ref)
            if exact is not None:
                return self._found((exact, True), ref, "known name")
        for ref in tried:
            found = self._models.match(ref)
            if found:
                return self._found((min(found, key=self._order), True), ref, "match rule")
        return None

    def _longer_known(self, vendor: int, index: int, ref: str) -> int | None:
        """A row elsewhere that knows ``ref`` exactly, when the vendor's rules matched it
        only by a shorter name of another model (``deepseek-r1-distill-llama-70b`` is
        Groq's model, not ``deepseek-reasoner``). Names that are the same model as the
        vendor's row once dates and versions are stripped stay with the vendor."""
        if self._by_provider[vendor].exact(ref) or self._raw[index][1][0].lower() == ref:
            return None
        other = self._exact(ref)
        if other is None or other == index:
            return None
        if family_name(self._raw[index][1][0]) == family_name(ref):
            return None
        return other

    def _exact(self, ref: str) -> int | None:
        """The row whose equals-clause or id is ``ref``, the model's vendor first."""
        hits = self._models.exact(ref) or self._ids.get(ref)
        return min(hits, key=self._order) if hits else None

    def _order(self, index: int) -> tuple[int, int]:
        return self._rank[self._raw[index][0]], index

    def _found(self, hit: tuple[int, bool], ref: str, how: str) -> Found:
        index, variants = hit
        row = self.row(index)
        if not variants:
            how += f" (resold from {row.provider})"
        return Found(row, variants, ref, how)

    def vendor_of(self, model: str) -> str | None:
        """The provider whose names ``model`` looks like (genai-prices' ``model_match``)."""
        for spelling in spellings(model):
            for hint in spelling.hints:
                index = self.provider_index(hint)
                if index is not None:
                    return self.providers[index].id
            vendors = self._vendors.match(spelling.ref)
            if vendors:
                return self.providers[min(vendors)].id
        return None

    # -- the unknown-model ceiling --------------------------------------------------------------

    def ceiling(self, model: str, when: float) -> tuple[ModelRates, str]:
        """Rates no model ``model`` could be is dearer than: for each token kind and fee,
        the highest current standard price (any prompt-size tier) among the catalogue's
        models of the same family (the longest name prefix, at a ``-`` or ``.``, shared with
        known models), else of its provider, else of the whole catalogue. Used to price a
        model with no price so the cap still holds; the text says which group."""
        vendor = self.vendor_of(model)
        scope = None if vendor is None else self.provider_index(vendor)
        family = family_name(model)
        stems = _stems(family)
        for stem in stems:
            found = self._ceiling_of(scope, stem, when)
            if found is not None:
                return found
        found = self._ceiling_of(scope, "", when)
        if found is None:
            found = self._ceiling_of(None, "", when)
        assert found is not None, "the catalogue has no token-priced model"
        return found

    def _family_list(self, scope: int | None) -> list[tuple[str, int]]:
        names = self._families.get(scope)
        if names is None:
            rng = (
                range(len(self._raw))
                if scope is None
                else range(self.providers[scope].start, self.providers[scope].end)
            )
            names = sorted((family_name(self._raw[i][1][0]), i) for i in rng)
            self._families[scope] = names
        return names

    def _ceiling_of(
        self, scope: int | None, stem: str, when: float
    ) -> tuple[ModelRates, str] | None:
        key = (scope, stem)
        if key in self._ceilings:
            return self._ceilings[key]
        names = self._family_list(scope)
        members = [
            i
            for name, i in names
            if not stem or name == stem or name.startswith((stem + "-", stem + "."))
        ]
        result = None
        tops: list[Decimal] = []
        for index in members:
            _constraint, prices = self.row(index)._standard(when)
            rates = rates_from_prices(prices)
            while rates is not None:  # every prompt-size tier
                values = [*rates._exact, *rates._extra]
                tops = [max(a, b) for a, b in zip(tops, values, strict=True)] if tops else values
                rates = rates.long_context
        if tops:
            inp, out, read, write, write_1h, reasoning, request, search = tops
            ceiling = ModelRates(
                inp, out, read, write, None, None, write_1h, reasoning, request, search
            )
            where = "the catalogue" if scope is None else self.providers[scope].id
            group = f"{stem}* models of {where}" if stem else f"all models of {where}"
            result = (ceiling, f"the highest rates of {group}")
        with self._lock:
            self._ceilings[key] = result
        return result


def _stems(family: str) -> list[str]:
    """``gpt-5.9-mini`` -> ``gpt-5.9-mini``, ``gpt-5.9``, ``gpt-5``, ``gpt`` (each cut at a
    ``-`` or ``.``), keeping stems that still name something (two characters or more)."""
    out = [family]
    cut = family
    while True:
        positions = [cut.rfind("-"), cut.rfind(".")]
        position = max(positions)
        if position <= 1:
            break
        cut = cut[:position]
        out.append(cut)
    return out


_COMPACT_DATE = re.compile(r"-(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


def _dashed_dates(ref: str) -> str:
    """genai-prices' retry for compact dates: ``gpt-5.2-20251211`` -> ``gpt-5.2-2025-12-11``."""

    def replace(match: re.Match[str]) -> str:
        year, month, day = (int(match.group(i)) for i in (1, 2, 3))
        try:
            _dt.date(year, month, day)
        except ValueError:
            return match.group(0)
        return f"-{year:04d}-{month:02d}-{day:02d}"

    return _COMPACT_DATE.sub(replace, ref)


_default: Catalogue | None = None
_default_lock = threading.Lock()


def default_catalogue() -> Catalogue:
    """The catalogue prices come from when none is given: the shipped snapshot, or what
    ``AGENT_BUDGET_PRICES`` selects (``genai-prices`` for its live data, or the path of a
    generated catalogue file). Loaded once, on first use."""
    global _default
    found = _default
    if found is None:
        with _default_lock:
            found = _default
            if found is None:
                choice = os.environ.get(ENV_VAR, "").strip()
                if choice in ("", "snapshot"):
                    found = Catalogue.snapshot_file()
                else:
                    found = _from_env(choice)
                _default = found
    return found


_ACCEPTED = (
    "'snapshot' (the default), 'genai-prices' (or 'live'; needs agent-budget[prices]) or "
    "the path of a catalogue file written by scripts/make_prices.py"
)


def _from_env(choice: str) -> Catalogue:
    """The catalogue ``AGENT_BUDGET_PRICES=choice`` selects; a value that cannot be used is
    a :class:`PriceConfigError` naming the variable, the value and the accepted values."""
    try:
        if choice in ("genai-prices", "live"):
            return Catalogue.from_genai_prices()
        return Catalogue.from_file(choice)
    except OSError as exc:
        problem = f"cannot read the file: {exc.strerror or exc}"
    except (ValueError, ImportError) as exc:
        problem = str(exc)
    raise PriceConfigError(
        f"{ENV_VAR}={choice!r} cannot be used ({problem}); accepted values: {_ACCEPTED}"
    )
