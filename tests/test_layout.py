"""The layout rules of docs/design.md §1, checked on the import graph of every package.

The graph is read from the source (``ast``), with every import statement counted, also
the ones inside functions (a lazy import still couples two modules), except those under
``if TYPE_CHECKING:``. A package's ``__init__`` importing its own submodules is an edge
like any other; the implicit "a submodule import runs its package's ``__init__``" is not
counted (it would make every re-exporting ``__init__`` a cycle), so ``from pkg import
submodule`` is an edge to the submodule only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("headscope", "vision", "federated", "generative")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(p)] = p
    return out


MODULES = _modules()
MODULE_NAMES = set(MODULES)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (external ones too)."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module_name(path)
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = me.split(".") if is_pkg else me.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                subs = [f"{mod}.{a.name}" for a in child.names if f"{mod}.{a.name}" in MODULE_NAMES]
                found.update(subs)  # `from pkg import submodule` imports the submodule ...
                if len(subs) < len(child.names):  # ... and names from pkg itself only if it takes any
                    found.add(mod)
            visit(child)

    visit(tree)
    return found


IMPORTS = {m: _imports(p) for m, p in MODULES.items()}


def _internal(name: str) -> str | None:
    """The repository module ``name`` refers to (the longest known prefix), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in MODULES:
            return cand
    return None


GRAPH = {m: {t for t in map(_internal, imps) if t is not None and t != m} for m, imps in IMPORTS.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_graph_is_read():
    # a guard against a walker that silently finds nothing
    assert "headscope.model" in GRAPH["headscope.patching"]
    assert "headscope.common.errors" in GRAPH["headscope.model"]
    assert any(m.startswith("headscope.backends.") for m in GRAPH["headscope.loading"])


def test_cycle_detector_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("lib", ["transformer_lens", "nnsight"])
def test_only_backends_import_the_interpretability_libraries(lib):
    bad = [
        m
        for m, imps in IMPORTS.items()
        if not m.startswith("headscope.backends") and any(i == lib or i.startswith(lib + ".") for i in imps)
    ]
    assert not bad, f"{lib} is imported outside headscope/backends/: {bad}"


def test_papers_never_import_the_organisms():
    papers = [m for m in GRAPH if m.startswith("headscope.papers")]
    assert papers, "headscope/papers/ holds no modules"
    bad = {m: sorted(t for t in GRAPH[m] if t.startswith("headscope.organisms")) for m in papers}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"paper modules import the organism generator; pass task objects instead: {bad}"


def test_common_and_companions_keep_their_distance():
    for m, targets in GRAPH.items():
        hs = {t for t in targets if t.startswith("headscope")}
        if m.startswith("headscope.common"):
            assert all(t.startswith("headscope.common") for t in hs), f"{m} imports {hs} (common is a leaf)"
        elif m.split(".")[0] in ("vision", "federated", "generative"):
            assert all(t.startswith("headscope.common") for t in hs), f"{m} imports {hs} beyond headscope.common"


def test_paths_is_a_leaf():
    assert not {t for t in GRAPH["headscope.paths"] if t.startswith("headscope")}
