"""The shape of the code, read from the source with ``ast`` (nothing is imported):

- no import circle between modules of ``proxy/`` and ``trust/``;
- layers: a module imports only modules of its own layer or of a layer below it (:data:`LAYERS`);
  so the HTTP engine (``proxy.http``) imports nothing from the gate, the sessions, the login or
  the front doors: policy comes to it as data;
- ``trust/`` never imports Twisted, OpenSSL or ``proxy``;
- no module over :data:`MAX_LINES` lines.

Every import counts, in every rule: one at the top, one inside a function (a lazy import is
still a dependency, and hiding a circle in a function does not remove it) and one under
``if TYPE_CHECKING:`` (an annotation-only import is still a dependency of the design: the type
checker, and a reader, must load the other module to understand this one). So a seam is declared
below the parts that use it and names only what lies below it too: the clock
(:mod:`proxy.clock`) at the bottom, the engine's seams (:mod:`proxy.http.parts`) under its parts,
:mod:`proxy.interfaces` between the engine and the gate.

:data:`KNOWN_LAYER_BREAKS` and :data:`KNOWN_LARGE` list what is still wrong today, each with the
part of the redesign (issue 13) that removes it. They may only shrink: an entry that is no longer
true fails the test, so it is deleted when its fix lands.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "trust")
MAX_LINES = 500

#: Bottom to top. A module may import its own layer and the layers below it, never one above.
LAYERS: tuple[tuple[str, str], ...] = (
    ("trust", "pure certificate logic: store, verification, mapping, access rules, OCSP"),
    ("proxy.version", "the installed version"),
    ("proxy.clock", "the one clock seam (reactor time) and how a time is written"),
    ("proxy.paths", "the canonical request target (pure): what every path decision and the upstream read"),
    ("proxy.timerwheel", "one coarse reactor timer for every connection's deadline (pure: the clock is injected)"),
    ("proxy.config", "the INI file as typed sections, every problem with section, key and reason"),
    ("proxy.observe", "metrics, audit, logs, access log: what every part reports to"),
    ("proxy.stores", "the session store contract and its memory, SQLite and Redis implementations"),
    ("proxy.listener", "TLS: context, in-handshake verification, identity, trust reload"),
    ("proxy.http", "the HTTP engine: parse, forward, answer locally, tunnel"),
    ("proxy.interfaces", "the seams of the parts above the engine as Protocols (sessions, front doors)"),
    ("proxy.gate", "the per-request decision, and the words and same-origin rule of certgate's pages"),
    ("proxy.sessions", "the trusted-session rules and the session endpoints"),
    ("proxy.login", "login factors, the login page and JSON API"),
    ("proxy.frontdoors", "the Cockpit and JOC login front doors"),
    ("proxy.ops", "the admin listener and the sessions command"),
    ("proxy.app", "wiring, command line, twistd glue, start checks"),
)

#: (importing module, imported module) edges that break a layer today, and what removes them.
#: A name also covers the modules inside it (``proxy.config`` covers a ``proxy/config/`` package).
KNOWN_LAYER_BREAKS: dict[tuple[str, str], str] = {
}

#: Modules over MAX_LINES today (path: what splits them). Only shrinks.
KNOWN_LARGE: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # the imported name, resolved to a module of proxy/trust when it is one
    line: int
    how: str  # "top", "lazy" (inside a function) or "typing" (under TYPE_CHECKING)

    def where(self) -> str:
        return f"{self.source}:{self.line} ({self.how})"


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _resolve(name: str) -> str:
    """``name`` as the longest module of ours it names (``proxy.x.Y`` -> ``proxy.x``), else itself."""
    probe = name
    while probe:
        if probe in MODULES:
            return probe
        probe = probe.rpartition(".")[0]
    return name


def _imports(module: str, source: str, is_package: bool = False) -> list[Import]:
    tree = ast.parse(source, module)
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[Import] = []

    def names(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            up = package[:len(package) - (node.level - 1)]
            base = ".".join(up + ([node.module] if node.module else []))
        # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` the module mod
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]

    def walk(node: ast.AST, lazy: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    visit(sub, lazy, True)
                for sub in child.orelse:
                    visit(sub, lazy, typing_only)
            else:
                visit(child, lazy, typing_only)

    def visit(node: ast.AST, lazy: bool, typing_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            how = "typing" if typing_only else ("lazy" if lazy else "top")
            for name in names(node):
                found.append(Import(module, _resolve(name), node.lineno, how))
        walk(node, lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)), typing_only)

    walk(tree, False, False)
    return found


IMPORTS = [imp for mod, path in MODULES.items()
           for imp in _imports(mod, path.read_text(encoding="utf-8"), path.name == "__init__.py")]


def _internal(hows: tuple[str, ...] = ("top", "lazy", "typing")) -> dict[str, dict[str, list[Import]]]:
    """The modules' imports of each other, of the kinds in ``hows`` (all kinds unless told)."""
    graph: dict[str, dict[str, list[Import]]] = {m: {} for m in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.source and imp.how in hows:
            graph[imp.source].setdefault(imp.target, []).append(imp)
    return graph


#: every import between our modules: at run time, lazily, and for annotations only
GRAPH = _internal()


def _circles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for nxt in targets:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest layer name that ``module`` is or is inside."""
    best, best_len = -1, -1
    for i, (name, _) in enumerate(LAYERS):
        if (module == name or module.startswith(name + ".")) and len(name) > best_len:
            best, best_len = i, len(name)
    return best


def _covers(name: str, module: str) -> bool:
    return module == name or module.startswith(name + ".")


def known_break(edge: tuple[str, str]) -> bool:
    return any(_covers(src, edge[0]) and _covers(dst, edge[1]) for src, dst in KNOWN_LAYER_BREAKS)


def layer_breaks() -> dict[tuple[str, str], list[Import]]:
    out: dict[tuple[str, str], list[Import]] = {}
    for source, targets in GRAPH.items():
        for target, imps in targets.items():
            if layer_of(target) > layer_of(source):
                out[(source, target)] = imps
    return out


# --------------------------------------------------------------------------- the checker itself


def test_the_checker_sees_every_kind_of_import() -> None:
    source = """
from __future__ import annotations
import os
from typing import TYPE_CHECKING
from . import certinfo
from .store import load_store
from proxy.gate import decide
if TYPE_CHECKING:
    from proxy.sessions.manager import SessionManager
def later():
    import proxy.app.service
class C:
    def m(self):
        f = lambda: None
        from ..proxy import version
"""
    got = {(imp.target, imp.how) for imp in _imports("trust.example", source)}
    assert got == {("__future__", "top"), ("os", "top"), ("typing", "top"), ("trust.certinfo", "top"),
                   ("trust.store", "top"), ("proxy.gate.decide", "top"), ("proxy.sessions.manager", "typing"),
                   ("proxy.app.service", "lazy"), ("proxy.version", "lazy")}
    assert {imp.target for imp in _imports("trust", "from .store import load_store", is_package=True)} == {
        "trust.store"}
    # and the real tree gives the checker something to check
    assert len(MODULES) > 100 and sum(len(t) for t in GRAPH.values()) > 300


def test_the_circle_finder_finds_a_lazy_circle() -> None:
    graph: dict[str, dict[str, list[Import]]] = {"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b": []}, "b": {}}) == []


def test_annotation_only_imports_are_in_the_graph() -> None:
    """A circle closed only under ``if TYPE_CHECKING:`` is still found: those imports are edges too."""
    typing_edges = {(imp.source, imp.target) for imp in IMPORTS if imp.how == "typing" and imp.target in MODULES}
    assert ("proxy.http.reader", "proxy.http.parts") in typing_edges  # the reader names its Host only in annotations
    assert all(t in GRAPH[s] for s, t in typing_edges if s != t)


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if m != "proxy" and layer_of(m) < 0] == []


# --------------------------------------------------------------------------- the rules


def test_no_import_circle() -> None:
    """No two modules import each other, however indirectly or lazily."""
    report = []
    for comp in _circles(GRAPH):
        edges = [imp.where() + " -> " + t for m in comp for t, imps in sorted(GRAPH[m].items()) if t in comp
                 for imp in imps[:1]]
        report.append(" / ".join(comp) + ":\n    " + "\n    ".join(edges))
    assert report == [], "import circles:\n" + "\n".join(report)


def test_layers_import_only_downwards() -> None:
    found = layer_breaks()
    new = {k: [imp.where() for imp in v] for k, v in found.items() if not known_break(k)}
    assert new == {}, f"imports from a layer above (see LAYERS): {new}"
    fixed = sorted(k for k in KNOWN_LAYER_BREAKS
                   if not any(_covers(k[0], src) and _covers(k[1], dst) for src, dst in found))
    assert fixed == [], f"fixed: delete these from KNOWN_LAYER_BREAKS: {fixed}"


def test_http_engine_imports_no_policy() -> None:
    """The HTTP engine knows nothing of the gate, the sessions, the login or the front doors."""
    policy = ("proxy.gate", "proxy.sessions", "proxy.login", "proxy.frontdoors")
    found = sorted((imp.source, imp.target) for imp in IMPORTS
                   if imp.source.startswith("proxy.http") and imp.target.startswith(policy))
    assert [e for e in found if not known_break(e)] == []
    assert all(layer_of(p) > layer_of("proxy.http") for p in policy)


def test_trust_never_imports_twisted_openssl_or_proxy() -> None:
    bad = [f"{imp.where()} {imp.target}" for imp in IMPORTS
           if imp.source.split(".")[0] == "trust" and imp.target.split(".")[0] in ("twisted", "OpenSSL", "proxy")]
    assert bad == []


def test_no_module_over_the_line_limit() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    over = {p: n for p, n in sizes.items() if n > MAX_LINES}
    assert {p: n for p, n in over.items() if p not in KNOWN_LARGE} == {}
    fixed = sorted(p for p in KNOWN_LARGE if p not in over)
    assert fixed == [], f"split: delete these from KNOWN_LARGE: {fixed}"
