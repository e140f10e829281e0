"""The README's runnable snippets (marked ``<!-- readme-test -->``) run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .fake_llms import isolated_settings

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"<!-- readme-test -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_there_are_runnable_snippets():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_snippet_runs(code: str, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that open sqlite:///budget.db write here
    namespace = {"__name__": "__readme__", "call_the_model": lambda: "ok"}
    with isolated_settings():  # LlamaIndex snippets set global Settings
        exec(compile(code, "README.md", "exec"), namespace)
