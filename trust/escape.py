"""Escaping of text that may come from a client, for every sink (pure; shared by trust and proxy).

A certificate subject from an unknown CA, a header value, a path, an account name or a
User-Agent can carry terminal escapes, CR/LF, NUL, DEL, C1 controls or bidi overrides.
Every sink passes such text through this module:

- :func:`safe_text` — one printable line for the operational log, the Cockpit auth command's
  stderr and terminal output: every character of Unicode category Cc (C0, DEL, C1), Cf (bidi
  overrides and isolates, zero-width characters, BOM), Zl, Zp or Cs (lone surrogates) becomes
  ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``. Options: ``backslash`` doubles backslashes (so an
  escape can be told from the same characters sent literally, and the text decodes back);
  ``ascii_only`` escapes every non-ASCII character too (what ``certgate trust`` shows, so a
  look-alike letter cannot pass for an ASCII one);
- :func:`safe_lines` — a whole formatted log entry: the same, but the newlines and tabs of
  certgate's own multi-line entries (tracebacks) are kept;
- :func:`safe_html` — :func:`safe_text`, then HTML-escaped (``& < > " '``);
- :func:`safe_json` — a JSON-ready value whose strings (keys too) are :func:`safe_text`.

Printable text (letters of any script, spaces, punctuation) is left as it is by default.
Nothing here truncates; bounding sizes is the callers' job. A backslash is kept as is unless
``backslash`` is set, so in logs ``\\x1b`` may also be four characters a client sent.
"""

from __future__ import annotations

import html
import unicodedata
from typing import Any

#: Unicode categories that are escaped.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape_char(ch: str) -> str:
    n = ord(ch)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def _needs(ch: str) -> bool:
    return unicodedata.category(ch) in ESCAPED_CATEGORIES


def safe_text(value: object, *, backslash: bool = False, ascii_only: bool = False) -> str:
    """``value`` as one line of printable text (see the module docstring).

    ``bytes`` are decoded as UTF-8, undecodable bytes shown as ``\\xNN``; anything else goes
    through ``str()``. Guarantees: the result holds no character of an escaped category (so
    no CR, LF, ESC, NUL, DEL, C1 control or bidi override); with ``ascii_only`` it is
    printable ASCII.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", "surrogateescape")
    else:
        text = value if isinstance(value, str) else str(value)
    if text.isprintable() and (not backslash or "\\" not in text) and (not ascii_only or text.isascii()):
        return text
    out = []
    for ch in text:
        if ch == "\\" and backslash:
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xdc00:02x}")
        elif _needs(ch) or (ascii_only and not " " <= ch <= "~"):
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def safe_lines(text: str) -> str:
    """A formatted multi-line log entry with every escaped-category character except LF and TAB
    escaped."""
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) if ch not in "\n\t" and _needs(ch) else ch for ch in text)


def safe_html(value: object) -> str:
    """``value`` for an HTML text node or a quoted attribute value."""
    return html.escape(safe_text(value), quote=True)


def safe_json(value: Any) -> Any:
    """A copy of a JSON-ready value with every string (and key) escaped by :func:`safe_text`.

    Numbers, booleans and None are returned as they are; tuples become lists.
    """
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(k) if isinstance(k, str) else k: safe_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_json(v) for v in value]
    return value
