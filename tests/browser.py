"""A real headless browser for the dashboard tests: the system Chromium driven by Playwright.

Playwright's own browser download is never used (``executable_path`` points at the system
binary that ``scripts/ensure-chromium`` installs). Without a Chromium binary or the
playwright package the tests skip with the reason, except under CI (``CI=true``), where
they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

__all__ = ["CHROMIUM_FLAGS", "chromium_path", "headless_page"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Flags for a closed network: no background connections, no first-run work."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def chromium_path() -> str:
    """The system Chromium (skip, or fail under CI, when there is none or no playwright)."""
    path = next(
        (
            found
            for name in ("chromium", "chromium-browser", "google-chrome")
            if (found := shutil.which(name))
        ),
        None,
    )
    reason = None
    if path is None:
        reason = (
            "no chromium binary on PATH: install it (Debian/Ubuntu: apt-get install chromium, "
            "or run `make test`) to run the dashboard's browser tests"
        )
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed: pip install -e '.[dev]'"
    if reason is not None:
        if _in_ci():
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    assert path is not None
    return path


@contextmanager
def headless_page(
    width: int = 1280, height: int = 1000, *, allow_errors: bool = False
) -> Iterator[Any]:
    """A Playwright page in headless system Chromium; console errors fail the test unless
    ``allow_errors`` (a test of error answers)."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: errors.append(msg.text) if msg.type == "error" else None,
            )
            yield page
        finally:
            browser.close()
    assert allow_errors or not errors, errors
