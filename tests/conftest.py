"""Shared pytest fixtures for certgate's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def pki(tmp_path: Path):
    """A fresh test PKI (CA, server certificate, clients alice and bob) in tmp_path/pki."""
    from tests.blackbox import Pki

    return Pki(tmp_path / "pki")
