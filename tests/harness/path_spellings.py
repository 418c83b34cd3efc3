"""Spellings of the JOC and Cockpit login paths, one list per class, for unit and black-box tests.

Each spelling is one a lenient server may treat as the login (Jetty drops ``;parameters``,
decodes escapes and resolves dot segments; JAX-RS ignores a trailing slash; some servers fold
case). certgate must either check it at its front door or refuse it; nothing may reach the
upstream unchecked. ``expected(spelling)`` says which: ``"refused"`` (400, no canonical form)
or ``"door"`` (the canonical path is the login path, up to case and a trailing slash).
"""

from __future__ import annotations

from proxy.paths import TargetError, canonical_target, same_login_path

JOC_LOGIN = "/joc/api/authentication/login"
COCKPIT_LOGIN = "/cockpit/login"


def _classes(login: str) -> dict[str, list[str]]:
    head, _, last = login.rpartition("/")  # "/joc/api/authentication", "login"
    first = login.split("/")[1]  # "joc"
    up = head.rpartition("/")[2]  # "authentication" (or "cockpit")
    return {
        "dot segments": [
            f"{head}/./{last}", f"{head}/x/../{last}", f"/x/..{login}", f"/./{login[1:]}", f"{login}/.",
            f"{head}/../{up}/{last}", f"{head}/%2e/{last}", f"{head}/%2E%2E/{up}/{last}",
            f"{head}/.%2e/{up}/{last}", f"{login}/x/..", f"/../{login[1:]}",
        ],
        "path parameters": [
            f"{login};jsessionid=1", f"{login};", f"{head};x=1/{last}", f"/{first};a{login[len(first) + 1:]}",
            f"{head}/..;/{up}/{last}", f"{head}/x/..;/{last}",
        ],
        "trailing and repeated slashes": [
            f"{login}/", f"/{login}", f"{head}//{last}", f"{login}//", f"//{first}//{login[len(first) + 2:]}",
        ],
        "percent-encoding": [
            f"{head}/%6Cogin" if last == "login" else f"{head}/%{ord(last[0]):02X}{last[1:]}",
            f"{head}/%6cogin" if last == "login" else f"{head}/%{ord(last[0]):02x}{last[1:]}",
            f"{head}/log%69n", f"/%{ord(first[0]):02X}{login[2:]}", f"{head}%2F{last}", f"{head}%2f{last}",
            f"{login}%2F", f"{login}%00", f"{head}%5C{last}", f"{head}\\{last}",
            f"{head}/%zz/../{last}",
        ],
        "case": [
            login.upper(), f"{head}/{last.upper()}", f"/{first.upper()}{login[len(first) + 1:]}",
            f"{head}/{last.capitalize()}/",
        ],
    }


JOC_SPELLINGS = _classes(JOC_LOGIN)
COCKPIT_SPELLINGS = _classes(COCKPIT_LOGIN)
CLASSES = tuple(JOC_SPELLINGS)


def canonical(spelling: str) -> str | None:
    """The canonical target of ``spelling``, None when certgate refuses it."""
    try:
        return canonical_target(spelling.encode("latin-1"), b"POST").decode("ascii")
    except TargetError:
        return None


def expected(spelling: str, login: str) -> str:
    """``"refused"`` or ``"door"``; AssertionError when the spelling would escape both."""
    c = canonical(spelling)
    if c is None:
        return "refused"
    assert same_login_path(c.split("?", 1)[0], login), f"{spelling!r} -> {c!r} is neither refused nor a login"
    return "door"
