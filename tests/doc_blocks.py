"""The code blocks of README.md and docs/*.md, and a runner that executes one as a new user would.

A block runs as written: pasted alone into a file, run by the project's interpreter in a
fresh empty working directory, with a private temporary directory and home, no API keys and
no tracing. A block preceded by the line ``<!-- fragment -->`` shows one call inside a
larger app; it is only compiled.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DOC_FILES",
    "FRAGMENT",
    "ROOT",
    "Block",
    "Run",
    "blocks_in",
    "free_names",
    "python_blocks",
    "run_block",
]

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
FRAGMENT = "<!-- fragment -->"
PYTHON_LANGS = frozenset(("python", "py", "python3"))

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    fragment: bool  # preceded by the line ``<!-- fragment -->``
    prose: str  # the paragraph just before the block (or before its marker)

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks_in(path: Path) -> list[Block]:
    """Every fenced block of ``path``; an indented block (inside a list) loses its indent."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opened = _OPEN.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not close.match(lines[end]):
            end += 1
        body = [_strip_indent(line, indent) for line in lines[i + 1 : end]]
        before = _previous_nonblank(lines, i)
        fragment = before is not None and lines[before].strip() == FRAGMENT
        prose_end = _previous_nonblank(lines, before) if fragment and before is not None else before
        out.append(
            Block(
                path=path,
                line=i + 1,
                lang=(opened["info"].split() or [""])[0].lower(),
                code="\n".join(body) + "\n",
                fragment=fragment,
                prose=_paragraph_ending_at(lines, prose_end),
            )
        )
        i = end + 1
    return out


def python_blocks(paths: Iterable[Path] = DOC_FILES) -> list[Block]:
    return [b for path in paths for b in blocks_in(path) if b.lang in PYTHON_LANGS]


def _strip_indent(line: str, indent: int) -> str:
    """Remove up to ``indent`` leading spaces, as CommonMark does inside an indented fence."""
    n = 0
    while n < indent and n < len(line) and line[n] == " ":
        n += 1
    return line[n:]


def _previous_nonblank(lines: list[str], index: int | None) -> int | None:
    if index is None:
        return None
    j = index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return j if j >= 0 else None


def _paragraph_ending_at(lines: list[str], end: int | None) -> str:
    if end is None:
        return ""
    start = end
    while start > 0 and lines[start - 1].strip() and not _OPEN.match(lines[start - 1]):
        start -= 1
    return " ".join(line.strip() for line in lines[start : end + 1])


# -- what a fragment leaves undefined -----------------------------------------------------------


def free_names(code: str) -> set[str]:
    """Names the block reads but neither binds, imports nor gets from builtins.

    A name bound anywhere in the block counts as bound (a deliberate over-approximation: a
    block with a free name by this count surely needs context to run).
    """
    tree = ast.parse(code)
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return loaded - bound - set(dir(builtins))


def needs_top_level_await(code: str) -> bool:
    """True if the block only compiles with ``await`` allowed at top level."""
    try:
        compile(code, "<block>", "exec")
    except SyntaxError:
        compile(code, "<block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return True
    return False


# -- running a block ----------------------------------------------------------------------------

# Variables that would let a block reach a real provider or a tracing service.
_SECRET = re.compile(r"(_API_KEY|_API_TOKEN|_BASE_URL|_ENDPOINT)$|^(LANGSMITH_|LANGCHAIN_)")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    left_in_cwd: list[str]
    left_in_tmp: list[str]
    left_in_home: list[str]


def run_block(
    block: Block,
    base: Path,
    *,
    python: Iterable[str] = (sys.executable,),
    pythonpath: Iterable[Path] = (),
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> Run:
    """Run ``block`` as its own script (in ``base/script``) with ``base/cwd`` as the working
    directory, ``TMPDIR`` set to ``base/tmp`` and ``HOME`` to ``base/home``, all three empty
    at the start; report what it printed and what it left in them."""
    script_dir, cwd, tmp, home = (base / n for n in ("script", "cwd", "tmp", "home"))
    for folder in (script_dir, cwd, tmp, home):
        folder.mkdir(parents=True)
    script = script_dir / (re.sub(r"[^A-Za-z0-9]+", "_", block.id) + ".py")
    script.write_text(block.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not _SECRET.search(k)}
    path = [*map(str, pythonpath), env.get("PYTHONPATH", "")]
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in path if p),
        TMPDIR=str(tmp),
        HOME=str(home),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONWARNINGS="default::DeprecationWarning:__main__",
        **(extra_env or {}),
    )
    done = subprocess.run(
        [*python, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(
        done.returncode,
        done.stdout,
        done.stderr,
        sorted(p.name for p in cwd.iterdir()),
        sorted(p.name for p in tmp.iterdir()),
        sorted(p.name for p in home.iterdir()),
    )
