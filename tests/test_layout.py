"""The package's architecture, checked from its imports (every import, lazy ones inside functions included):
subpackages in layers that import only downwards, no import cycle between modules, typer and rich only in the CLI,
no backend importing the factory that picks backends."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vsr"

# Lowest first. A module may import modules of its own layer or below. The public API (`vsr/__init__.py`, which
# loads `vsr.api` lazily) and `python -m vsr` stand on top; `vsr.synth` (the sample clip of the quick start) is a
# media tool.
LAYERS = (
    ("vsr.errors", "vsr.signals", "vsr.cache"),
    ("vsr.media", "vsr.synth"),
    ("vsr.model",),
    ("vsr.engine",),
    ("vsr.pipeline",),
    ("vsr.scaleout", "vsr.live", "vsr.train"),
    ("vsr.bench",),
    ("vsr.cli",),
    ("vsr.api", "vsr.__main__", "vsr"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[tuple[str, str | None]]:
    """(module, name) pairs this file imports from vsr: `from vsr.x import y` gives ("vsr.x", "y")."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vsr":
            found |= {(node.module, a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; vsr imports by full name")
        elif isinstance(node, ast.Import):
            found |= {(a.name, None) for a in node.names if a.name.split(".")[0] == "vsr"}
    return found


def third_party(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
    return names


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, name: str | None) -> str:
    """The vsr module an import refers to: `from vsr.engine import precision` is the module vsr.engine.precision."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def layer(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_layout.py"
    return best[0]


GRAPH = {m: {resolve(mod, name) for mod, name in imports(p)} - {m} for m, p in MODULES.items()}


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            if target == "vsr" and module != "vsr":  # `from vsr import __version__`: package metadata, not the API
                assert all(n == "__version__" for m, n in imports(MODULES[module]) if m == "vsr"), module
                continue
            if layer(target) > layer(module):
                wrong.append(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target == "vsr":
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if state.get(target) is None:
                visit(target)
        path.pop()
        state[module] = 2

    for module in GRAPH:
        if module not in state:
            visit(module)


def test_the_layers_are_the_ones_the_issue_names():
    """media <- engine <- pipeline/scaleout/live/train <- cli, with the model between media and the engine."""
    order = [layer(m) for m in ("vsr.media.reader", "vsr.model.srcnn", "vsr.engine.base", "vsr.pipeline.video")]
    assert order == sorted(order) and len(set(order)) == 4
    assert layer("vsr.scaleout.run") == layer("vsr.live.webcam") == layer("vsr.train.training") > order[-1]
    assert layer("vsr.cli") > layer("vsr.bench.report") > layer("vsr.train.training")


def test_typer_and_rich_only_in_the_cli():
    users = {m for m, p in MODULES.items() if third_party(p) & {"typer", "rich", "click"}}
    assert users and all(m == "vsr.cli" or m.startswith("vsr.cli.") for m in users), sorted(users)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("vsr.engine.") and m != "vsr.engine.chain"))
def test_no_backend_imports_the_factory(module):
    assert "vsr.engine.chain" not in GRAPH[module]


def test_media_needs_no_model_or_torch_for_video():
    """PyAV reading and writing stays free of torch (the reader, the writer, frames, opening inputs)."""
    for name in ("frames", "source", "reader", "writer"):
        assert "torch" not in third_party(MODULES[f"vsr.media.{name}"]), name
