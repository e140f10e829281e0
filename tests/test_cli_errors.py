"""The command line's behaviour at its edges: a reader that stops early, and errors that say
what exists and which of the CLI's own options to use, as one line and never a traceback.

Each case runs the real program in a subprocess (``python -m agent_budget``, and the
installed ``agent-budget`` console script where there is one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent_budget import open_store
from agent_budget.errors import StoreConfigError
from agent_budget.stores.base import BUILTIN_SCHEMES

ROOT = Path(__file__).resolve().parents[1]
MODULE = (sys.executable, "-m", "agent_budget")
SCRIPT = shutil.which("agent-budget", path=str(Path(sys.executable).parent))


def _env() -> dict[str, str]:
    """This checkout first on the path (the console script imports agent_budget.cli)."""
    path = os.pathsep.join([str(ROOT / "core"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}


def run(*args: str, program: tuple[str, ...] = MODULE, cwd: Path | None = None):
    return subprocess.run(
        [*program, *args], capture_output=True, text=True, env=_env(), timeout=60, cwd=cwd
    )


def run_into_closed_pipe(*args: str, program: tuple[str, ...] = MODULE):
    """Run with stdout a pipe whose reader has already gone, as `... | head -0` leaves it:
    every write fails with EPIPE, whatever the size of the output."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [*program, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            timeout=60,
        )
    finally:
        os.close(write_end)
    return done


PROGRAMS = [pytest.param(MODULE, id="python-m")]
if SCRIPT:
    PROGRAMS.append(pytest.param((SCRIPT,), id="console-script"))


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize(
    "args",
    [
        ("rates",),
        ("rates", "--json"),
        ("demo",),
        ("estimate", "gpt-4o", "--input", "10"),
        ("--help",),
        ("report", "--store", "memory://"),
    ],
    ids=lambda a: " ".join(a),
)
def test_a_closed_pipe_ends_quietly_with_0(program, args):
    """`agent-budget rates | head -3`: the reader stopped; that is not an error."""
    done = run_into_closed_pipe(*args, program=program)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_head_in_a_real_pipeline_exits_0(tmp_path):
    """The README's usage, through a shell with pipefail (every stage must succeed)."""
    command = f"{' '.join(MODULE)} rates | head -3"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3 and done.stderr == ""


def test_unknown_scheme_lists_every_builtin_scheme():
    done = run("report", "--store", "ftp://host/x")
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown store scheme 'ftp'")
    for scheme in ("memory", "sqlite", "redis", "rediss", "redis+cluster", "rediss+cluster"):
        assert scheme in done.stderr
    assert set(BUILTIN_SCHEMES) >= {"memory", "sqlite", "redis", "rediss", "redis+cluster"}


def test_unknown_scheme_lists_every_builtin_scheme_in_python_too():
    """Before any SQLite or Redis store was opened in this process as well."""
    code = (
        "from agent_budget import open_store\n"
        "try:\n    open_store('nosql://x')\n"
        "except Exception as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    for scheme in BUILTIN_SCHEMES:
        assert scheme in done.stdout
    with pytest.raises(StoreConfigError, match="sqlite"):
        open_store("nosql://x")


def test_unknown_model_suggests_close_names_and_the_rates_command():
    done = run("estimate", "gpt-4oo", "--input", "100")
    assert done.returncode == 2
    assert "gpt-4oo" in done.stderr and "did you mean gpt-4o" in done.stderr
    assert "agent-budget rates" in done.stderr
    # The library's message names Python arguments; the CLI has no such options.
    assert "rates=" not in done.stderr and "on_unknown" not in done.stderr
    far = run("estimate", "zzzz", "--input", "1")
    assert far.returncode == 2 and "did you mean" not in far.stderr
    assert "agent-budget rates" in far.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("nosuchcommand",), 2, "invalid choice"),
        (("report",), 2, "--store"),
        (("report", "--store", "nonsense"), 2, "malformed store URL"),
        (("report", "--store", ""), 2, "store URL"),
        (("estimate", "gpt-4o", "--input", "-1"), 2, "negative"),
        (("estimate", "gpt-4o", "--input", "many"), 2, "whole number"),
        (("estimate", "no-such-model", "--input", "1"), 2, "no built-in price"),
        (("report", "--store", "memory://", "--scope", "nobody"), 1, "nobody"),
    ],
)
def test_errors_are_one_line_without_a_traceback(args, code, needle, tmp_path):
    done = run(*args, cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(("error:", "agent-budget"))


@pytest.mark.parametrize("value", ["/nonexistent/prices.json", "genai-price", "{tmp}/bad.json"])
@pytest.mark.parametrize(
    "args", [("rates",), ("rates", "gpt-4o"), ("estimate", "gpt-4o", "--input", "10")]
)
def test_a_bad_prices_setting_is_one_configuration_error_line(args, value, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    value = value.format(tmp=tmp_path)
    env = {**_env(), "AGENT_BUDGET_PRICES": value}
    out = subprocess.run([*MODULE, *args], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: AGENT_BUDGET_PRICES=") and repr(value) in line
    assert "'snapshot'" in line and "'genai-prices'" in line


def test_a_bad_prices_setting_raises_the_configuration_error_from_the_library(tmp_path):
    code = (
        "from agent_budget import Budget, BudgetScope\n"
        "from agent_budget.errors import PriceConfigError\n"
        "b = Budget(BudgetScope('x'))\n"
        "for call in (lambda: b.record('s', 'gpt-4o', 1, 1), lambda: b.reserve('gpt-4o', 1, 1)):\n"
        "    try:\n"
        "        call()\n"
        "    except PriceConfigError as exc:\n"
        "        assert isinstance(exc, ValueError), exc\n"
        "        print('AGENT_BUDGET_PRICES' in str(exc) and 'genai-price' in str(exc))\n"
    )
    env = {**_env(), "AGENT_BUDGET_PRICES": "genai-price"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["True", "True"], out.stderr
