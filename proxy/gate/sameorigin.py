"""The one rule certgate applies to every state-changing browser request (CSRF), pure code.

Used by the login page, the JSON login API, logout and the trusted-session API, so the
same request gets the same answer everywhere:

1. ``Sec-Fetch-Site`` decides when the browser sent it (Chromium 76+, Firefox 90+,
   Safari 16.4+): ``same-origin`` and ``none`` (typed, bookmarked) pass; ``same-site``,
   ``cross-site`` and any other value are refused. ``Origin`` is not consulted then:
   Chromium posts a form of a page that set ``Referrer-Policy: no-referrer`` with
   ``Origin: null`` *and* ``Sec-Fetch-Site: same-origin``, and that is a same-origin post.
2. Without ``Sec-Fetch-Site``, ``Origin`` (when sent) must be exactly ``https://`` + the
   request's ``Host``. ``Origin: null`` is refused here: certgate's own pages send
   ``Referrer-Policy: same-origin``, so a browser without Fetch Metadata posting from them
   sends the real origin, and ``null`` then comes from a sandboxed frame or an opaque origin.
3. Requests with neither header (curl, scripts, very old browsers) pass this check; they
   still need what the endpoint needs (the login form's token bound to a ``SameSite=Strict``
   cookie, the ``SameSite=Strict`` session cookie, a JSON content type).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from proxy.http.messages import RequestHead

#: ``Sec-Fetch-Site`` values that are not cross-site.
SAME_ORIGIN_SITES = (b"same-origin", b"none")
#: The ``Referrer-Policy`` certgate's own pages send (see rule 2).
REFERRER_POLICY = b"same-origin"


def cross_site(head: "RequestHead", scheme: str = "https") -> str | None:
    """Why the request looks cross-site (one line, client text quoted and cut), or None.

    Checks only the two headers above; does not check cookies, tokens or the method.
    """
    site = head.get(b"sec-fetch-site")
    if site is not None:
        if site.strip().lower() in SAME_ORIGIN_SITES:
            return None
        return f"Sec-Fetch-Site is {site.decode('latin-1')[:40]!r}"
    origin = head.get(b"origin")
    if origin is None:
        return None
    host = (head.get(b"host") or b"").decode("latin-1").strip().lower()
    want = f"{scheme}://{host}"
    if not host or origin.decode("latin-1").strip().lower() != want:
        return f"Origin {origin.decode('latin-1')[:80]!r} is not {want[:90]!r}"
    return None
