"""How a configuration key is declared: its parser kind, default, documentation and range.

A section is a frozen dataclass whose every field is ``Annotated[type, Key(...)]``: the
field's type is what the code reads, the :class:`Key` is how the INI text becomes that value.
:func:`keys_of` reads the declarations back as the schema (``{key: Key}``), so the type, the
default and the documentation of a key are written once, side by side.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

#: How the INI text of a key is parsed (see :func:`proxy.config.parse.parse_value`).
Kind = Literal["str", "int", "float", "bool", "autobool", "choice", "path", "logpath", "url", "list", "json",
               "header", "maxstartups"]


@dataclass(frozen=True)
class Key:
    """One configuration key: how to parse it, its default and its documentation.

    ``choices`` of a ``choice`` key default to the arguments of the field's ``Literal`` type.
    """

    kind: Kind
    default: Any
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


def keys_of(section: type) -> dict[str, Key]:
    """The schema of a section dataclass: every ``Annotated[..., Key]`` field, in declaration order.

    Fields without a :class:`Key` (values derived while parsing, such as ``account_limits``)
    are not keys and are left out. A ``choice`` key without explicit choices takes them from
    its ``Literal`` type.
    """
    hints = typing.get_type_hints(section, include_extras=True)
    out: dict[str, Key] = {}
    for f in dataclasses.fields(section):
        hint = hints[f.name]
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        base, *meta = typing.get_args(hint)
        key = next((m for m in meta if isinstance(m, Key)), None)
        if key is None:
            continue
        if key.kind == "choice" and not key.choices:
            key = dataclasses.replace(key, choices=tuple(str(c) for c in typing.get_args(base)))
        out[f.name] = key
    return out


def defaults_of(schema: Mapping[str, Key]) -> dict[str, Any]:
    """Every key's default, unparsed (relative paths stay relative; see ``parse._section``)."""
    return {name: copy.deepcopy(k.default) for name, k in schema.items()}
