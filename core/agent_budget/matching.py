"""Model-name match clauses (genai-prices' ``equals`` / ``starts_with`` / ``ends_with`` /
``contains`` / ``regex`` / ``or`` / ``and``), indexed so one lookup does not test them all.

A catalogue has thousands of clauses; testing each against a never-seen name would cost a
millisecond. :class:`Matcher` files each clause under a key a name can be checked against in
a few dictionary lookups (the whole name, its prefixes and suffixes of the lengths clauses
use, its 4-character windows for ``contains``, a regex's literal prefix), and only clauses
filed under a hit are tested. Names are matched lower-cased, as genai-prices does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["Clause", "Matcher", "clause_matches", "describe_clause"]

Clause = Sequence[Any]  # ["eq", "gpt-4o"], ["or", [...]], ...
_GRAM = 7  # contains-patterns are filed under their first 7 characters
_REGEX_META = set(".^$*+?{}[]()|\\")


def clause_matches(clause: Clause, name: str) -> Clause | None:
    """The first leaf clause of ``clause`` that matches lower-case ``name``, else None."""
    kind, value = clause[0], clause[1]
    if kind == "or":
        for sub in value:
            found = clause_matches(sub, name)
            if found is not None:
                return found
        return None
    if kind == "and":
        return clause if all(clause_matches(sub, name) is not None for sub in value) else None
    if kind == "eq":
        hit = name == value.lower()
    elif kind == "sw":
        hit = name.startswith(value.lower())
    elif kind == "ew":
        hit = name.endswith(value.lower())
    elif kind == "in":
        hit = value.lower() in name
    elif kind == "re":
        hit = re.search(value, name) is not None
    else:
        raise ValueError(f"unknown match clause {kind!r}")
    return clause if hit else None


def describe_clause(clause: Clause) -> str:
    """A clause in words, for ``agent-budget rates MODEL``."""
    kind, value = clause[0], clause[1]
    words = {
        "eq": "equals",
        "sw": "starts with",
        "ew": "ends with",
        "in": "contains",
        "re": "matches regex",
    }
    if kind in ("or", "and"):
        return f" {kind} ".join(describe_clause(c) for c in value)
    return f"{words[kind]} {value!r}"


def _regex_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with ("" when there is none)."""
    if not pattern.startswith("^") or "|" in pattern or pattern.startswith("^(?"):
        return ""
    out: list[str] = []
    i = 1
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 < len(pattern) and not pattern[i + 1].isalnum():
                literal, step = pattern[i + 1], 2
            else:
                break  # \d, \w, ...
        elif char in _REGEX_META:
            break
        else:
            literal, step = char, 1
        following = pattern[i + step] if i + step < len(pattern) else ""
        if following in ("?", "*", "{"):
            break  # the quantifier makes this character optional
        out.append(literal)
        i += step
    return "".join(out)


class Matcher:
    """Which of many ``(clause, target)`` entries match a name, in a few dictionary lookups.

    ``match(name)`` returns the targets (ints) whose clause matches lower-case ``name``.
    """

    __slots__ = (
        "_eq",
        "_ew",
        "_ew_lens",
        "_in",
        "_in_short",
        "_re",
        "_re_lens",
        "_slow",
        "_sw",
        "_sw_lens",
    )

    def __init__(self, entries: Iterable[tuple[Clause, int]] = ()) -> None:
        self._eq: dict[str, list[int]] = {}
        self._sw: dict[str, list[int]] = {}
        self._ew: dict[str, list[int]] = {}
        self._in: dict[str, dict[int, dict[str, list[int]]]] = {}
        self._in_short: list[tuple[str, int]] = []
        self._re: dict[str, list[tuple[re.Pattern[str], int]]] = {}
        self._slow: list[tuple[Callable[[str], bool], int]] = []
        for clause, target in entries:
            self._add(clause, target)
        self._sw_lens = sorted({len(k) for k in self._sw})
        self._ew_lens = sorted({len(k) for k in self._ew})
        self._re_lens = sorted({len(k) for k in self._re})

    def _add(self, clause: Clause, target: int) -> None:
        kind, value = clause[0], clause[1]
        if kind == "or":
            for sub in value:
                self._add(sub, target)
        elif kind == "and":
            self._slow.append((_predicate(clause), target))
        elif kind == "eq":
            self._eq.setdefault(value.lower(), []).append(target)
        elif kind == "sw":
            self._sw.setdefault(value.lower(), []).append(target)
        elif kind == "ew":
            self._ew.setdefault(value.lower(), []).append(target)
        elif kind == "in":
            text = value.lower()
            if len(text) >= _GRAM:
                bucket = self._in.setdefault(text[:_GRAM], {})
                bucket.setdefault(len(text), {}).setdefault(text, []).append(target)
            else:
                self._in_short.append((text, target))
        elif kind == "re":
            compiled = re.compile(value)
            self._re.setdefault(_regex_prefix(value), []).append((compiled, target))
        else:
            raise ValueError(f"unknown match clause {kind!r}")

    def exact(self, name: str) -> list[int]:
        """Targets with an ``equals`` clause for ``name`` (no rules)."""
        return self._eq.get(name, [])

    def match(self, name: str) -> set[int]:
        """Every target whose clause matches lower-case ``name``."""
        out: set[int] = set(self._eq.get(name, ()))
        size = len(name)
        sw, ew = self._sw, self._ew
        for n in self._sw_lens:
            if n > size:
                break
            hit = sw.get(name[:n])
            if hit:
                out.update(hit)
        for n in self._ew_lens:
            if n > size:
                break
            hit = ew.get(name[size - n :])
            if hit:
                out.update(hit)
        grams = self._in
        if grams:
            for i in range(size - _GRAM + 1):
                bucket = grams.get(name[i : i + _GRAM])
                if bucket:
                    for length, texts in bucket.items():
                        hit = texts.get(name[i : i + length])
                        if hit:
                            out.update(hit)
        for text, target in self._in_short:
            if text in name:
                out.add(target)
        regexes = self._re
        for n in self._re_lens:
            if n > size:
                break
            for compiled, target in regexes.get(name[:n], ()):
                if target not in out and compiled.search(name):
                    out.add(target)
        for test, target in self._slow:
            if target not in out and test(name):
                out.add(target)
        return out


def _predicate(clause: Clause) -> Callable[[str], bool]:
    """``clause`` as a function of a lower-case name, regexes compiled once."""
    kind, value = clause[0], clause[1]
    if kind in ("or", "and"):
        parts = [_predicate(sub) for sub in value]
        if kind == "or":
            return lambda name: any(part(name) for part in parts)
        return lambda name: all(part(name) for part in parts)
    if kind == "re":
        search = re.compile(value).search
        return lambda name: search(name) is not None
    text = value.lower()
    if kind == "eq":
        return lambda name: name == text
    if kind == "sw":
        return lambda name: name.startswith(text)
    if kind == "ew":
        return lambda name: name.endswith(text)
    if kind == "in":
        return lambda name: text in name
    raise ValueError(f"unknown match clause {kind!r}")
