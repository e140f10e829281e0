"""Build the tutorial notebooks from their cell sources and execute them in place.

Run with `.venv/bin/python scripts/build_notebooks.py [name ...]`. The committed notebooks
carry their outputs; the test suite re-executes them (tests/test_notebooks.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))

from sources import NOTEBOOK_SOURCES  # noqa: E402


def build(name: str, cells: list[tuple[str, str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, text in cells:
        text = text.strip("\n")
        nb.cells.append(
            nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
        )
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    path = NOTEBOOKS / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def main(argv: list[str]) -> int:
    names = argv or list(NOTEBOOK_SOURCES)
    for name in names:
        print("built", build(name, NOTEBOOK_SOURCES[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
