"""Run every benchmark case: ``python -m benchmarks [--quick] [--only NAME] [--no-write]``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from . import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--only", action="append", default=[], help="run only these cases")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args(argv)
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n.removeprefix("bench_") in args.only or n in args.only]
    sections = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"# {name}", flush=True)
        tables = module.run(quick=args.quick)
        for table in tables:
            print(table.text(), flush=True)
        sections.append((name, module.__doc__ or "", tables))
    if not args.no_write and not args.quick:
        report.write(here.parent / "BENCHMARKS.md", sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())
