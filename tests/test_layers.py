"""The layers point one way: aipc (process machinery) -> stages (commands) -> validation (harness) ->
pipeline (library). Every import in the source, at module level or inside a function, is read with ast;
an import of a higher layer fails the test, naming the file, the line and both layers."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"pipeline": 0, "validation": 1, "stages": 2, "aipc": 3}
# the NPU environment's own package runs in another interpreter; it may use the library (pipeline.torchload)
OTHER = {ROOT / "envs" / "npu" / "aipc_npu": 0}


def layer_of(module: str) -> str:
    """The layer a dotted module name belongs to: ``aipc.pipeline.x`` -> pipeline, ``aipc.cli`` -> aipc (the
    NPU environment imports the library from the checkout as the top-level ``pipeline``)."""
    parts = module.split(".")
    if parts[0] == "aipc" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return parts[0]


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, layer) of every absolute import, and of relative ones resolved to their package's layer."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = path.relative_to(root).parts[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, layer_of(alias.name)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, package if node.level else layer_of(node.module or "")))
    return out


def wrong_way_imports(root: Path = ROOT) -> list[str]:
    found = []
    for top, rank in LAYERS.items():
        for path in sorted((root / top).rglob("*.py")):
            for line, target in _imports(path, root):
                if LAYERS.get(target, -1) > rank:
                    found.append(f"{path.relative_to(root)}:{line}: {top} (layer {rank}) imports {target} "
                                 f"(layer {LAYERS[target]})")
    for folder, rank in OTHER.items() if root == ROOT else ():
        for path in sorted(folder.rglob("*.py")):
            for line, target in _imports(path, root):
                if LAYERS.get(target, -1) > rank:
                    found.append(f"{path.relative_to(root)}:{line}: the NPU environment imports {target}")
    return found


def test_no_layer_imports_a_layer_above_it():
    assert wrong_way_imports() == [], "wrong-way imports:\n" + "\n".join(wrong_way_imports())


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    """The check itself: a library module that imports the command layer lazily is caught."""
    for top in LAYERS:
        (tmp_path / top).mkdir()
    (tmp_path / "pipeline" / "x.py").write_text("def f():\n    from aipc.stages.cli import main\n    return main\n")
    (tmp_path / "validation" / "y.py").write_text("from aipc.pipeline import config\nimport aipc.pipeline.fsutil\n")
    (tmp_path / "stages" / "z.py").write_text("import aipc.worker\n")
    assert wrong_way_imports(tmp_path) == [
        "pipeline/x.py:2: pipeline (layer 0) imports stages (layer 2)",
        "stages/z.py:1: stages (layer 2) imports aipc (layer 3)"], wrong_way_imports(tmp_path)


def test_one_import_package_lists_every_folder_of_the_layers():
    """The wheel installs one top-level package, ``aipc``, the layers' folders mapped under it
    (pyproject.toml [tool.setuptools]); a new subpackage that is not listed would be left out of the wheel."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"] == {"aipc": "aipc", "aipc.pipeline": "pipeline", "aipc.stages": "stages",
                                    "aipc.validation": "validation"}
    on_disk = set()
    for name, folder in setup["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            on_disk.add(".".join((name, *rel)))
    assert set(setup["packages"]) == on_disk
    assert {p.split(".")[0] for p in setup["packages"]} == {"aipc"}


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Every project module (dotted, as installed) and the project modules it imports anywhere in it."""
    mods: dict[str, Path] = {}
    for top in LAYERS:
        for path in (root / top).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts if top == "aipc" else ["aipc", *parts])] = path

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            deps |= {m for m in map(known, targets) if m and m != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere():
    """No group of project modules imports each other in a ring, lazily or not (within a layer too)."""
    graph = module_graph()
    assert len(graph) > 60 and "aipc.pipeline.config" in graph["aipc.pipeline.export.openvino"]
    assert cycles(graph) == [], cycles(graph)


def test_the_cycle_check_sees_a_ring_through_a_lazy_import(tmp_path):
    for top in LAYERS:
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("from .b import x\n")
    (tmp_path / "pipeline" / "b.py").write_text("def x():\n    from aipc.pipeline import a\n")
    (tmp_path / "pipeline" / "c.py").write_text("from . import a\n")
    assert cycles(module_graph(tmp_path)) == [["aipc.pipeline.a", "aipc.pipeline.b"]]
