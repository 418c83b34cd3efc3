"""Presence defaults and limits derived from other keys (pure; used by :mod:`proxy.config`).

``[sessions] presence_interval`` follows ``grace`` unless set, and where the presence script
is injected it must leave room for a ping between proofs (see :func:`validate_presence`).
"""

from __future__ import annotations

from typing import Any, Mapping

from trust.problems import Problem

#: Upstream kinds whose pages are single-page apps: the presence script is injected by default.
SPA_KINDS = frozenset({"cockpit", "joc"})


def derive_defaults(vals: Mapping[str, dict[str, Any]]) -> None:
    """Fill the defaults that depend on other keys (in place): ``presence_interval`` from grace."""
    s = vals["sessions"]
    if s.get("presence_interval") is None:
        s["presence_interval"] = max(1.0, min(30.0, float(s["grace"]) / 4))


def presence_kinds(inject: Any) -> frozenset[str] | None:
    """The route kinds whose HTML pages get the presence script; None means every kind."""
    if inject == "auto":
        return SPA_KINDS
    return None if inject else frozenset()


def presence_on(inject: Any, kinds: Any) -> bool:
    """True when the presence script is injected on some route of these ``kinds``."""
    wanted = presence_kinds(inject)
    return wanted is None or any(k in wanted for k in kinds)


def validate_presence(vals: Mapping[str, dict[str, Any]], kinds: list[str], problems: list[Problem]) -> None:
    """Where pages ping, a proof must not go stale between pings: interval <= grace / 3.

    A ping proves the card at its connection's handshake time, at most ``presence_interval``
    old (connections close at that age), and pings come every ``presence_interval``: the proof
    is at most two intervals old, and the third leaves room for a late timer.
    """
    s = vals["sessions"]
    explicit = s.get("presence_interval") is not None
    derive_defaults(vals)
    if not presence_on(s["inject_presence_script"], kinds):
        return
    grace, interval = float(s["grace"]), float(s["presence_interval"])
    if interval * 3 <= grace:
        return
    if explicit:
        problems.append(Problem("sessions", "presence_interval", f"{interval:g} s is more than a third of grace "
                                f"({grace:g} s): the page's proof would go stale between pings"))
    else:
        problems.append(Problem("sessions", "grace", f"{grace:g} s is too short for the presence script (needs "
                                "at least 3 s; or set inject_presence_script = no)"))
