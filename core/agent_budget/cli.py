"""The ``agent-budget`` command line: demo, report, rates, estimate (stdlib argparse)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .cli_prices import add_price_commands
from .errors import BudgetError, StoreConfigError, UnknownModelError
from .manager import BudgetManager

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    demo.run(sys.stdout)
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
    add_price_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (StoreConfigError, UnknownModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
