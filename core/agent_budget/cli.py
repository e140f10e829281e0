"""The ``agent-budget`` command line: demo, report, dashboard, rates, estimate (stdlib
argparse)."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from .cli_prices import add_price_commands
from .errors import (
    BudgetError,
    PriceConfigError,
    StoreConfigError,
    UnknownModelError,
    UnknownScopeError,
)
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
    from .report import build_report, open_for_reading, parse_time
    from .report_render import render_csv, render_text

    section = {"hour": "time", "day": "time"}.get(args.by or "", args.by)
    bucket = args.bucket or (args.by if args.by in ("hour", "day") else "hour")
    store = open_for_reading(args.store)
    try:
        now = store.now() or time.time()
        try:
            report = build_report(
                store,
                since=parse_time(args.since, now),
                until=parse_time(args.until, now),
                bucket=bucket,
                scopes=args.scope,
                session=args.session,
                model=args.model,
                rollup=args.rollup,
                top=args.top,
                now=now,
                url=args.store,
            )
        except UnknownScopeError:
            raise
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    finally:
        store.close()
    if args.json:
        from .report_render import SECTIONS

        data = report if section is None else SECTIONS[section].source(report)
        print(json.dumps(data, indent=2))
    elif args.csv:
        sys.stdout.write(render_csv(report, section or "scope"))
    else:
        sys.stdout.write(render_text(report, section=section, top=args.top))
    return EXIT_OK


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import serve

    return serve(
        args.store,
        host=args.host,
        port=args.port,
        token=args.token,
        refresh=args.refresh,
        since=args.since,
        bucket=args.bucket,
        rollup=args.rollup,
        top=args.top,
        open_browser=args.open,
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


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


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        required=True,
        help="store URL, e.g. sqlite:///budget.db or redis://localhost:6379/0",
    )
    parser.add_argument(
        "--since",
        help="start of the period: 24h, 7d, 90m back from now, an ISO date or time, or epoch "
        "seconds (default: 24h for hourly buckets, 7d for daily)",
    )
    parser.add_argument("--bucket", choices=["hour", "day"], help="time bucket (default hour)")
    parser.add_argument(
        "--rollup",
        metavar="PREFIX",
        help="count each call under its nearest scope named PREFIX... (e.g. user:)",
    )
    parser.add_argument(
        "--top", type=_positive, default=10, help="rows per list in the text (default 10)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-budget", description="Token and dollar budgets for LLM agents."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulated calls hitting a session cap and a daily cap")
    demo.set_defaults(func=_cmd_demo)
    report = sub.add_parser(
        "report",
        help="who spent what: per scope, session, model and hour or day; refusals, alerts, "
        "what remains of every limit (reads only)",
    )
    _report_arguments(report)
    report.add_argument(
        "--by",
        choices=[
            "scope",
            "session",
            "model",
            "hour",
            "day",
            "time-model",
            "limits",
            "refusals",
            "alerts",
        ],
        help="show one breakdown only (hour/day: spend over time per scope)",
    )
    report.add_argument("--scope", action="append", help="only this scope and those below it")
    report.add_argument("--session", help="only this session")
    report.add_argument("--model", help="only this model (as recorded, e.g. gpt-4o)")
    report.add_argument("--until", help="end of the period (default: now)")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the report as JSON")
    output.add_argument("--csv", action="store_true", help="one breakdown (--by) as CSV")
    report.set_defaults(func=_cmd_report)
    dashboard = sub.add_parser(
        "dashboard", help="a local web page of spend, limits, refusals and alerts (reads only)"
    )
    _report_arguments(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default local)")
    dashboard.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    dashboard.add_argument(
        "--token",
        default=None,
        help="access token the page must present (required when bound beyond this host; "
        "default: $AGENT_BUDGET_DASHBOARD_TOKEN)",
    )
    dashboard.add_argument(
        "--refresh", type=_positive, default=10, help="seconds between refreshes of the page"
    )
    dashboard.add_argument("--open", action="store_true", help="open it in a web browser")
    dashboard.set_defaults(func=_cmd_dashboard)
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
        except (StoreConfigError, PriceConfigError) as exc:
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
        f"{len(known)} distinct priced model ids, `agent-budget rates 'PATTERN'` filters them"
    )
