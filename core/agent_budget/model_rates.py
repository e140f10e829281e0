"""ModelRates: the prices of one model, and exact costs of a call under them."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .money import decimal_usd_to_nanos
from .usage import Usage
from .validate import check_tokens, to_decimal

__all__ = ["ModelRates"]

_THOUSAND = Decimal(1000)
_ATTO_PER_1K = Decimal(10**15)  # a rate per 1k tokens, as atto-USD per token
_ATTO_PER_USD = Decimal(10**18)
_ATTO_PER_NANO = 10**9


def _conv_million(name: str, value: object | None) -> float | Decimal | None:
    """USD per 1M tokens as USD per 1k: a float when it round-trips exactly (so rates
    compare equal to plain literals), else the exact Decimal."""
    if value is None:
        return None
    exact = to_decimal(name, value) / _THOUSAND
    as_float = float(exact)
    return as_float if Decimal(repr(as_float)) == exact else exact


@dataclass(frozen=True)
class ModelRates:
    """USD per 1,000 tokens for one model, plus per-call fees.

    The two positional fields keep the original API (``ModelRates(input_per_1k=...,
    output_per_1k=...)``, default 0.002 / 0.002). Cached input and cache writes fall back to
    the input rate when not given, 1-hour cache writes to the cache-write rate and reasoning
    tokens (part of the output) to the output rate. ``per_request`` is charged once per call
    and ``per_web_search`` per web search the usage reports (USD each). Above
    ``long_context_threshold`` input tokens (cache reads and writes included) the whole call
    is priced with ``long_context`` rates, as providers with prompt-size tiers bill;
    ``long_context`` may itself have a higher tier. Values may be float, int, str or Decimal;
    they are held exactly.
    """

    input_per_1k: float | Decimal | str = 0.002
    output_per_1k: float | Decimal | str = 0.002
    cached_input_per_1k: float | Decimal | str | None = None
    cache_write_per_1k: float | Decimal | str | None = None
    long_context_threshold: int | None = None
    long_context: ModelRates | None = None
    cache_write_1h_per_1k: float | Decimal | str | None = None
    reasoning_per_1k: float | Decimal | str | None = None
    per_request: float | Decimal | str = 0
    per_web_search: float | Decimal | str = 0
    _exact: tuple[Decimal, Decimal, Decimal, Decimal] = field(init=False, repr=False, compare=False)
    _extra: tuple[Decimal, Decimal, Decimal, Decimal] = field(init=False, repr=False, compare=False)
    _atto: tuple[int, ...] | None = field(init=False, repr=False, compare=False)
    _plain: bool = field(init=False, repr=False, compare=False)
    _worst: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        inp = to_decimal("input_per_1k", self.input_per_1k)
        out = to_decimal("output_per_1k", self.output_per_1k)

        def opt(name: str, value: object, default: Decimal) -> Decimal:
            return default if value is None else to_decimal(name, value)

        cached = opt("cached_input_per_1k", self.cached_input_per_1k, inp)
        write = opt("cache_write_per_1k", self.cache_write_per_1k, inp)
        write_1h = opt("cache_write_1h_per_1k", self.cache_write_1h_per_1k, write)
        reasoning = opt("reasoning_per_1k", self.reasoning_per_1k, out)
        request = to_decimal("per_request", self.per_request)
        search = to_decimal("per_web_search", self.per_web_search)
        if (self.long_context_threshold is None) != (self.long_context is None):
            raise ValueError("long_context_threshold and long_context must be given together")
        if self.long_context_threshold is not None:
            check_tokens("long_context_threshold", self.long_context_threshold)
            if not isinstance(self.long_context, ModelRates):
                raise TypeError("long_context must be a ModelRates")
            inner = self.long_context.long_context_threshold
            if inner is not None and inner <= self.long_context_threshold:
                raise ValueError("a long_context tier's own threshold must be higher")
        object.__setattr__(self, "_exact", (inp, out, cached, write))
        object.__setattr__(self, "_extra", (write_1h, reasoning, request, search))
        # The same rates as whole atto-dollars (1e-18 USD) per token or per fee, when they
        # are whole, so costs are integer arithmetic; otherwise costs take the Decimal path.
        atto = [r * _ATTO_PER_1K for r in (inp, out, cached, write, write_1h, reasoning)]
        atto += [request * _ATTO_PER_USD, search * _ATTO_PER_USD]
        whole = all(a == a.to_integral_value() for a in atto)
        object.__setattr__(self, "_atto", tuple(int(a) for a in atto) if whole else None)
        # True when only the four original rates (and a per-search fee, paid only when a
        # search happened) matter: the common case, costed faster.
        plain = write_1h == write and reasoning == out and not request
        object.__setattr__(self, "_plain", plain)
        # A reservation's rates per token: the dearest input kind, the dearer output kind.
        worst = (max(atto[0], atto[2], atto[3], atto[4]), max(atto[1], atto[5]))
        object.__setattr__(self, "_worst", (int(worst[0]), int(worst[1])) if whole else (0, 0))

    @classmethod
    def per_million(
        cls,
        input: object,
        output: object,
        cached_input: object | None = None,
        cache_write: object | None = None,
        *,
        cache_write_1h: object | None = None,
        reasoning: object | None = None,
        per_request: object = 0,
        per_web_search: object = 0,
        long_context_threshold: int | None = None,
        long_context: ModelRates | None = None,
    ) -> ModelRates:
        """Build rates from USD per 1M tokens, the unit providers publish (fees in USD)."""
        inp = _conv_million("input", input)
        out = _conv_million("output", output)
        assert inp is not None and out is not None
        return cls(
            inp,
            out,
            _conv_million("cached_input", cached_input),
            _conv_million("cache_write", cache_write),
            long_context_threshold,
            long_context,
            _conv_million("cache_write_1h", cache_write_1h),
            _conv_million("reasoning", reasoning),
            to_decimal("per_request", per_request),
            to_decimal("per_web_search", per_web_search),
        )

    @classmethod
    def for_model(cls, model: str) -> ModelRates:
        """Rates for ``model`` from the price catalogue (any spelling), or the default
        ``ModelRates()`` when it has none (the original API; a :class:`Budget` applies its
        rate table's unknown-model policy instead)."""
        from .rates import RateTable

        resolved = RateTable(fallback=ModelRates()).resolve(model, on_unknown="fallback")
        return resolved.rates

    def _tier(self, input_tokens: int) -> ModelRates:
        rates = self
        while (
            rates.long_context is not None
            and rates.long_context_threshold is not None
            and input_tokens > rates.long_context_threshold
        ):
            rates = rates.long_context
        return rates

    def tier_label(self, input_tokens: int) -> str:
        """``""`` for the base tier, else ``"input>N"`` naming the prompt-size tier a call
        of ``input_tokens`` lands in."""
        rates, label = self, ""
        while (
            rates.long_context is not None
            and rates.long_context_threshold is not None
            and input_tokens > rates.long_context_threshold
        ):
            label = f"input>{rates.long_context_threshold}"
            rates = rates.long_context
        return label

    def cost(self, usage: Usage) -> Decimal:
        """Exact USD cost of ``usage``: every token kind at its own rate, plus fees."""
        tier = self._tier(usage.input_tokens)
        inp, out, cached, write = tier._exact
        write_1h, reasoning, request, search = tier._extra
        per_1k = (
            usage.uncached_input_tokens * inp
            + usage.cache_read_tokens * cached
            + (usage.cache_write_tokens - usage.cache_write_1h_tokens) * write
            + usage.cache_write_1h_tokens * write_1h
            + (usage.output_tokens - usage.reasoning_tokens) * out
            + usage.reasoning_tokens * reasoning
        )
        return per_1k / _THOUSAND + request + usage.web_searches * search

    def cost_nanos(self, usage: Usage) -> int:
        """Cost of ``usage`` in whole nano-dollars, rounded up."""
        tier = self if self.long_context is None else self._tier(usage.input_tokens)
        atto = tier._atto
        if atto is None:
            return decimal_usd_to_nanos(tier.cost(usage))
        cache_read = usage.cache_read_tokens
        cache_write = usage.cache_write_tokens
        total = (
            (usage.input_tokens - cache_read - cache_write) * atto[0]
            + cache_read * atto[2]
            + cache_write * atto[3]
            + usage.output_tokens * atto[1]
        )
        if not tier._plain:  # only the terms this model prices apart
            if atto[4] != atto[3]:
                total += usage.cache_write_1h_tokens * (atto[4] - atto[3])
            if atto[5] != atto[1]:
                total += usage.reasoning_tokens * (atto[5] - atto[1])
            total += atto[6]
        if usage.web_searches:
            total += usage.web_searches * atto[7]
        return -(-total // _ATTO_PER_NANO)

    def worst_case_nanos(self, input_tokens: int, max_output_tokens: int) -> int:
        """The most a call of this size can cost: every input token at the dearest input
        rate (plain, cached, 5-minute or 1-hour cache write), every output token at the
        dearer of the output and reasoning rates, plus the per-request fee."""
        tier = self if self.long_context is None else self._tier(input_tokens)
        atto = tier._atto
        if atto is None:
            inp, out, cached, write = tier._exact
            write_1h, reasoning, request, _search = tier._extra
            return decimal_usd_to_nanos(
                (
                    input_tokens * max(inp, cached, write, write_1h)
                    + max_output_tokens * max(out, reasoning)
                )
                / _THOUSAND
                + request
            )
        worst_in, worst_out = tier._worst
        total = input_tokens * worst_in + max_output_tokens * worst_out + atto[6]
        return -(-total // _ATTO_PER_NANO)

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost in USD as a float (original API); use :meth:`cost` for the exact value."""
        check_tokens("input_tokens", input_tokens)
        check_tokens("output_tokens", output_tokens)
        return float(self.cost(Usage(input_tokens, output_tokens)))

    def per_million_dict(self) -> dict[str, Any]:
        """The rates as USD per 1M tokens (fees in USD), for display and JSON."""
        inp, out, cached, write = self._exact
        write_1h, reasoning, request, search = self._extra
        out_dict: dict[str, Any] = {
            "input": inp * _THOUSAND,
            "output": out * _THOUSAND,
            "cache_read": cached * _THOUSAND,
            "cache_write": write * _THOUSAND,
            "cache_write_1h": write_1h * _THOUSAND,
            "reasoning": reasoning * _THOUSAND,
            "per_request": request,
            "per_web_search": search,
        }
        if self.long_context is not None:
            out_dict["above"] = self.long_context_threshold
            out_dict["tier"] = self.long_context.per_million_dict()
        return out_dict
