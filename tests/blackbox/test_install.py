"""A plain ``pip install .`` into a fresh virtualenv gives a ``certgate run`` that serves.

No editable mode, no twistd plugin cache, none of the test venv's packages: the copy of the
checkout is installed with its dependencies from the package index (pip's cache makes it quick).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.client import request
from tests.harness.config import write_config
from tests.harness.gateway import Gateway
from tests.harness.pki import Pki
from tests.harness.upstream import RecordingUpstream

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ("proxy", "trust", "twisted", "setup.cfg", "pyproject.toml", "README.md", "conf")


def _copy_checkout(dest: Path) -> Path:
    dest.mkdir()
    for name in SOURCE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"))
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.parametrize("mode", [(), ("-e",)], ids=["plain", "editable"])
def test_pip_install_into_a_fresh_venv_then_certgate_run_serves(tmp_path: Path, mode: tuple[str, ...]) -> None:
    """``pip install .`` and ``pip install -e .`` (setuptools' default editable mode, which twistd's
    plugin scan cannot see): ``certgate run`` serves a request over mTLS either way."""
    src = _copy_checkout(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    out = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *mode, str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # the installed package, not the checkout, answers
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import proxy; print(proxy.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path).stdout
    assert str(venv if not mode else src) in where, where
    version = subprocess.run([str(venv / "bin" / "certgate"), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("certgate "), version

    upstream = RecordingUpstream()
    try:
        pki = Pki(tmp_path / "pki")
        cfg = write_config(tmp_path, pki, upstream=upstream.url)
        with Gateway(cfg, exe=str(venv / "bin" / "certgate"), env={"PYTHONPATH": ""}) as gw:
            status, _, body = request(gw.port, "GET", "/hello", cert=pki.client("alice"), ca=pki.ca_pem)
            assert status == 200, body
            assert upstream.requests and upstream.requests[-1]["path"] == "/hello"
            assert dict(upstream.requests[-1]["headers"]).get("X-Remote-User") == "alice"  # type: ignore[arg-type]
    finally:
        upstream.close()
