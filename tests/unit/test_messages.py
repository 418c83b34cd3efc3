"""proxy.http.messages: the request head helpers the gate relies on."""

from proxy.http.messages import RequestHead


def _head(*cookies: bytes) -> RequestHead:
    return RequestHead(b"GET", b"/a%20b?x=1", b"1.1", [(b"Host", b"h")] + [(b"Cookie", c) for c in cookies])


def test_cookie_found_once() -> None:
    """A cookie present once is returned; others are ignored."""
    assert _head(b"a=1; sid=xyz; b=2").cookie("sid") == "xyz"


def test_repeated_cookie_is_absent_in_one_header_and_across_headers() -> None:
    """A planted duplicate (same header or another Cookie header) makes the cookie absent."""
    assert _head(b"sid=one; sid=two").cookie("sid") is None
    assert _head(b"sid=one", b"sid=two").cookie("sid") is None
    assert _head(b"other=1").cookie("sid") is None


def test_path_and_query() -> None:
    """path is the (canonical) target's path as forwarded, not decoded further; query is kept raw."""
    h = _head()
    assert h.path == "/a%20b" and h.query == "x=1"
    assert h.get(b"HOST") == b"h" and h.get_all(b"cookie") == []
