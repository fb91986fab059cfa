"""Strict parsing of request bodies, as the vendors' JSON parsers (Jackson-based) treat them.

Both emulators read request JSON through :func:`parse_body`, which refuses what the real services
refuse instead of letting it reach the record store as a 500:

* not UTF-8, or not JSON (truncated, invalid) → :class:`BadJson`;
* ``NaN``, ``Infinity``, ``-Infinity`` (non-standard tokens; Jackson rejects them unless
  ``ALLOW_NON_NUMERIC_NUMBERS`` is on) and numbers that overflow a double (``1e999``);
* nesting deeper than :data:`MAX_DEPTH` (Jackson's ``StreamReadConstraints`` allow 1000 by default
  since 2.15; 500 here keeps the parse below Python's recursion limit);
* strings holding an unpaired UTF-16 surrogate (``"\\ud800"``): the vendors store UTF-8, where it
  has no encoding (an emulator choice: what each vendor does with one is not documented).

A UTF-8 byte order mark before the JSON is skipped (Jackson does so), and a repeated key keeps its
last value (Jackson's default without ``STRICT_DUPLICATE_DETECTION``).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "BadJson", "parse_body"]

MAX_DEPTH = 500


class BadJson(ValueError):
    """The body is not acceptable JSON; ``reason`` says why without quoting the body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refuse_constant(token: str) -> Any:
    raise BadJson(f"non-standard token {token!r} (NaN/Infinity are not JSON numbers)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson("a number overflows a double")
    return value


def _check(value: Any) -> None:
    """Depth and Unicode checks, iteratively (the depth may be what is wrong)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise BadJson(f"nesting depth exceeds the maximum of {MAX_DEPTH}")
        if isinstance(item, dict):
            for k, v in item.items():
                _check_text(k)
                stack.append((v, depth + 1))
        else:
            stack.extend((v, depth + 1) for v in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return
    raise BadJson("a string holds an unpaired UTF-16 surrogate")


def parse_body(raw: bytes, *, empty: Any = None) -> Any:
    """The JSON value of ``raw`` (``empty`` for an empty body); :class:`BadJson` if unacceptable."""
    if not raw.strip():
        return empty
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadJson("the body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson(f"nesting depth exceeds the maximum of {MAX_DEPTH}") from None
    except ValueError as exc:
        # JSONDecodeError's msg and position say what is wrong without quoting the document.
        msg = getattr(exc, "msg", "malformed JSON")
        pos = getattr(exc, "pos", None)
        raise BadJson(f"{msg} at character {pos}" if pos is not None else str(msg)) from None
    _check(value)
    return value
