"""Configuration problems: what is wrong, where (section and key), and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in a configuration section.

    ``str(problem)`` is ``"[section] key: reason"`` (or ``"[section]: reason"`` when the
    problem concerns the whole section). The text is meant for operators as is.
    """

    section: str
    key: str | None
    reason: str

    def __str__(self) -> str:
        if self.key is None:
            return f"[{self.section}]: {self.reason}"
        return f"[{self.section}] {self.key}: {self.reason}"
