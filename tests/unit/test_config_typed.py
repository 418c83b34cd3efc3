"""proxy.config sections are typed values: every key a field of the declared type, no fallback."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from proxy.config import SCHEMA, Config, parse_config
from proxy.config.sections import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
#: fields derived while parsing, not keys of their own
DERIVED = {"sessions": {"account_limits"}}


def _conforms(value: Any, hint: Any) -> bool:
    """Does ``value`` have the declared type ``hint`` (the forms the sections use)?"""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and all(map(_conforms, value, args))
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _reference(tmp_path: Path) -> Config:
    (tmp_path / "server.pem").write_text("x")
    (tmp_path / "server.key").write_text("x")
    (tmp_path / "trust.d").mkdir()
    return parse_config((ROOT / "conf" / "certgate.conf").read_text(), tmp_path / "certgate.conf")


def test_every_schema_key_is_a_field_and_every_field_a_key() -> None:
    """The schema is read from the section classes: the two cannot drift apart."""
    for name, cls in SECTIONS.items():
        fields = [f.name for f in dataclasses.fields(cls)]
        assert [f for f in fields if f not in DERIVED.get(name, set())] == list(SCHEMA[name]), name


def test_parsed_values_have_their_declared_types(tmp_path: Path) -> None:
    """The reference config parses into values of exactly the annotated types (what mypy trusts)."""
    cfg = _reference(tmp_path)
    for name, cls in SECTIONS.items():
        if name == "upstream":  # it becomes the default Route
            continue
        section = getattr(cfg, name)
        assert type(section) is cls
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = getattr(section, f.name)
            assert _conforms(value, hints[f.name]), f"[{name}] {f.name} = {value!r} is not {hints[f.name]}"


def test_a_misspelt_key_is_an_error_not_a_default(tmp_path: Path) -> None:
    """No ``__getattr__`` fallback: reading a key that does not exist raises; sections are frozen."""
    cfg = _reference(tmp_path)
    with pytest.raises(AttributeError):
        cfg.sessions.store_dealine  # noqa: B018 (the misspelling is the point)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sessions.grace = 1.0
