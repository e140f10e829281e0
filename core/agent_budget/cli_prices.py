"""``agent-budget rates`` and ``agent-budget estimate``: the price catalogue, how a model
name resolves, and the cost of one call."""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import sys
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from .catalogue import Catalogue
from .matching import clause_matches, describe_clause
from .price_row import tier_context
from .rates import RateTable, ResolvedModel, builtin_rates
from .usage import Usage

__all__ = ["add_price_commands"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
_GLOB = set("*?[")


def _table(args: argparse.Namespace, on_unknown: str = "raise") -> RateTable:
    """The rate table the options describe; a source that cannot be read is a usage error
    (exit 2) naming the file."""
    try:
        catalogue = None
        if args.prices == "genai-prices":
            catalogue = Catalogue.from_genai_prices()
        elif args.prices not in (None, "snapshot"):
            catalogue = Catalogue.from_file(args.prices)
        return RateTable(
            overlays=args.overlay or (),
            catalogue=catalogue,
            on_unknown=on_unknown,  # type: ignore[arg-type]
        )
    except (OSError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _when(args: argparse.Namespace) -> float:
    if not args.at:
        return time.time()
    try:
        day = dt.datetime.fromisoformat(args.at)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at expects YYYY-MM-DD[THH:MM], got {args.at!r}")
    if day.tzinfo is None:
        day = day.replace(tzinfo=dt.timezone.utc)
    return day.timestamp()


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text if text != "-0" else "0"
    return str(value)


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"${_plain(value)}"


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _source_line(catalogue: Catalogue | None, priced: int | None = None) -> str:
    """The source, its dates and its size: ``N models`` counts the source's rows (one per
    provider a model is sold by); ``priced`` the distinct token-priced model ids that
    ``agent-budget rates`` lists (and ``estimate`` suggests from)."""
    if catalogue is None:
        return "no catalogue"
    change = f", latest price change {catalogue.latest_change}" if catalogue.latest_change else ""
    ids = "" if priced is None else f" ({priced} distinct priced model ids)"
    return (
        f"{catalogue.label} ({catalogue.url}), snapshot {catalogue.snapshot}{change}; "
        f"{len(catalogue)} models of {len(catalogue.providers)} providers{ids}"
    )


def _cmd_rates(args: argparse.Namespace) -> int:
    pattern = args.pattern
    if pattern and not (_GLOB & set(pattern)) and not args.list:
        return _explain(args, pattern)
    table = _table(args)
    catalogue = table.catalogue
    rows = builtin_rates() if args.prices in (None, "snapshot") else _rows_of(catalogue)
    wanted = [
        r
        for r in rows.values()
        if not pattern
        or fnmatch.fnmatch(r.model.lower(), pattern.lower())
        or (not (_GLOB & set(pattern)) and pattern.lower() in r.model.lower())
    ]
    if args.provider:
        wanted = [r for r in wanted if r.provider == args.provider]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "model": r.model,
                        "provider": r.provider,
                        "input_per_1m": _plain(r.input_per_1m),
                        "cached_input_per_1m": _opt(r.cached_input_per_1m),
                        "cache_write_per_1m": _opt(r.cache_write_per_1m),
                        "cache_write_1h_per_1m": _opt(r.cache_write_1h_per_1m),
                        "output_per_1m": _plain(r.output_per_1m),
                        "effective": r.effective,
                        "source": r.source,
                        "note": r.note,
                    }
                    for r in wanted
                ],
                indent=2,
            )
        )
        return EXIT_OK
    if not wanted:
        print(f"no catalogue model matches {pattern!r}", file=sys.stderr)
        return EXIT_ERROR
    out = [["provider", "model", "input/1M", "cached/1M", "write/1M", "output/1M", "effective"]]
    for r in wanted:
        out.append(
            [
                r.provider,
                r.model,
                _money(r.input_per_1m),
                _money(r.cached_input_per_1m),
                _money(r.cache_write_per_1m),
                _money(r.output_per_1m),
                r.effective + (" *" if r.note else ""),
            ]
        )
    _print_table(out)
    if any(r.note for r in wanted):
        print("\n* has prompt-size tiers: agent-budget rates MODEL shows them")
    print(f"\nsources: {_source_line(catalogue, len(rows))}")  # always the last line
    return EXIT_OK


