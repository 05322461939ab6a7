"""The architecture the layout promises (docs/design.md): hf_fcr's subpackages form layers and no module imports
from a layer above its own (type-only imports included), no import cycle in the library, the research harness or
the benchmarks, no module reaches into another's ``_private`` names, the research harness is not in the package,
and importing the speed and GPU benchmarks changes no environment variable (the other benchmarks are scripts only,
which set HF_HUB_OFFLINE when they are imported)."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the layer of each part of hf_fcr, lowest first (docs/design.md, "Layout"); data/ is beside the layers: it imports
# nothing else from hf_fcr, and any layer may use it
LAYERS = {
    "hf_fcr.utils": 0,
    "hf_fcr.core": 1,
    "hf_fcr.features": 2,
    "hf_fcr.records": 3,
    "hf_fcr.fitting": 4,
    "hf_fcr.debias": 5,
    "hf_fcr.editor": 6,
    "hf_fcr.remover": 6,
    "hf_fcr.demo": 7,
    "hf_fcr.studio": 8,
    "hf_fcr.cli": 9,
}


def _modules(folder: str, package: str | None) -> dict[str, Path]:
    """``{dotted name: path}`` of the Python files under ``folder``; scripts (``package=None``) by their stem."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        if package is None:
            found[path.stem] = path
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``name`` imports anywhere in its file (inside functions and ``TYPE_CHECKING`` too)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            submodules = {f"{base}.{a.name}" for a in node.names} & known.keys()
            found.update(submodules or ({base} & known.keys()))
    found.discard(name)
    return found


def _layer(name: str) -> int | None:
    for prefix, layer in LAYERS.items():
        if name == prefix or name.startswith(prefix + "."):
            return layer
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    modules = _modules("hf_fcr", "hf_fcr")
    upward = []
    for name, path in modules.items():
        mine = _layer(name)
        for target in _imports(name, path, modules):
            theirs = _layer(target)
            if name.startswith("hf_fcr.data"):
                assert target.startswith("hf_fcr.data"), f"{name} imports {target}: data/ imports only data/"
            elif mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "\n".join(upward)
    unplaced = [n for n in modules if _layer(n) is None and not n.startswith("hf_fcr.data") and n != "hf_fcr"]
    assert not unplaced, f"modules in no layer (add them to LAYERS and docs/design.md): {unplaced}"


def test_no_import_cycles_in_the_library_the_research_harness_or_the_benchmarks():
    for folder, package in (("hf_fcr", "hf_fcr"), ("research", "research"), ("benchmarks", None)):
        modules = _modules(folder, package)
        graph = {name: _imports(name, path, modules) for name, path in modules.items()}
        graph.pop("hf_fcr", None)  # the lazy public API imports its names only when they are used
        graph = {k: v - {"hf_fcr"} for k, v in graph.items()}
        assert not _cycles(graph), f"import cycles in {folder}/: {_cycles(graph)}"


def test_no_module_reaches_into_another_modules_private_names():
    modules = _modules("hf_fcr", "hf_fcr")
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in modules.items()}

    def private(node: ast.AST) -> str | None:
        name = getattr(node, "name", None)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        return name if name and name.startswith("_") and not name.startswith("__") else None

    defined = {name: {p for node in ast.walk(tree) if (p := private(node))} for name, tree in trees.items()}
    everywhere = set().union(*defined.values())
    reached = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                reached += [f"{name}: from {node.module} import {a.name}" for a in node.names if private(a)]
            if (
                isinstance(node, ast.Attribute)
                and node.attr in everywhere - defined[name]
                and ast.unparse(node.value) not in ("self", "cls")
            ):
                reached.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not reached, "\n".join(reached)


def test_the_research_harness_is_outside_the_package():
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert not [p for p in packages if "research" in p or "experiments" in p]
    assert not (ROOT / "hf_fcr" / "experiments").exists()
    assert set(_modules("hf_fcr", "hf_fcr")) >= {f"hf_fcr.{p.split('.', 1)[1]}" for p in packages if "." in p} - {
        "hf_fcr.model_cards",
        "hf_fcr.evaluate_modules",
    }


@pytest.mark.parametrize("benchmark", ["speed", "gpu"])
def test_importing_a_benchmark_changes_no_environment(benchmark):
    benchmarks = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    code = (
        f"import os, sys; sys.path.insert(0, {benchmarks!r}); import {benchmark}; "
        "print(os.environ.get('HF_HUB_OFFLINE'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
