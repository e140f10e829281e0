"""Run every benchmark case: ``python -m benchmarks [--quick] [--only NAME] [--no-write]``.

Cases are the ``benchmarks/bench_*.py`` modules, found at run time. A case that raises is
reported (traceback on stderr, a note in BENCHMARKS.md) and the others still run; the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from . import report
from .harness import Table

__all__ = ["case_names", "main"]


def case_names() -> list[str]:
    """Module names of every case (``bench_core``, ``bench_stores``, ...), sorted."""
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen cases, print their tables and write BENCHMARKS.md."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument(
        "--only", action="append", default=[], help="run only this case (repeatable)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--output", type=Path, default=None, help="where to write (default: BENCHMARKS.md)"
    )
    args = parser.parse_args(argv)
    names = case_names()
    if args.list:
        print("\n".join(n.removeprefix("bench_") for n in names))
        return 0
    if args.only:
        wanted = set(args.only)
        unknown = wanted - {n.removeprefix("bench_") for n in names} - set(names)
        if unknown:
            parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
        names = [n for n in names if n.removeprefix("bench_") in wanted or n in wanted]
    sections: list[report.Section] = []
    failed = False
    started = time.perf_counter()
    for name in names:
        print(f"# {name}", flush=True)
        case_start = time.perf_counter()
        module = None
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            tables: list[Table] = module.run(quick=args.quick)
            error = None
        except Exception:
            failed = True
            tables = []
            error = traceback.format_exc()
            print(error, file=sys.stderr, flush=True)
        seconds = time.perf_counter() - case_start
        for table in tables:
            print(table.text(), flush=True)
        print(f"# {name}: {seconds:.1f} s", flush=True)
        doc = (module.__doc__ if module is not None else None) or ""
        sections.append(report.Section(name, doc, tables, seconds, error))
    total = time.perf_counter() - started
    print(f"# total: {total:.1f} s", flush=True)
    if not args.no_write and not args.quick:
        path = args.output or Path(__file__).parent.parent / "BENCHMARKS.md"
        report.write(path, sections, total_seconds=total)
        print(f"# wrote {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