def _rows_of(catalogue: Catalogue | None) -> Mapping[str, Any]:
    from .rates import _builtin

    if catalogue is None:
        return {}
    now = time.time()
    out: dict[str, Any] = {}
    for index in sorted(range(len(catalogue)), key=catalogue._order):
        row = catalogue.row(index)
        quote = row.quote(now)
        if quote is not None and row.id not in out:
            out[row.id] = _builtin(row, quote, catalogue.label)
    return out


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else _plain(value)


def _rates_words(values: Mapping[str, Any]) -> str:
    """Rates (``ModelRates.per_million_dict()``, as JSON-ready strings) in words."""
    parts = [
        f"input ${_plain(values['input'])}",
        f"cache read ${_plain(values['cache_read'])}",
        f"cache write ${_plain(values['cache_write'])}",
    ]
    if values["cache_write_1h"] != values["cache_write"]:
        parts.append(f"1h cache write ${_plain(values['cache_write_1h'])}")
    parts.append(f"output ${_plain(values['output'])}")
    if values["reasoning"] != values["output"]:
        parts.append(f"reasoning ${_plain(values['reasoning'])}")
    text = ", ".join(parts) + " per 1M tokens"
    if Decimal(values["per_request"]):
        text += f"; ${_plain(values['per_request'])} per request"
    if Decimal(values["per_web_search"]):
        text += f"; ${_plain(values['per_web_search'])} per web search"
    return text


def _explain_data(
    table: RateTable, resolved: ResolvedModel, model: str, when: float, tier: str | None
) -> dict[str, Any]:
    """Everything ``rates MODEL`` shows: the family, the row and rule that matched, the
    rates of the tier in force at ``when``, the row's history and variants."""
    quote = resolved.quote(when, table.default_tier(tier))
    data: dict[str, Any] = {
        "model": model,
        "family": resolved.name,
        "known": resolved.known,
        "price_id": resolved.price_id,
        "source": resolved.source,
        "source_date": resolved.source_date or None,
        "how": resolved.how,
        "tier": quote.tier,
        "effective": quote.effective or None,
        "rates_per_1m": _jsonable(quote.rates.per_million_dict()),
    }
    row = resolved.row
    catalogue = table.catalogue
    if row is not None:
        data["history"] = [
            {"when": words, "prices": dict(prices)} for words, prices in row.history()
        ]
        data["variants"] = row.variant_names()
        data["unbilled_price_keys"] = row.unbilled_keys(when)
        if catalogue is not None and resolved.source == catalogue.label:
            clause = catalogue.match_clause_of(row)
            spelling = resolved.how.rsplit(" as ", 1)[-1]
            leaf = clause_matches(clause, spelling) if clause is not None else None
            data["rule"] = describe_clause(leaf) if leaf is not None else None
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _plain(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _explain(args: argparse.Namespace, model: str) -> int:
    table = _table(args, on_unknown="fallback")
    when = _when(args)
    if args.tier:
        tier_context(args.tier)  # validates the spelling
    resolved = table.resolve(model, provider=args.provider)
    data = _explain_data(table, resolved, model, when, args.tier)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK if resolved.known else EXIT_ERROR
    rates = data["rates_per_1m"]
    print(f"model:     {model}")
    print(f"family:    {resolved.name} (per-model counters and limits)")
    if not resolved.known:
        print(f"price:     none; a budget charges {resolved.how}:")
        print(f"           {_rates_words(rates)}")
        print("           (price it with rates=, aliases= or an overlay file)")
        print(f"sources:   {_source_line(table.catalogue)}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"priced by: {resolved.price_id} ({resolved.source}, {resolved.source_date or 'undated'})"
    )
    print(f"matched:   {resolved.how}" + (f"; rule {data['rule']}" if data.get("rule") else ""))
    since = data["effective"] or f"(undated; as of {resolved.source_date or '?'})"
    print(f"tier:      {data['tier']}, prices in force since {since}")
    print(f"rates:     {_rates_words(rates)}")
    tier_rates = rates
    while "tier" in tier_rates:
        above = tier_rates["above"]
        tier_rates = tier_rates["tier"]
        print(f"  above {above} input tokens (whole call): {_rates_words(tier_rates)}")
    history = data.get("history", [])
    for period in history if len(history) > 1 else []:
        print(f"history:   {period['when']}: {_prices_words(period['prices'])}")
    if data.get("variants"):
        print(f"variants:  {', '.join(data['variants'])} (pass the tier with --tier)")
    if data.get("unbilled_price_keys"):
        print(f"unbilled:  {', '.join(data['unbilled_price_keys'])} (not in agent-budget usage)")
    return EXIT_OK


def _prices_words(prices: Mapping[str, Any]) -> str:
    parts = []
    for key, value in prices.items():
        shown = value if isinstance(value, str) else f"{value[0]} (+tiers)"
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def _cmd_estimate(args: argparse.Namespace) -> int:
    table = _table(args, on_unknown=args.on_unknown)
    resolved = table.resolve(args.model, provider=args.provider)
    if not resolved.known and args.on_unknown == "warn":
        print(
            f"warning: model {args.model!r} has no known price; charging {resolved.how}",
            file=sys.stderr,
        )
    inp = args.input + args.cached + args.cache_write
    usage = Usage(
        inp,
        args.output,
        cache_read_tokens=args.cached,
        cache_write_tokens=args.cache_write,
        reasoning_tokens=min(args.reasoning, args.output),
        cache_write_1h_tokens=min(args.cache_write_1h, args.cache_write),
        web_searches=args.web_searches,
        service_tier=args.tier,
    )
    quote = resolved.quote(_when(args), table.default_tier(args.tier))
    cost = quote.rates.cost(usage)
    tier = quote.tier
    above = quote.rates.tier_label(inp)
    if above:
        tier = f"{tier}, {above}"
    if args.json:
        print(
            json.dumps(
                {
                    "model": resolved.name,
                    "priced_as": resolved.price_key or None,
                    "input_tokens": usage.input_tokens,
                    "cached_tokens": args.cached,
                    "cache_write_tokens": args.cache_write,
                    "output_tokens": args.output,
                    "cost_usd": _plain(cost),
                    "price_source": resolved.source,
                    "price_date": resolved.source_date or None,
                    "effective": quote.effective or None,
                    "price_tier": tier,
                }
            )
        )
    else:
        priced = resolved.price_id
        print(
            f"{args.model} (priced as {priced}, {resolved.source} {resolved.source_date}, {tier}): "
            f"{usage.input_tokens} input ({args.cached} cached, {args.cache_write} cache "
            f"writes) + {args.output} output tokens = ${_plain(cost)}"
        )
    return EXIT_OK


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of tokens, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"token counts must not be negative, got {value}")
    return value


