"""Prices: pricing a call on the hot path, resolving a never-seen name against the whole
catalogue, and loading the catalogue.

Hot path: a cached model name is resolved and a call priced (the reservation's worst case
and the commit's cost), against a copy of the previous release's hot path (a cached dict
lookup, then the same integer arithmetic over four rates), and the whole Budget
reserve+commit with catalogue prices against the same Budget with your own flat rates.
Target: as fast as before (1.0x, within noise).

Never-seen names: real spellings (snapshots, router prefixes, Bedrock and Vertex ids) each
resolved with an empty cache, against genai-prices' own lookup with its cache emptied
(when installed). Target: under 50 us per name.

Loading: the shipped catalogue parsed and indexed, against parsing its JSON alone (the
floor) and importing genai-prices' data module in a fresh process (a reference). Target:
under 50 ms, and only on first use (import agent_budget loads no prices).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib import resources
from typing import Any

from agent_budget import Budget, MemoryStore, ModelRates, RateTable, Usage
from agent_budget.catalogue import Catalogue

from .bench_core import _Clock
from .harness import Table, bench_scope, interleaved, ratio_table

__all__ = ["NAMES", "run"]

MODEL = "gpt-4o-mini"
IN_TOKENS, MAX_OUT, OUT_TOKENS = 1200, 400, 350
HOT_TARGET = 1.10
NAME_TARGET_US = 50.0
LOAD_TARGET_MS = 50.0

NAMES = [
    "gpt-4o-2024-08-06",
    "GPT-4o-mini-2024-07-18",
    "openai/gpt-4.1-nano",
    "azure/gpt-4o",
    "gpt-35-turbo-0125",
    "o1-pro-2025-03-19",
    "chatgpt-4o-latest",
    "gpt-5.2-20251211",
    "ft:gpt-4o-mini-2024-07-18:my-org::abc123",
    "claude-3-7-sonnet-20250219",
    "claude-sonnet-4-0",
    "claude-3-5-sonnet@20240620",
    "anthropic/claude-3.5-sonnet",
    "openrouter/anthropic/claude-3.5-sonnet",
    "anthropic.claude-3-sonnet-20240229-v1:0",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "bedrock/us.anthropic.claude-3-haiku-20240307-v1:0",
    "us.meta.llama3-1-70b-instruct-v1:0",
    "models/gemini-2.5-flash",
    "gemini/gemini-2.5-pro",
    "gemini-1.5-flash-8b",
    "vertex_ai/claude-3-5-sonnet@20240620",
    "grok-4",
    "command-a-03-2025",
    "mistral-large-latest",
    "deepseek-r1",
    "groq/llama-3.3-70b-versatile",
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
]
UNKNOWN = ["my-azure-deployment", "gpt-9-ultra-2099-01-01", "claude-opus-9", "acme/llm-7"]


class _PreviousRates:
    """The previous release's ``ModelRates`` pricing methods, copied: the tier lookup, then
    integer atto-dollar arithmetic over four rates."""

    _ATTO_PER_NANO = 10**9

    def __init__(self, rates: ModelRates) -> None:
        atto = rates._atto
        assert atto is not None
        self._atto = atto[:4]
        self.long_context: Any = None
        self.long_context_threshold: int | None = None

    def _tier(self, input_tokens: int) -> _PreviousRates:
        if (
            self.long_context is not None
            and self.long_context_threshold is not None
            and input_tokens > self.long_context_threshold
        ):
            return self.long_context  # type: ignore[no-any-return]
        return self

    def worst_case_nanos(self, input_tokens: int, max_output_tokens: int) -> int:
        tier = self._tier(input_tokens)
        atto = tier._atto
        total = input_tokens * max(atto[0], atto[3]) + max_output_tokens * atto[1]
        return -(-total // self._ATTO_PER_NANO)

    def cost_nanos(self, usage: Usage) -> int:
        tier = self._tier(usage.input_tokens)
        atto = tier._atto
        total = (
            usage.uncached_input_tokens * atto[0]
            + usage.cache_read_tokens * atto[2]
            + usage.cache_write_tokens * atto[3]
            + usage.output_tokens * atto[1]
        )
        return -(-total // self._ATTO_PER_NANO)


class _PreviousPricing:
    """The previous release's ``RateTable.resolve``, copied: a cached name -> resolved model
    lookup and the unknown-model policy check."""

    def __init__(self, rates: ModelRates) -> None:
        self.on_unknown = "warn"
        self._cache = {MODEL: (MODEL, _PreviousRates(rates), True)}

    def resolve(self, model: str, *, on_unknown: str | None = None) -> Any:
        hit = self._cache.get(model) if isinstance(model, str) else None
        if hit is None:
            raise KeyError(model)
        policy = on_unknown or self.on_unknown
        if not hit[2] and policy == "raise":
            raise LookupError(model)
        return hit


def _hot_path(n: int, rounds: int) -> Table:
    table = RateTable()
    resolved = table.resolve(MODEL)
    now = time.time()
    previous = _PreviousPricing(resolved.quote(now).rates)
    usage = Usage(IN_TOKENS, OUT_TOKENS)
    assert previous.resolve(MODEL)[1].cost_nanos(usage) == resolved.quote(now).rates.cost_nanos(
        usage
    )

    def before(k: int) -> None:
        for _ in range(k):
            rates = previous.resolve(MODEL)[1]
            rates.worst_case_nanos(IN_TOKENS, MAX_OUT)
            rates.cost_nanos(usage)

    def ours(k: int) -> None:
        for _ in range(k):
            rates = table.resolve(MODEL).quote(now).rates
            rates.worst_case_nanos(IN_TOKENS, MAX_OUT)
            rates.cost_nanos(usage)

    flat = ModelRates.per_million("0.15", "0.6", "0.075")
    clock = _Clock()
    with_catalogue = Budget(bench_scope(), store=MemoryStore(), clock=clock)
    with_flat = Budget(
        bench_scope(),
        RateTable({MODEL: flat}, use_builtins=False),
        store=MemoryStore(),
        clock=clock,
    )

    def budget_catalogue(k: int) -> None:
        for _ in range(k):
            with_catalogue.commit(with_catalogue.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)

    def budget_flat(k: int) -> None:
        for _ in range(k):
            with_flat.commit(with_flat.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)

    results = interleaved(
        {
            "previous release: cached lookup + price": before,
            "catalogue: cached resolve + quote + price": ours,
            "Budget reserve+commit, your flat rates": budget_flat,
            "Budget reserve+commit, catalogue prices": budget_catalogue,
        },
        n,
        rounds,
    )
    pricing = (
        results["catalogue: cached resolve + quote + price"]
        / results["previous release: cached lookup + price"]
    )
    whole = (
        results["Budget reserve+commit, catalogue prices"]
        / results["Budget reserve+commit, your flat rates"]
    )
    out = ratio_table(
        "Prices: a cached name, priced on the hot path (microseconds per call)",
        results,
        "previous release: cached lookup + price",
        extra_baselines=["Budget reserve+commit, your flat rates"],
    )
    out.notes += [
        f"{n:,} calls per round, {rounds} rounds, median; model {MODEL}, {IN_TOKENS} input "
        f"tokens, {MAX_OUT} max output, {OUT_TOKENS} output (a reservation's worst case and "
        "a commit's cost per call).",
        f"Pricing alone: {pricing:.2f}x the previous release (a cached quote, in force until "
        "the row's next price change, replaces a cached rates object). Whole reserve+commit: "
        f"{whole:.2f}x the same Budget with flat rates.",
        f"Target: {HOT_TARGET:.2f}x or less for the whole call "
        f"({'met' if whole <= HOT_TARGET else 'NOT met'}).",
    ]
    return out


def _never_seen(rounds: int) -> Table:
    catalogue = Catalogue.snapshot_file()
    table = RateTable(catalogue=catalogue, on_unknown="fallback")
    for name in NAMES + UNKNOWN:  # warm the rows and ceilings; the cache is emptied below
        table.resolve(name)
    cases: dict[str, Any] = {}

    def ours(names: list[str]) -> Any:
        def run(k: int) -> None:
            for i in range(k):
                table._cache.clear()
                table.resolve(names[i % len(names)])

        return run

    cases["agent-budget, known names"] = ours(NAMES)
    cases["agent-budget, unknown names (fallback)"] = ours(UNKNOWN)
    try:
        from genai_prices.data_snapshot import get_snapshot

        snapshot = get_snapshot()

        def genai(k: int) -> None:
            for i in range(k):
                snapshot._lookup_cache.clear()
                snapshot._provider_cache.clear()
                snapshot._provider_misses.clear()
                try:
                    snapshot.find_provider_model(NAMES[i % len(NAMES)], None, None, None)
                except LookupError:
                    pass

        cases["genai-prices find_provider_model"] = genai
    except ImportError:
        pass
    n = len(NAMES) * 20
    results = interleaved(cases, n, rounds)
    baseline = (
        "genai-prices find_provider_model" if len(cases) == 3 else "agent-budget, known names"
    )
    known = results["agent-budget, known names"]
    out = ratio_table(
        "Prices: resolving a never-seen name against the whole catalogue (microseconds per name)",
        results,
        baseline,
    )
    out.notes += [
        f"{len(NAMES)} real spellings (snapshots, router prefixes, Bedrock, Vertex, Azure, "
        f"fine-tunes), {len(catalogue):,} catalogue models; each resolve starts from an empty "
        "cache. genai-prices is timed with its caches emptied too (it finds no model for "
        "many of these spellings, which is cheaper than finding one).",
        "Unknown names end at the fallback: the highest rates of the family or provider, "
        "computed once per family and cached.",
        f"Target: known names under {NAME_TARGET_US:.0f} us "
        f"({'met' if known < NAME_TARGET_US else 'NOT met'}: {known:.1f} us).",
    ]
    return out


def _load(rounds: int) -> Table:
    text = resources.files("agent_budget").joinpath("data/prices.json").read_text("utf-8")
    samples: dict[str, list[float]] = {"json.loads of the file (floor)": [], "Catalogue load": []}
    for _ in range(rounds):
        started = time.perf_counter()
        json.loads(text)
        samples["json.loads of the file (floor)"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        Catalogue.from_text(text, origin="snapshot")
        samples["Catalogue load"].append((time.perf_counter() - started) * 1000)
    results = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
    code = "import time; t = time.perf_counter(); import genai_prices.data; print((time.perf_counter() - t) * 1000)"
    genai = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if genai.returncode == 0:
        results["import genai_prices.data (fresh process)"] = float(genai.stdout.strip())
    lazy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import agent_budget, agent_budget.catalogue as c; print(c._default is None)",
        ],
        capture_output=True,
        text=True,
    )
    loaded = results["Catalogue load"]
    out = ratio_table(
        "Prices: loading the catalogue (milliseconds)",
        results,
        "json.loads of the file (floor)",
        unit="ms",
    )
    out.notes += [
        f"{len(text) / 1024:.0f} KiB of JSON; median of {rounds} loads. The load parses it "
        "and indexes every match rule; each model's prices are built on its first use.",
        f"Lazy: importing agent_budget loads no prices ({lazy.stdout.strip() == 'True'}).",
        f"Target: under {LOAD_TARGET_MS:.0f} ms "
        f"({'met' if loaded < LOAD_TARGET_MS else 'NOT met'}: {loaded:.1f} ms).",
    ]
    return out


def run(quick: bool = False) -> list[Table]:
    """The three tables: hot path, never-seen names, loading."""
    n, rounds = (200, 2) if quick else (20_000, 5)
    return [_hot_path(n, rounds), _never_seen(2 if quick else 5), _load(3 if quick else 9)]


if __name__ == "__main__":
    for t in run(quick="--quick" in sys.argv):
        print(t.text())
