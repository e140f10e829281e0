"""The ``agent-budget`` command line: demo, report, rates, estimate (stdlib argparse)."""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .errors import BudgetError, StoreConfigError, UnknownModelError
from .manager import BudgetManager
from .rates import RateTable, builtin_rates, normalize_model_name
from .usage import Usage

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    demo.run(sys.stdout)
    return EXIT_OK


def _cmd_rates(args: argparse.Namespace) -> int:
    rows = [
        r
        for r in builtin_rates().values()
        if not args.pattern
        or fnmatch.fnmatch(r.model, args.pattern)
        or args.pattern.lower() in r.model
    ]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "model": r.model,
                        "input_per_1m": str(r.input_per_1m),
                        "cached_input_per_1m": _opt(r.cached_input_per_1m),
                        "cache_write_per_1m": _opt(r.cache_write_per_1m),
                        "output_per_1m": str(r.output_per_1m),
                        "effective": r.effective,
                        "source": r.source,
                        "note": r.note,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return EXIT_OK
    if not rows:
        print(f"no built-in rates match {args.pattern!r}", file=sys.stderr)
        return EXIT_ERROR
    table = [["model", "input/1M", "cached/1M", "cache write/1M", "output/1M", "effective", "note"]]
    for r in rows:
        table.append(
            [
                r.model,
                f"${r.input_per_1m}",
                _money(r.cached_input_per_1m),
                _money(r.cache_write_per_1m),
                f"${r.output_per_1m}",
                r.effective,
                r.note,
            ]
        )
    _print_table(table)
    sources = sorted({r.source for r in rows})
    print("\nsources: " + "; ".join(sources))
    return EXIT_OK


def _cmd_estimate(args: argparse.Namespace) -> int:
    table = RateTable(on_unknown="raise")
    resolved = table.resolve(args.model)
    usage = Usage(args.input + args.cached, args.output, cache_read_tokens=args.cached)
    cost = resolved.rates.cost(usage)
    if args.json:
        print(
            json.dumps(
                {
                    "model": resolved.name,
                    "priced_as": resolved.price_key,
                    "input_tokens": usage.input_tokens,
                    "cached_tokens": args.cached,
                    "output_tokens": args.output,
                    "cost_usd": _plain(cost),
                }
            )
        )
    else:
        print(
            f"{args.model} (priced as {resolved.price_key}): {usage.input_tokens} input "
            f"({args.cached} cached) + {args.output} output tokens = ${_plain(cost)}"
        )
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    manager = BudgetManager(store=args.store)
    try:
        names = manager.scopes()
        if args.scope:
            if args.scope not in names:
                print(
                    f"error: no scope {args.scope!r} in {args.store}"
                    f" (known: {', '.join(names) or 'none'})",
                    file=sys.stderr,
                )
                return EXIT_ERROR
            names = [args.scope]
        summaries = {name: manager.summary(name, exact=True) for name in names}
    finally:
        manager.close()
    if args.json:
        print(json.dumps(summaries, indent=2, default=_json_default))
        return EXIT_OK
    if not summaries:
        print(f"no scopes in {args.store}")
        return EXIT_OK
    table = [["scope", "limit", "used", "reserved", "limit value", "used %"]]
    for name, summary in summaries.items():
        label = name + (f" (< {summary['parent']})" if summary.get("parent") else "")
        if not summary["limits"]:
            table.append([label, "(no limits)", "", "", "", ""])
        for limit_type, row in summary["limits"].items():
            table.append(
                [
                    label,
                    limit_type,
                    _num(row["used"]),
                    _num(row["reserved"]),
                    _num(row["limit"]),
                    f"{row['pct'] * 100:.1f}%",
                ]
            )
            label = ""
    _print_table(table)
    print()
    usage = [["scope", "session tokens", "session $", "day tokens", "day $", "models"]]
    for name, summary in summaries.items():
        models = ", ".join(
            f"{m}: {v['tokens']} tok ${_plain(v['cost_usd'])}"
            for m, v in summary["per_model"].items()
        )
        usage.append(
            [
                name,
                str(summary["session"]["tokens"]),
                _plain(summary["session"]["cost_usd"]),
                str(summary["day"]["tokens"]),
                _plain(summary["day"]["cost_usd"]),
                models,
            ]
        )
    _print_table(usage)
    return EXIT_OK


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"${value}"


def _plain(value: Any) -> str:
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return text if text != "-0" else "0"
    return str(value)


def _num(value: Any) -> str:
    return _plain(value) if isinstance(value, Decimal) else str(value)


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of tokens, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"token counts must not be negative, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-budget", description="Token and dollar budgets for LLM agents."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulated calls hitting a session cap and a daily cap")
    demo.set_defaults(func=_cmd_demo)
    report = sub.add_parser("report", help="every scope's usage against its limits")
    report.add_argument(
        "--store",
        required=True,
        help="store URL, e.g. sqlite:///budget.db or redis://localhost:6379/0",
    )
    report.add_argument("--scope", help="only this scope")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    report.set_defaults(func=_cmd_report)
    rates = sub.add_parser("rates", help="the built-in price table with dates and sources")
    rates.add_argument("pattern", nargs="?", help="glob or substring, e.g. 'claude*'")
    rates.add_argument("--json", action="store_true")
    rates.set_defaults(func=_cmd_rates)
    estimate = sub.add_parser("estimate", help="the cost of one call")
    estimate.add_argument("model")
    estimate.add_argument("--input", type=_nonneg, required=True, help="uncached input tokens")
    estimate.add_argument("--output", type=_nonneg, default=0, help="output tokens")
    estimate.add_argument("--cached", type=_nonneg, default=0, help="cached input tokens")
    estimate.add_argument("--json", action="store_true")
    estimate.set_defaults(func=_cmd_estimate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code: 0 success, 1 an error (unknown scope, store
    failure), 2 a usage or configuration error (argparse's own errors included).

    Errors are one ``error: ...`` line on stderr, never a traceback. Output cut short by
    its reader (``agent-budget rates | head -3``) ends quietly with 0, as ``head`` expects.
    """
    try:
        args = build_parser().parse_args(argv)
        try:
            result: int = args.func(args)
        except UnknownModelError as exc:
            return _fail(_unknown_model(args, exc), EXIT_USAGE)
        except StoreConfigError as exc:
            return _fail(str(exc), EXIT_USAGE)
        except BudgetError as exc:
            return _fail(str(exc), EXIT_ERROR)
        sys.stdout.flush()
        return result
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _drop_stdout() -> None:
    """The reader closed the pipe: point stdout at /dev/null so the interpreter's final
    flush of what is still buffered does not fail again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (embedded, tests)
        pass


def _unknown_model(args: argparse.Namespace, exc: UnknownModelError) -> str:
    """The CLI's words for an unknown model: the close built-in names and the command that
    lists them (the library's message suggests Python arguments the CLI does not have)."""
    model = getattr(args, "model", None)
    if not isinstance(model, str):
        return str(exc)
    known = sorted(builtin_rates())
    close = difflib.get_close_matches(normalize_model_name(model), known, n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (
        f"no built-in price for model {model!r}{hint}; `agent-budget rates` lists the "
        f"{len(known)} priced models, `agent-budget rates 'PATTERN'` filters them"
    )
