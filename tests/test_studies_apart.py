"""The research studies stay apart from the product: no module outside ``monai_lgg.studies`` imports one.

The product (CLI, bundles, inference, training) must install, run and change without the studies that measure
it; a study may import any product module. Imports inside functions count as well as module-level ones, and
so do the ``tools/`` launchers' targets: each launcher starts a study's ``main``, never product code of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "monai_lgg"
STUDIES = "monai_lgg.studies"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``monai_lgg/studies/crossval.py`` -> ``monai_lgg.studies.crossval`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool = False) -> set[str]:
    """Every module that ``source`` (module ``name``) imports, at any depth: ``from a import b`` gives ``a`` and
    ``a.b`` (``b`` may be a submodule); relative imports are resolved against ``name``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def is_study(module: str) -> bool:
    return module == STUDIES or module.startswith(STUDIES + ".")


def product_imports_of_studies(package: Path = PACKAGE) -> list[str]:
    """``"<product module> imports <study module>"`` for every such import under ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if "_bundles" in path.parts:
            continue
        name = module_name(path, package)
        if is_study(name):
            continue
        imports = imported_modules(path.read_text(), name, path.name == "__init__.py")
        found += [f"{name} imports {module}" for module in sorted(imports) if is_study(module)]
    return found


def test_no_product_module_imports_a_study():
    assert (PACKAGE / "studies" / "__init__.py").is_file()
    assert not product_imports_of_studies(), "\n".join(product_imports_of_studies())


def test_the_check_sees_every_form_of_import(tmp_path):
    """The walker finds a study import at module level, inside a function, relative, and as ``from pkg import``."""
    package = tmp_path / "monai_lgg"
    (package / "studies").mkdir(parents=True)
    (package / "inference").mkdir()
    for path in (package / "__init__.py", package / "studies" / "__init__.py", package / "inference" / "__init__.py"):
        path.write_text("")
    (package / "studies" / "crossval.py").write_text("from monai_lgg.inference import predict\n")  # allowed
    (package / "clean.py").write_text("import monai_lgg.errors\nfrom monai_lgg.inference import predict\n")
    assert product_imports_of_studies(package) == []
    forms = {
        "top.py": "import monai_lgg.studies.crossval\n",
        "lazy.py": "def f():\n    from monai_lgg.studies.crossval import score_case\n",
        "inference/relative.py": "from ..studies import crossval\n",
        "named.py": "from monai_lgg import studies\n",
    }
    for file, text in forms.items():
        (package / file).write_text(text)
    found = product_imports_of_studies(package)
    assert sorted({line.split(" imports ")[0] for line in found}) == [
        "monai_lgg.inference.relative",
        "monai_lgg.lazy",
        "monai_lgg.named",
        "monai_lgg.top",
    ], found


MACHINE_SCRIPTS = ("gpu_suite",)
"""``tools/`` scripts that keep their logic: the GPU suite runs from the source tree on a bare GPU machine."""


def test_every_study_tool_is_a_launcher():
    """A ``tools/`` script that runs a study only starts it: ``run_tool(main)`` of a ``monai_lgg.studies`` module."""
    launchers = 0
    for path in sorted((PROJECT_ROOT / "tools").glob("*.py")):
        if path.stem in MACHINE_SCRIPTS:
            continue
        tree = ast.parse(path.read_text())
        imports = imported_modules(path.read_text(), f"tools.{path.stem}")
        if not any(is_study(module) for module in imports):
            continue
        launchers += 1
        defined = [node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert not defined, f"{path.name} defines {defined}: a study's logic belongs in monai_lgg.studies"
        assert f"monai_lgg.studies.{path.stem}.main" in imports and "monai_lgg.errors.run_tool" in imports, path.name
        assert 'if __name__ == "__main__":\n    run_tool(main)\n' in path.read_text(), path.name
    assert launchers >= 13
