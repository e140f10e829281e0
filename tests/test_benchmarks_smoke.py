"""Every benchmark case runs with tiny counts and returns well-formed tables; the harness
itself (interleaving, threads, ratios, the report, the command line) works.

Cases are discovered from ``benchmarks/bench_*.py`` at collection time, so cases added later
are covered without editing this file. A case module may declare ``SMOKE_MARKS = ("slow",
"redis")`` (a literal tuple of marker names) to mark its smoke run; it is read without
importing the module. No timing is asserted anywhere.
"""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.__main__ import case_names, main
from benchmarks.harness import (
    Table,
    fmt_bytes,
    interleaved,
    interleaved_samples,
    ratio_table,
    run_threads,
)

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def _smoke_marks(name: str) -> list[pytest.MarkDecorator]:
    """The markers a case module declares in ``SMOKE_MARKS``, read from its source."""
    tree = ast.parse((BENCH_DIR / f"{name}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SMOKE_MARKS" for t in node.targets
        ):
            names = ast.literal_eval(node.value)
            return [getattr(pytest.mark, str(n)) for n in names]
    return []


CASES = [pytest.param(name, marks=_smoke_marks(name), id=name) for name in case_names()]


def _check_tables(tables: object) -> None:
    assert isinstance(tables, list) and tables, "a case must return at least one table"
    for table in tables:
        assert isinstance(table, Table)
        assert table.title and table.columns and table.rows, table.title
        for row in table.rows:
            assert len(row) == len(table.columns), (table.title, row)
            assert all(isinstance(cell, str) for cell in row)
        assert table.markdown().startswith(f"### {table.title}")
        assert table.title in table.text()


def test_the_cases_are_discovered() -> None:
    names = case_names()
    assert {"bench_core", "bench_scaling", "bench_estimation"} <= set(names)
    assert all(n.startswith("bench_") for n in names)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", CASES)
def test_case_runs_quick(name: str) -> None:
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    assert (module.__doc__ or "").strip(), f"{name} needs a docstring: it heads its section"
    _check_tables(module.run(quick=True))


# -- the harness -------------------------------------------------------------------------------


def test_interleaved_runs_every_case_every_round_in_rotation() -> None:
    calls: list[tuple[str, int]] = []
    cases = {name: (lambda n, name=name: calls.append((name, n))) for name in "abc"}
    samples = interleaved_samples(cases, 7, rounds=3)
    assert [c[0] for c in calls] == list("abc" + "bca" + "cab")
    assert all(n == 7 for _, n in calls)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    medians = interleaved(cases, 5, rounds=1)
    assert set(medians) == {"a", "b", "c"} and all(v >= 0 for v in medians.values())


def test_interleaved_refuses_empty_work() -> None:
    with pytest.raises(ValueError):
        interleaved({"a": lambda n: None}, 0)


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_run_threads_performs_exactly_n_operations(threads: int) -> None:
    lock = threading.Lock()
    done = [0]
    seen: set[int] = set()

    def op(k: int) -> None:
        with lock:
            done[0] += k
            seen.add(threading.get_ident())

    run_threads(op, 101, threads)
    assert done[0] == 101
    assert len(seen) == threads


def test_run_threads_reraises_a_worker_error() -> None:
    def op(k: int) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_threads(op, 10, 4)


def test_ratio_table_divides_by_the_baseline() -> None:
    table = ratio_table(
        "t",
        {"floor": 2.0, "ours": 5.0, "other": 4.0},
        "floor",
        extra_baselines=["other"],
        notes=["n"],
    )
    assert table.columns == ["case", "us/op", "x floor", "x other"]
    assert table.rows[1] == ["ours", "5.00", "2.50", "1.25"]
    assert table.notes == ["n"]
    assert "| ours | 5.00 | 2.50 | 1.25 |" in table.markdown()


def test_fmt_bytes() -> None:
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(2048) == "2.0 KiB"
    assert fmt_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert fmt_bytes(5 * 1024**4) == f"{5 * 1024**2:.1f} MiB"


def test_report_names_the_machine_and_each_case() -> None:
    ok = report.Section("bench_x", "What x measures.", [Table("T", ["a"], [["1"]])], 1.5)
    failed = report.Section("bench_y", "", [], 0.1, "Traceback...\nRuntimeError: no redis")
    legacy = ("bench_z", "Old-style tuple.", [Table("Z", ["b"], [["2"]])])
    text = report.render([ok, failed, legacy], total_seconds=12)
    assert "- python:" in text and "cores" in text and "- date:" in text
    assert "## x" in text and "What x measures." in text and "### T" in text
    assert "## y" in text and "RuntimeError: no redis" in text
    assert "## z" in text and "### Z" in text
    assert "total run time: 12 s" in text


def test_command_line_lists_and_runs_one_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--list"]) == 0
    assert "core" in capsys.readouterr().out.split()
    out_file = tmp_path / "B.md"
    assert main(["--only", "estimation", "--quick", "--output", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "cl100k" in printed and "# total:" in printed
    assert not out_file.exists()  # quick runs never write the report


def test_command_line_rejects_an_unknown_case() -> None:
    with pytest.raises(SystemExit):
        main(["--only", "no-such-case"])
