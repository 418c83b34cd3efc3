"""The request target made canonical once: the one path certgate decides on and forwards.

Pure code (no Twisted, no I/O), so it can be tested and fuzzed alone. The rule, with
examples, is in docs/forwarding.md ("The request target"). In short, for an origin-form
target ``PATH[?QUERY]``:

1. ``%XX`` escapes must be two hex digits. Escapes of unreserved characters
   (``A-Z a-z 0-9 - . _ ~``) are decoded; every other escape is kept, with upper-case hex.
   An escaped ``/`` or ``\\``, NUL or another control character is refused.
2. A raw ``\\``, ``;`` (path parameter), ``#`` (fragment), space or control character is
   refused. Other characters outside RFC 3986 ``pchar`` (``" < > [ ] ^ ` { | }``, bytes
   >= 0x80) are percent-encoded. The decoded path must be UTF-8.
3. Empty segments (``//``) are removed, then ``.`` and ``..`` segments (RFC 3986 5.2.4).
   A ``..`` above the root is refused. A trailing ``/`` (or a final ``.`` / ``..``) stays
   a trailing ``/``.
4. The query is kept byte for byte (it must not hold ``#`` or control characters).

``OPTIONS *`` (asterisk-form) is the one other form allowed; it is returned unchanged.
The result only holds ASCII, is idempotent (``canonical_target(c) == c`` for every result
``c``), and a target that is already canonical is returned as the same object after a few
C-level scans.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

__all__ = ["TargetError", "canonical_target", "canonical_path", "split_target", "same_login_path", "loose_path"]


class TargetError(ValueError):
    """A request target certgate cannot make canonical safely.

    ``reason`` is a fixed phrase chosen here (it never contains client bytes).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_ALPHA = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UNRESERVED = frozenset(_ALPHA + b"0123456789-._~")
#: Bytes that stand for themselves in a canonical path (pchar and "/", minus ";" and "%").
_PLAIN = _ALPHA + b"0123456789-._~!$&'()*+,=:@/"
_PLAIN_SET = frozenset(_PLAIN)
_HEX = frozenset(b"0123456789ABCDEFabcdef")
#: Query bytes: printable ASCII except "#".
_QUERY_OK = bytes(b for b in range(0x21, 0x7F) if b != 0x23)
#: One entry per byte: itself when plain, else its upper-case escape (refused bytes are caught first).
_ENCODE = [bytes([b]) if b in _PLAIN_SET else b"%%%02X" % b for b in range(256)]


def _raw_refusal(b: int) -> str | None:
    if b == 0x3B:
        return "';' path parameters are not accepted"
    if b == 0x5C:
        return "'\\' in the path"
    if b == 0x23:
        return "'#' (a fragment) in the request target"
    if b <= 0x20 or b == 0x7F:
        return "space or control character in the path"
    return None


def _escape_refusal(v: int) -> str | None:
    if v == 0x2F:
        return "encoded '/' (%2F) in the path"
    if v == 0x5C:
        return "encoded '\\' (%5C) in the path"
    if v == 0:
        return "encoded NUL (%00) in the path"
    if v < 0x20 or v == 0x7F:
        return "encoded control character in the path"
    return None


def _plain_chunk(chunk: bytes, out: list[bytes]) -> bool:
    """Append ``chunk`` (no ``%`` in it) encoded; True when it held a byte >= 0x80."""
    odd = chunk.translate(None, _PLAIN)
    if not odd:
        out.append(chunk)
        return False
    for b in odd:
        why = _raw_refusal(b)
        if why is not None:
            raise TargetError(why)
    out.append(b"".join(map(_ENCODE.__getitem__, chunk)))
    return max(odd) >= 0x80


