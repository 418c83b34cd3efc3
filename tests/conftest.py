"""Shared pytest fixtures for certgate's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser suite (minutes of real Chromium) runs last; everything else keeps its order."""
    browser = [i for i in items if "/tests/browser/" in str(i.path)]
    if browser:
        rest = [i for i in items if "/tests/browser/" not in str(i.path)]
        items[:] = rest + browser


@pytest.fixture
def pki(tmp_path: Path):
    """A fresh test PKI (CA, server certificate, clients alice and bob) in tmp_path/pki."""
    from tests.harness.pki import Pki

    return Pki(tmp_path / "pki")
