"""The layering rules of docs/architecture.md, checked over the import graph (AST, no imports run).

Layers point one way: ``tagpipe.corpora`` (readers/writers) <- the core (``tagpipe``) <- ``tagpipe.plugins``.
Every ``import`` counts, including those inside functions; only ``if TYPE_CHECKING:`` blocks are left out
(they never run). A failure names the file, the line and the import, so the fix is obvious.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: import name -> folder, as setup.cfg's package_dir
ROOTS = {"tagpipe": REPO / "pipeline", "tagpipe.plugins": REPO / "plugins", "tagpipe.corpora": REPO / "corpora"}
#: the core modules a plugin may import (what docs/architecture.md calls the public core)
PUBLIC_CORE = {
    "tagpipe", "tagpipe.hookspecs", "tagpipe.errors", "tagpipe.names", "tagpipe.model_folder", "tagpipe.registry",
    "tagpipe.host", "tagpipe.components", "tagpipe.devices", "tagpipe.commands.options",
    "tagpipe.model", "tagpipe.data", "tagpipe.evaluation", "tagpipe.tasks", "tagpipe.training.loop",
    "tagpipe.training.settings", "tagpipe.training.distributed", "tagpipe.spacy_bridge.base",
}  # fmt: skip
MAX_LINES = 400
#: constants that share a name and value but version different things
SEPARATE_BY_DESIGN = {"FORMAT_VERSION"}  # each task versions its own model-folder format


def _modules() -> dict[str, Path]:
    modules = {}
    for prefix, folder in ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            if prefix == "tagpipe" and parts[:1] in (["plugins"], ["corpora"]):
                continue  # not a folder of the core (no such folders exist; belt and braces)
            modules[".".join([prefix, *parts])] = path
    return modules


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                skipped.update(id(n) for n in ast.walk(statement))
    return skipped


def imports_of(module: str) -> list[tuple[str, int]]:
    """The tagpipe modules ``module`` imports, with line numbers (``from pkg import mod`` -> ``pkg.mod``)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    found.append((f"{base}.{alias.name}", node.lineno))
                elif base in MODULES:
                    found.append((base, node.lineno))
    return found


def _layer(module: str) -> str:
    if module.startswith("tagpipe.corpora"):
        return "corpora"
    if module.startswith("tagpipe.plugins"):
        return "plugins"
    return "core"


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(REPO)}:{line}"


def test_the_graph_sees_every_layer():
    layers = {_layer(m) for m in MODULES}
    assert layers == {"core", "plugins", "corpora"}
    assert "tagpipe.errors" in {target for target, _ in imports_of("tagpipe.corpora.conll")}
    assert "tagpipe.plugins.decoders.viterbi" in {target for target, _ in imports_of("tagpipe.plugins.decoders.crf")}


def test_corpora_import_nothing_of_the_core_but_errors():
    bad = [f"{_where(m, line)} imports {target}" for m in MODULES if _layer(m) == "corpora"
           for target, line in imports_of(m) if _layer(target) != "corpora" and target != "tagpipe.errors"]
    assert not bad, "corpora may import only tagpipe.errors from the core:\n" + "\n".join(bad)


def test_the_core_never_imports_plugins():
    bad = [f"{_where(m, line)} imports {target}" for m in MODULES if _layer(m) == "core"
           for target, line in imports_of(m) if _layer(target) == "plugins"]
    assert not bad, "the core must reach plugins only through the registry:\n" + "\n".join(bad)


def test_plugins_reach_the_core_only_through_its_public_modules():
    bad = [f"{_where(m, line)} imports {target}" for m in MODULES if _layer(m) == "plugins"
           for target, line in imports_of(m) if _layer(target) == "core" and target not in PUBLIC_CORE]
    assert not bad, f"plugins may import from the core only {sorted(PUBLIC_CORE)}:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = {m: {t for t, _ in imports_of(m) if t != m} for m in MODULES}
    cycles = _cycles(graph)
    described = []
    for component in cycles:
        members = set(component)
        edges = [f"{_where(m, line)} imports {t}" for m in component for t, line in imports_of(m) if t in members]
        described.append(" / ".join(edges))
    assert not cycles, "import cycles (imports inside functions count):\n" + "\n".join(described)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_400_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(REPO)} has {lines} lines (at most {MAX_LINES}): split it"


def test_nothing_imports_the_old_top_level_names():
    """``pipeline``, ``plugins``, ``corpora`` and ``cli`` are folder names, never import names."""
    old = {"pipeline", "plugins", "corpora", "cli"}
    bad = []
    for path in sorted([*REPO.glob("*.py"), *REPO.glob("benchmarks/**/*.py"), *REPO.glob("tests/**/*.py"),
                        *(p for folder in ROOTS.values() for p in folder.rglob("*.py"))]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(REPO)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in old]
    assert not bad, "\n".join(bad)


def test_top_level_import_names_are_only_tagpipe():
    """Installed, the repository provides one import name (pip's top_level: see tests/test_packaging.py)."""
    import tagpipe

    assert Path(tagpipe.__file__).resolve().parent == ROOTS["tagpipe"]
    assert "pipeline" not in sys.modules


def test_each_constant_is_defined_once():
    """An UPPER_CASE module constant with the same name and value in two modules is a copy waiting to drift:
    define it once (in a torch-free ``names`` module when the CLI needs it without heavy imports)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for path in MODULES.values():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id.isupper():
                        seen.setdefault((target.id, ast.unparse(node.value)), []).append(
                            f"{path.relative_to(REPO)}:{node.lineno}")
    copies = [f"{name} = {value} in {', '.join(places)}" for (name, value), places in seen.items()
              if len(places) > 1 and name not in SEPARATE_BY_DESIGN]
    assert not copies, "\n".join(copies)