def _source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prices",
        metavar="SOURCE",
        help="snapshot (default), genai-prices (its live data; needs agent-budget[prices]) "
        "or the path of a generated catalogue",
    )
    parser.add_argument(
        "--overlay",
        action="append",
        metavar="FILE",
        help="overlay or LiteLLM price file consulted first (repeatable)",
    )
    parser.add_argument("--provider", help="where the call goes (openai, aws, openrouter ...)")
    parser.add_argument("--tier", help="service tier: batch, flex, priority ...")
    parser.add_argument("--at", help="price in force on this date (YYYY-MM-DD), default now")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_price_commands(sub: Any) -> None:
    """Add ``rates`` and ``estimate`` to the ``agent-budget`` sub-command parser."""
    rates = sub.add_parser(
        "rates",
        help="the price catalogue (source, date), or how one model name is priced",
        description="With a model name: how it resolves, which row and tier price it. "
        "With a glob ('claude*') or none: the catalogue's current prices.",
    )
    rates.add_argument("pattern", nargs="?", help="a model name, or a glob such as 'claude*'")
    rates.add_argument("--list", action="store_true", help="list rows containing PATTERN")
    _source_options(rates)
    rates.set_defaults(func=_cmd_rates)
    estimate = sub.add_parser("estimate", help="the cost of one call")
    estimate.add_argument("model")
    estimate.add_argument("--input", type=_nonneg, required=True, help="uncached input tokens")
    estimate.add_argument("--output", type=_nonneg, default=0, help="output tokens")
    estimate.add_argument("--cached", type=_nonneg, default=0, help="cached input tokens")
    estimate.add_argument(
        "--cache-write", type=_nonneg, default=0, help="input tokens written to the cache"
    )
    estimate.add_argument(
        "--cache-write-1h", type=_nonneg, default=0, help="of those, kept for one hour"
    )
    estimate.add_argument(
        "--reasoning", type=_nonneg, default=0, help="of the output, reasoning tokens"
    )
    estimate.add_argument("--web-searches", type=_nonneg, default=0, help="web searches")
    estimate.add_argument(
        "--on-unknown",
        choices=("raise", "warn", "fallback"),
        default="raise",
        help="a model with no price: error (default), or charge the fallback",
    )
    _source_options(estimate)
    estimate.set_defaults(func=_cmd_estimate)
