"""Regenerate the shipped price catalogue from the installed genai-prices (``make prices``).

Reads genai-prices' bundled data (``genai_prices.data.providers``; no network), converts it
with :mod:`agent_budget.genai_convert`, and writes ``core/agent_budget/data/prices.json``
plus the genai-prices licence notice beside it. Prices are never edited by hand: upgrade
genai-prices (``pip install -U genai-prices``) and run this script again.

    python scripts/make_prices.py [--snapshot-date YYYY-MM-DD] [--check]

``--check`` exits 1 when the committed file differs from what the installed genai-prices
would produce (apart from the snapshot date), without writing anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "core"))

from agent_budget.genai_convert import convert_providers, dump_document  # noqa: E402

DATA = ROOT / "core" / "agent_budget" / "data"
PRICES = DATA / "prices.json"
LICENSE = DATA / "genai-prices.LICENSE"


def _licence_text() -> str:
    dist = metadata.distribution("genai-prices")
    for file in dist.files or ():
        if file.name.upper().startswith("LICENSE"):
            text = file.read_text()
            return (
                "The price data in prices.json is converted from genai-prices "
                f"{dist.version} (https://github.com/pydantic/genai-prices),\n"
                "distributed under the following licence:\n\n" + text
            )
    raise SystemExit("genai-prices ships no LICENSE file; cannot generate the notice")


def build(snapshot: str | None) -> str:
    """The catalogue text the installed genai-prices produces."""
    try:
        from genai_prices.data import providers
    except ImportError:
        raise SystemExit(
            "genai-prices is not installed: pip install 'agent-budget[prices]' (or genai-prices)"
        ) from None
    version = metadata.version("genai-prices")
    doc = convert_providers(providers, version=version, snapshot=snapshot)
    return dump_document(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshot-date", help="date the data was taken (default: today)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        old = json.loads(PRICES.read_text(encoding="utf-8"))
        new = json.loads(build(old.get("snapshot")))
        if old != new:
            print(f"{PRICES} is out of date: run make prices", file=sys.stderr)
            return 1
        print(f"{PRICES} matches genai-prices {new['version']}")
        return 0
    text = build(args.snapshot_date)
    PRICES.write_text(text, encoding="utf-8")
    LICENSE.write_text(_licence_text(), encoding="utf-8")
    doc = json.loads(text)
    models = sum(len(p["models"]) for p in doc["providers"])
    print(
        f"wrote {PRICES.relative_to(ROOT)}: genai-prices {doc['version']}, snapshot "
        f"{doc['snapshot']}, {len(doc['providers'])} providers, {models} models, "
        f"{len(text) // 1024} KiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
