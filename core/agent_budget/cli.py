"""The ``agent-budget`` command line: demo, report, rates, estimate (stdlib argparse)."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .cli_prices import add_price_commands
from .errors import BudgetError, StoreConfigError, UnknownModelError
from .manager import BudgetManager
from .rates import builtin_rates, normalize_model_name

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