def _normalise(path: bytes) -> bytes:
    """Steps 1 and 2 of the rule: escapes decoded or kept in upper case, odd bytes encoded."""
    first, *rest = path.split(b"%")
    out: list[bytes] = []
    high = _plain_chunk(first, out)
    for part in rest:
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            raise TargetError("invalid percent-escape")
        v = int(part[:2], 16)
        if v in _UNRESERVED:
            out.append(_ENCODE[v])
        else:
            why = _escape_refusal(v)
            if why is not None:
                raise TargetError(why)
            out.append(b"%%%02X" % v)
            high = high or v >= 0x80
        if len(part) > 2:
            high = _plain_chunk(part[2:], out) or high
    result = b"".join(out)
    if high:
        try:
            unquote_to_bytes(result).decode("utf-8")
        except UnicodeDecodeError:
            raise TargetError("the decoded path is not UTF-8") from None
    return result


def _remove_dots(path: bytes) -> bytes:
    """Step 3: drop empty and ``.`` segments, apply ``..``; refuse climbing above the root."""
    keep: list[bytes] = []
    trailing = False
    for seg in path.split(b"/")[1:]:
        trailing = True
        if seg == b"" or seg == b".":
            continue
        if seg == b"..":
            if not keep:
                raise TargetError("'..' climbs above the root")
            keep.pop()
            continue
        trailing = False
        keep.append(seg)
    if not keep:
        return b"/"
    return b"/" + b"/".join(keep) + (b"/" if trailing else b"")


def _is_canonical_fast(path: bytes) -> bool:
    # "/." also catches "/.well-known" (the full rule then keeps it): two scans instead of four
    return not path.translate(None, _PLAIN) and b"//" not in path and b"/." not in path


def canonical_path(path: bytes) -> bytes:
    """The canonical form of an absolute path (no query); TargetError when it has none.

    Guarantees: the result starts with ``/``, holds only ASCII ``pchar``, ``/`` and upper-case
    ``%XX`` of reserved or non-ASCII bytes, has no empty, ``.`` or ``..`` segment (a trailing
    ``/`` may remain), and is its own canonical form. Does not check any length limit.
    """
    if path[:1] != b"/":
        raise TargetError("the path does not start with '/'")
    if _is_canonical_fast(path):
        return path
    return _remove_dots(_normalise(path))


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """``(path, query)`` where ``query`` keeps its ``?`` (empty when there is none)."""
    q = target.find(b"?")
    if q < 0:
        return target, b""
    return target[:q], target[q:]


def canonical_target(target: bytes, method: bytes = b"GET") -> bytes:
    """The canonical request target (canonical path + the original query); TargetError if none.

    Accepts origin-form, and ``*`` for OPTIONS only. The query is checked (printable ASCII,
    no ``#``) but never changed. Returns ``target`` itself when it is already canonical.
    """
    if target[:1] != b"/":
        if target == b"*" and method == b"OPTIONS":
            return target
        raise TargetError("the request target is not an absolute path (origin-form)")
    q = target.find(b"?")
    if q < 0:
        if _is_canonical_fast(target):
            return target
        path, query = target, b""
    else:
        path, query = target[:q], target[q:]
        if query.translate(None, _QUERY_OK):
            raise TargetError("'#', space or control character in the query")
        if _is_canonical_fast(path):
            return target
    return _remove_dots(_normalise(path)) + query


def same_login_path(path: str, login_path: str) -> bool:
    """True when canonical ``path`` is ``login_path`` ignoring ASCII letter case and one trailing ``/``.

    Both must be canonical. A front door claims every such spelling (JAX-RS, under JOC, ignores
    a trailing slash; some servers fold case) and refuses the ones that are not exactly its
    login path, so no spelling of a login reaches the upstream unchecked.
    """
    if abs(len(path) - len(login_path)) > 1:
        return False
    return loose_path(path) == loose_path(login_path)


def loose_path(path: str) -> str:
    """``path`` in lower case without one trailing ``/`` (``/`` stays ``/``)."""
    p = path.lower()
    return p[:-1] if len(p) > 1 and p.endswith("/") else p
