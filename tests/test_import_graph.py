"""The package's import graph has no circles and no arrow from a lower layer to a higher one.

The graph is read from the source with ``ast``: module-level and function-level imports (a lazy import inside a
function is still an arrow), relative imports resolved, and an import of ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``. The layers are listed in :data:`LAYERS` and described in CONTRIBUTING.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_lgg"

LAYERS: list[tuple[str, ...]] = [
    # lowest first: a module may import its own layer's modules and those of lower layers only
    ("monai_lgg", "monai_lgg.errors", "monai_lgg.io", "monai_lgg.schemas", "monai_lgg.templates"),
    ("monai_lgg.bundle", "monai_lgg.bundle.settings", "monai_lgg.bundle_paths"),
    ("monai_lgg.imaging", "monai_lgg.data.naming"),
    ("monai_lgg.transforms",),
    ("monai_lgg.data",),
    ("monai_lgg.networks", "monai_lgg.losses", "monai_lgg.metrics"),
    ("monai_lgg.bundle.record", "monai_lgg.bundle.network", "monai_lgg.bundle.scaffold"),
    ("monai_lgg.engines",),
    ("monai_lgg.inference",),
    ("monai_lgg.report", "monai_lgg.radiogenomics", "monai_lgg.bundle_checks", "monai_lgg.bundle_export"),
    ("monai_lgg.cli", "monai_lgg.cli_args", "monai_lgg.__main__"),
]
"""Module prefixes of each layer; a module belongs to the layer of its longest matching prefix."""

STUDIES = (
    # research code: above every product layer (tests/test_studies_apart.py keeps product modules off them)
    "monai_lgg.studies",
)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if "_bundles" in parts:  # the bundles' package data (a link to bundles/ in a checkout)
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> the package modules it imports`` (anywhere in the file), with the packages an import runs."""
    modules = _modules(package)

    def with_parents(name: str, importer: str) -> set[str]:
        """``name`` and the packages importing it initialises, less those the importer is already inside."""
        parts, own = name.split("."), importer.split(".")
        chain = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        inside = {".".join(own[:i]) for i in range(1, len(own))}
        return (chain - (inside - {name})) & modules.keys()

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, one level up per extra dot
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets.add(source)
                targets |= {f"{source}.{alias.name}" for alias in node.names}  # "from pkg import module"
        graph[name] = {m for t in targets for m in with_parents(t, name)} - {name}
    return graph


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` (None for a study module)."""
    if any(module == s or module.startswith(s + ".") for s in STUDIES):
        return None
    best, layer = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            # "monai_lgg" names the package's own __init__ only: a new top-level module must be placed in LAYERS
            inside = module.startswith(prefix + ".") and prefix != "monai_lgg"
            if (module == prefix or inside) and len(prefix) > best:
                best, layer = len(prefix), index
    return layer


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _product_graph() -> dict[str, set[str]]:
    graph = import_graph()
    keep = {m for m in graph if layer_of(m) is not None}
    return {m: graph[m] & keep for m in keep}


def test_every_module_has_a_layer():
    """A new module outside the listed packages must be given a layer in LAYERS (and CONTRIBUTING.md)."""
    graph = import_graph()
    assert "monai_lgg.bundle.settings" in graph and "monai_lgg.engines" in graph  # the graph was read at all
    unplaced = [m for m in graph if layer_of(m) is None and not any(m.startswith(s) for s in STUDIES)]
    assert not unplaced


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_lower_layer_imports_a_higher_one():
    """An empty package ``__init__`` (``monai_lgg.data``, run by ``import monai_lgg.data.naming``) pulls nothing in."""
    graph, modules = _product_graph(), _modules()
    back = sorted(
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in graph.items()
        for t in targets
        if layer_of(t) > layer_of(m) and not (modules[t].name == "__init__.py" and not graph[t])
    )
    assert back == []


def test_the_checks_catch_a_circle_and_a_back_arrow(tmp_path):
    """The graph reader sees a function-level relative import; the checks flag what they must."""
    pkg = tmp_path / "monai_lgg"
    (pkg / "transforms").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from .transforms import presets\n")
    (pkg / "transforms" / "__init__.py").write_text("")
    (pkg / "transforms" / "presets.py").write_text("from monai_lgg import errors\n")
    graph = import_graph(pkg)
    assert graph["monai_lgg.errors"] >= {"monai_lgg.transforms", "monai_lgg.transforms.presets"}
    assert ["monai_lgg.errors", "monai_lgg.transforms.presets"] in [
        [m for m in c if m != "monai_lgg.transforms"] for c in cycles(graph)
    ]
    assert layer_of("monai_lgg.transforms.presets") > layer_of("monai_lgg.errors")


@pytest.mark.parametrize("module", ["monai_lgg.bundle.settings", "monai_lgg.cli_args"])
def test_torch_free_modules_import_no_torch_module(module):
    """The command line checks arguments before torch loads: these modules reach no module that imports torch."""
    graph = import_graph()
    reached, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in reached:
            reached.add(current)
            todo.extend(graph.get(current, ()))
    modules = _modules()
    heavy = sorted(
        m
        for m in reached
        if any(
            line.startswith(("import torch", "from torch", "import monai\n", "from monai."))
            for line in (modules[m].read_text() + "\n").splitlines(keepends=True)
        )
    )
    assert heavy == []
