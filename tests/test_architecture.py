"""The module graph of docs/architecture.md, checked: every import in pointseg/, graphs/ and viewer/
(module-level and inside functions, relative ones resolved) goes along an allowed edge, and the
packages form no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("pointseg", "graphs", "viewer", "tools", "tests")
SOURCES = ("pointseg", "graphs", "viewer")
# graphs/ and viewer/ are installed as pointseg.graphs / pointseg.viewer (pointseg/graphs and
# pointseg/viewer link to them): their modules are named that way, and a bare `graphs` or `viewer`
# import names a package no installation provides.
LINKED = {"graphs": "pointseg.graphs", "viewer": "pointseg.viewer"}

# Top-level modules of pointseg that everything may import (tables, configs, metrics, safe writes).
BASE_MODULES = ("pointseg", "pointseg.classes", "pointseg.config", "pointseg.metrics", "pointseg.atomic",
                "pointseg.checksum", "pointseg.voxels", "pointseg.assets")
# Package -> the packages it may import besides itself and "base" (docs/architecture.md).
ALLOWED: dict[str, frozenset[str]] = {
    "base": frozenset(),
    "pointseg.nn": frozenset(),
    "pointseg.models": frozenset({"pointseg.nn"}),
    "pointseg.io": frozenset(),
    "pointseg.data": frozenset({"pointseg.io"}),
    "pointseg.engine": frozenset({"pointseg.nn"}),
    "pointseg.segmentation": frozenset({"pointseg.engine", "pointseg.models", "pointseg.nn", "pointseg.data"}),
    "pointseg.convert": frozenset({"pointseg.segmentation", "pointseg.engine", "pointseg.models", "pointseg.nn",
                                   "pointseg.data"}),
    "pointseg.graphs": frozenset({"pointseg.engine", "pointseg.models", "pointseg.nn"}),
    "pointseg.viewer": frozenset({"pointseg.io"}),
    "pointseg.cli": frozenset({"pointseg.nn", "pointseg.models", "pointseg.io", "pointseg.data",
                               "pointseg.engine", "pointseg.segmentation", "pointseg.convert",
                               "pointseg.graphs", "pointseg.viewer"}),
    "pointseg.__main__": frozenset({"pointseg.cli"}),
}


def package_of(module: str) -> str:
    """The node of the module graph a dotted module name belongs to."""
    if module in BASE_MODULES or any(module.startswith(m + ".") for m in BASE_MODULES[1:]):
        return "base"
    parts = module.split(".")
    if parts[0] == "pointseg":
        return ".".join(parts[:2])
    return parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    name = ".".join(parts)
    top = parts[0] if parts else ""
    return LINKED[top] + name[len(top):] if top in LINKED else name


def is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, first-party module)`` for every import statement anywhere in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # "from . import x" in pkg/mod.py means pkg; in pkg/__init__.py it means pkg too
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # "from pkg import sub" may name a submodule, whose node is the edge's end
            found += [(node.lineno, f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base)
                      for a in node.names]
    return sorted({(line, m) for line, m in found if m.split(".")[0] in FIRST_PARTY})


def bad_edges(source: str, module: str, is_package: bool = False, where: str = "") -> list[str]:
    """Every import in ``source`` (of ``module``) against the allowed direction, one line each."""
    src = package_of(module)
    allowed = ALLOWED.get(src)
    out = []
    for line, target in imported_modules(source, module, is_package):
        dst = package_of(target)
        if dst == src or dst == "base":
            continue
        if allowed is None or dst not in allowed:
            out.append(f"{where or module}:{line}: {src} -> {dst} (import of {target}) is not an allowed edge")
    return out


def source_files() -> list[Path]:
    """Every source file once: graphs/ and viewer/ by their own folders, not through the links."""
    linked = {ROOT / "pointseg" / d for d in LINKED}
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py")
                  if not any(p.is_relative_to(link) for link in linked))


def package_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in source_files():
        module = module_name(path)
        src = package_of(module)
        for _, target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if package_of(target) != src:
                edges.setdefault(src, set()).add(package_of(target))
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


# ----------------------------------------------------------------------------- the tree

def test_every_import_goes_along_an_allowed_edge():
    problems = []
    for path in source_files():
        problems += bad_edges(path.read_text(), module_name(path), path.name == "__init__.py",
                              str(path.relative_to(ROOT)))
    assert not problems, "imports against docs/architecture.md:\n" + "\n".join(problems)


def test_the_packages_form_no_cycle():
    cycle = find_cycle(package_edges())
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_every_package_of_the_tree_has_a_row_and_the_allowed_graph_has_no_cycle():
    nodes = {package_of(module_name(p)) for p in source_files()}
    assert nodes <= set(ALLOWED), f"packages without a row in ALLOWED: {sorted(nodes - set(ALLOWED))}"
    assert find_cycle({k: set(v) for k, v in ALLOWED.items()}) is None
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for node in ALLOWED:
        assert f"`{node}`" in doc, f"docs/architecture.md does not name {node}"


def test_no_test_imports_tools():
    # tools/ are scripts, not a package: tests that need their code get it from the package
    # (tests of a script itself load it from its file, conftest.load_tool)
    found = [f"{p.relative_to(ROOT)}:{line}: {m}" for p in sorted((ROOT / "tests").glob("*.py"))
             for line, m in imported_modules(p.read_text(), module_name(p), False) if m.split(".")[0] == "tools"]
    assert not found, "tests importing tools/:\n" + "\n".join(found)


# ----------------------------------------------------------------------------- the checker itself

@pytest.mark.parametrize("source,module,edge", [
    ("from pointseg.io.scans import read_scan\n", "pointseg.segmentation.segment", "pointseg.segmentation -> pointseg.io"),
    ("def f():\n    from viewer.render import render_png\n", "pointseg.segmentation.segment",
     "pointseg.segmentation -> viewer"),
    ("from ..io import scans\n", "pointseg.segmentation.segment", "pointseg.segmentation -> pointseg.io"),
    ("from .. import io\n", "pointseg.segmentation.segment", "pointseg.segmentation -> pointseg.io"),
    ("import pointseg.segmentation.segment\n", "pointseg.viewer.compare", "pointseg.viewer -> pointseg.segmentation"),
    ("from viewer.render import render_png\n", "pointseg.cli.segment", "pointseg.cli -> viewer"),
    ("from ..data.rooms import Room\n", "pointseg.io.scans", "pointseg.io -> pointseg.data"),
    ("from pointseg.models import build\n", "pointseg.nn.block", "pointseg.nn -> pointseg.models"),
    ("import tools.accuracy_fp32\n", "pointseg.segmentation.train", "pointseg.segmentation -> tools"),
    ("from ..segmentation.segment import segment_scan\n", "pointseg.engine.trainer", "pointseg.engine -> pointseg.segmentation"),
])
def test_the_checker_names_a_bad_edge(source, module, edge):
    problems = bad_edges(source, module, where="x.py")
    assert len(problems) == 1 and problems[0].startswith("x.py:") and edge in problems[0]


@pytest.mark.parametrize("source,module", [
    ("from ..metrics import SegMetrics\nfrom .frame import Frame\n", "pointseg.segmentation.segment"),
    ("def f():\n    from pointseg.segmentation.segment import predict_scan\n", "pointseg.cli.view"),
    ("from . import render\nfrom pointseg.io.scans import Scan\n", "pointseg.viewer"),
    ("import numpy\nfrom pointseg.atomic import atomic_dir\n", "pointseg.io.rooms"),
])
def test_the_checker_lets_allowed_edges_through(source, module):
    assert bad_edges(source, module, is_package=module == "pointseg.viewer") == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


# ----------------------------------------------------------------------------- modules

def module_edges(files: list[Path] | None = None) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (anywhere in it, functions included: a cycle
    through a lazy import is still a cycle a reader has to untangle)."""
    edges: dict[str, set[str]] = {}
    for path in files if files is not None else source_files():
        module = module_name(path)
        for _, target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if target != module and target.split(".")[0] in SOURCES:
                edges.setdefault(module, set()).add(target)
    return edges


def test_the_modules_form_no_cycle():
    cycle = find_cycle(module_edges())
    assert cycle is None, "module import cycle: " + " -> ".join(cycle)


def test_the_module_cycle_check_finds_a_cycle_through_a_lazy_import():
    """The checker's own test: two modules of a synthetic package import each other, one of them
    inside a function (as the block writer and the prepared rooms once did); a third is clean."""
    pkg = ROOT / "pointseg" / "_cycle_probe"
    sources = {pkg / "__init__.py": "from . import c\n", pkg / "a.py": "from .b import g\n",
               pkg / "b.py": "def g():\n    from .a import f\n    return f\n", pkg / "c.py": "import numpy\n"}
    edges: dict[str, set[str]] = {}
    for path, text in sources.items():
        module = module_name(path)
        for _, target in imported_modules(text, module, path.name == "__init__.py"):
            if target != module:
                edges.setdefault(module, set()).add(target)
    cycle = find_cycle(edges)
    assert cycle is not None and set(cycle) == {"pointseg._cycle_probe.a", "pointseg._cycle_probe.b"}
    del edges["pointseg._cycle_probe.b"]
    assert find_cycle(edges) is None
