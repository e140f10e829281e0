"""A report (see :mod:`agent_budget.report`) as text tables or CSV, section by section."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .money import nanos_to_decimal
from .report import OTHER, iso

__all__ = ["SECTIONS", "render_csv", "render_text"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class _Section:
    title: str
    source: Callable[[Row], Sequence[Row]]
    columns: tuple[tuple[str, str], ...]  # (header, field)


_USAGE = (
    ("calls", "calls"),
    ("estimated", "estimated_calls"),
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache read", "cache_read_tokens"),
    ("cache write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("tokens", "tokens"),
    ("cost USD", "cost_usd"),
)

SECTIONS: dict[str, _Section] = {
    "scope": _Section(
        "spend per scope (top spenders first)",
        lambda r: r["by_scope"],
        (("scope", "scope"), ("parent", "parent"), *_USAGE),
    ),
    "model": _Section("spend per model", lambda r: r["by_model"], (("model", "model"), *_USAGE)),
    "session": _Section(
        "top sessions",
        lambda r: r["by_session"],
        (("session", "session_id"), *_USAGE),
    ),
    "time": _Section(
        "spend over time per scope",
        lambda r: r["series_by_scope"],
        (("bucket (UTC)", "bucket_iso"), ("scope", "scope"), *_USAGE),
    ),
    "time-model": _Section(
        "spend over time per model",
        lambda r: r["series_by_model"],
        (("bucket (UTC)", "bucket_iso"), ("model", "model"), *_USAGE),
    ),
    "limits": _Section(
        "limits: what is used, held and left",
        lambda r: r["limits"],
        (
            ("scope", "scope"),
            ("limit", "limit"),
            ("window", "window"),
            ("unit", "unit"),
            ("limit value", "limit_value"),
            ("used", "used"),
            ("reserved", "reserved"),
            ("remaining", "remaining"),
            ("over by", "over_by"),
            ("used %", "pct_used"),
        ),
    ),
    "refusals": _Section(
        "recent refusals",
        lambda r: r["refusals"]["recent"],
        (
            ("time (UTC)", "timestamp"),
            ("refused by", "scope"),
            ("call on", "caller"),
            ("limit", "limit_type"),
            ("unit", "unit"),
            ("used", "used"),
            ("limit value", "limit"),
            ("model", "model"),
            ("session", "session_id"),
        ),
    ),
    "alerts": _Section(
        "recent alerts",
        lambda r: r["alerts"]["recent"],
        (
            ("time (UTC)", "timestamp"),
            ("scope", "scope"),
            ("level", "level"),
            ("limit", "limit_type"),
            ("message", "message"),
        ),
    ),
}
"""What ``--by`` can show, as a table or CSV."""


def _cell(field: str, value: Any) -> str:
    if value is None:
        return ""
    if field == "timestamp":
        return iso(float(value))
    if field == "pct_used":
        return f"{float(value) * 100:.1f}%"
    if field == "unit":
        return "USD" if value == "usd" else str(value)
    if field == "message" and len(str(value)) > 100:
        return str(value)[:97] + "..."  # the whole text is in --json and --csv
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _section_lines(report: Row, name: str, limit: int | None) -> list[str]:
    section = SECTIONS[name]
    rows = list(section.source(report))
    shown = rows if limit is None else rows[:limit]
    out = [section.title]
    if not rows:
        return [*out, "  (none)"]
    headers = [h for h, _ in section.columns]
    cells = [[_cell(f, row.get(f)) for _, f in section.columns] for row in shown]
    out += _table(headers, cells)
    if len(shown) < len(rows):
        out.append(f"  ... {len(rows) - len(shown)} more (--json or --csv has them all)")
    return out


def _series_grid(report: Row, top: int) -> list[str]:
    """Spend per bucket, one column per top scope (the rest as "(other)")."""
    rows = report["series_by_scope"]
    names = [r["scope"] for r in report["by_scope"][:top]]
    if any(r["scope"] == OTHER for r in rows):
        names.append(OTHER)
    per: dict[int, dict[str, str]] = {}
    totals: dict[int, int] = {}
    for row in rows:
        per.setdefault(row["bucket"], {})[row["scope"]] = row["cost_usd"]
        totals[row["bucket"]] = totals.get(row["bucket"], 0) + row["cost_nanos"]
    unit = report["period"]["bucket"]
    headers = [f"{unit} (UTC)", "total USD", *names]
    cells = []
    buckets = report["period"]["buckets"]
    if len(buckets) > 48:
        buckets = sorted(per)  # a long period: only the buckets with calls
    for start in buckets:
        found = per.get(start, {})
        total = totals.get(start, 0)
        cells.append(
            [
                iso(start),
                str(nanos_to_decimal(total)),
                *(found.get(n, "0") for n in names),
            ]
        )
    return [f"spend per {unit} (USD)", *_table(headers, cells)]


def render_text(report: Row, *, section: str | None = None, top: int = 10) -> str:
    """The whole report as text tables, or one ``section`` of :data:`SECTIONS`."""
    if section is not None:
        return "\n".join(_section_lines(report, section, None)) + "\n"
    period = report["period"]
    totals = report["totals"]
    if not report["scope_count"] and not totals["calls"] and not report["refusals"]["count"]:
        return f"no scopes and no calls in {report['store']}\n"
    lines = [
        f"agent-budget report: {report['store']}",
        f"period {period['since_iso']} .. {period['until_iso']} ({period['bucket']}ly buckets,"
        " UTC)",
        "",
        (
            f"totals: {totals['calls']:,} calls ({totals['estimated_calls']:,} estimated), "
            f"{totals['tokens']:,} tokens (input {totals['input_tokens']:,}, output "
            f"{totals['output_tokens']:,}, cache read {totals['cache_read_tokens']:,}, cache "
            f"write {totals['cache_write_tokens']:,}, reasoning "
            f"{totals['reasoning_tokens']:,}), "
            f"${totals['cost_usd']}"
        ),
        (
            f"refusals: {report['refusals']['count']}, alerts: {report['alerts']['count']} "
            "(in the period)"
        ),
    ]
    for name in ("scope", "model", "session"):
        lines += ["", *_section_lines(report, name, top)]
    if report["totals"]["calls"]:
        lines += ["", *_series_grid(report, min(top, 5))]
    for name in ("refusals", "alerts", "limits"):
        lines += ["", *_section_lines(report, name, top if name != "limits" else 3 * top)]
    return "\n".join(lines) + "\n"


def render_csv(report: Row, section: str) -> str:
    """One section of :data:`SECTIONS` as CSV, every row, with a header line."""
    spec = SECTIONS[section]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([field for _, field in spec.columns])
    for row in spec.source(report):
        writer.writerow(
            [iso(float(row[f])) if f == "timestamp" else _csv(row.get(f)) for _, f in spec.columns]
        )
    return out.getvalue()


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
