"""The README's API reference matches the code.

Every backticked name in the table must exist; every call written with its parameters must
list exactly the real parameters, in order, with the same keyword-only marker and defaults,
and the same return type when one is given (``(...)`` elides a signature on purpose); every
name in ``agent_budget.__all__`` has a row, and so does every public name of the adapter
modules the section lists.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import agent_budget

README = Path(__file__).resolve().parents[1] / "README.md"
_SEGMENT = re.compile(
    r"^(?P<head>\.?[A-Za-z_][\w.]*)(?:\((?P<params>.*)\))?(?:\s*->\s*(?P<ret>.+))?$"
)


def api_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## API reference")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def table_rows(section: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("| `")]


def first_cell(row: str) -> str:
    """The row's first column (the names); the second is prose."""
    masked = re.sub(r"`[^`]*`", lambda m: "x" * len(m.group()), row)
    end = masked.index(" | ", 1)
    return row[1:end]


@dataclasses.dataclass(frozen=True)
class Segment:
    text: str
    row: int
    subject: Any  # the object the row is about (its first name), for bare member names


def segments() -> list[Segment]:
    out: list[Segment] = []
    for index, row in enumerate(table_rows(api_section())):
        found = [t.replace("\\|", "|") for t in re.findall(r"`([^`]+)`", first_cell(row))]
        first = found[0].split("(")[0]
        subject = resolve(first.split(".")[0] if "." in first else first, None)
        out.extend(Segment(text, index, subject) for text in found)
    return out


def resolve(head: str, subject: Any) -> Any:
    """The object a dotted README name refers to: from ``agent_budget``, a module path, or
    (for a bare or ``.name``) the row's subject."""
    head = head.strip()
    if head.startswith("."):
        return getattr(subject, head[1:])
    first, _, rest = head.partition(".")
    if not rest and first not in agent_budget.__all__ and hasattr(subject, first):
        return getattr(subject, first)
    if first in agent_budget.__all__:
        obj = getattr(agent_budget, first)
        for part in rest.split(".") if rest else []:
            obj = getattr(obj, part)
        return obj
    parts = head.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    if subject is not None and hasattr(subject, head):
        return getattr(subject, head)
    raise LookupError(head)


def documented_params(params: str) -> list[tuple[str, str, str | None]]:
    """(name, kind, default source) of each parameter written in the README."""
    args = ast.parse(f"def _({params}): pass").body[0].args  # type: ignore[attr-defined]
    out: list[tuple[str, str, str | None]] = []
    plain = args.posonlyargs + args.args
    defaults = [None] * (len(plain) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(plain, defaults, strict=True):
        out.append((arg.arg, "positional", ast.unparse(default) if default else None))
    if args.vararg:
        out.append((args.vararg.arg, "*args", None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append((arg.arg, "keyword", ast.unparse(default) if default else None))
    if args.kwarg:
        out.append((args.kwarg.arg, "**kwargs", None))
    return out


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.VAR_POSITIONAL: "*args",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_KEYWORD: "**kwargs",
}


def real_params(obj: Any) -> list[tuple[str, str, Any]]:
    params = list(inspect.signature(obj).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    out = []
    for p in params:
        default = p.default
        if default is not inspect.Parameter.empty and inspect.isclass(obj):
            default = _dataclass_default(obj, p.name, default)
        out.append((p.name, _KINDS[p.kind], default))
    return out


@dataclasses.dataclass(frozen=True)
class Factory:
    """A dataclass field's ``default_factory``: the README writes ``time.time()`` or ``{}``."""

    make: Any

    def matches(self, source: str) -> bool:
        call = ast.parse(source, mode="eval").body
        if isinstance(call, ast.Call) and not call.args and not call.keywords:
            return bool(_evaluate(ast.unparse(call.func)) == self.make)
        return bool(_evaluate(source) == self.make())


def _dataclass_default(cls: type, name: str, default: Any) -> Any:
    if dataclasses.is_dataclass(cls):
        for field in dataclasses.fields(cls):
            if field.name == name and field.default_factory is not dataclasses.MISSING:
                return Factory(field.default_factory)
    return default


def _evaluate(source: str) -> Any:
    namespace = {**vars(agent_budget), "time": time, "Decimal": Decimal}
    return eval(source, namespace)


def _same_default(source: str, default: Any) -> bool:
    if isinstance(default, Factory):
        return default.matches(source)
    return bool(_evaluate(source) == default)


def mismatches(segment: Segment) -> list[str]:
    match = _SEGMENT.match(segment.text.strip())
    if match is None:
        return []  # prose in backticks (a URL, a literal), not an API name
    try:
        obj = resolve(match["head"], segment.subject)
    except (LookupError, AttributeError):
        return [f"`{segment.text}`: {match['head']} does not exist"]
    problems: list[str] = []
    params = match["params"]
    if params is not None and params.strip() != "...":
        try:
            written = documented_params(params)
        except SyntaxError:
            return [f"`{segment.text}`: write every parameter, or (...) to elide them all"]
        real = real_params(obj)
        want = [(n, k) for n, k, _ in real]
        if [(n, k) for n, k, _ in written] != want:
            signature = inspect.signature(obj)
            problems.append(f"`{segment.text}`: the real signature is {signature}")
        else:
            for (name, _, source), (_, _, default) in zip(written, real, strict=True):
                has_default = default is not inspect.Parameter.empty
                if (source is not None) != has_default or (
                    source is not None and not _same_default(source, default)
                ):
                    problems.append(f"`{segment.text}`: {name}'s default is {default!r}")
    if match["ret"]:
        annotation = inspect.signature(obj).return_annotation
        outer = str(annotation).strip("'\"").split("[")[0].strip()
        if match["ret"].split("[")[0].strip() != outer:
            problems.append(f"`{segment.text}`: returns {annotation}")
    return problems


def test_every_documented_signature_is_the_real_one():
    found = segments()
    assert len(found) > 40
    problems = [p for s in found for p in mismatches(s)]
    assert not problems, "\n".join(problems)


def test_every_public_name_has_a_row():
    heads = {
        (_SEGMENT.match(s.text.strip()) or re.match(r"(.*)", s.text))[1].split(".")[0]
        for s in segments()
    }
    missing = sorted(set(agent_budget.__all__) - heads - {"__version__"})
    assert not missing, f"names in agent_budget.__all__ without a row: {missing}"


def test_adapter_names_listed_are_the_public_ones():
    """The adapters sentence after the table lists each module's whole ``__all__``."""
    section = api_section()
    listed = re.findall(r"`(agent_budget_callbacks\.\w+)` \(([^)]*)\)", section)
    assert listed, "the section names the adapter modules"
    for module_name, names in listed:
        module = importlib.import_module(module_name)
        names_written = set(re.findall(r"`(\w+)`", names))
        assert names_written == set(module.__all__), module_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Budget(scope, rates=None)", "the real signature is"),
        ("Budget.estimate(model, input_tokens, output_tokens=1) -> float", "default is 0"),
        ("Budget.estimate(model, input_tokens, output_tokens=0) -> str", "returns float"),
        ("Budget.nothing_here()", "does not exist"),
    ],
)
def test_the_checker_catches_wrong_rows(text: str, expected: str):
    problems = mismatches(Segment(text, 0, agent_budget.Budget))
    assert problems and expected in problems[0], problems
