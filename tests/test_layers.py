"""Dependencies point one way: gui -> catalog, core, sweeps, launcher; none of those imports Qt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "workbench"
QT = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6", "workbench.gui")
FORBIDDEN = {
    "core": QT + ("workbench.catalog", "sqlalchemy", "alembic", "workbench.api"),
    "catalog": QT + ("torch",),
    # the sweep driver and the launcher start runs; the app draws them: both stay Qt-free,
    # and the launcher torch-free (the app calls it on its GUI thread)
    "sweeps": QT,
    "launcher": QT + ("torch",),
    # `run --nproc`: the agent of a multi-process run (torch only once it launches)
    "ranks": QT,
    # `workbench.track` in a user's script: no Qt, and torch only for a checkpoint
    "tracking": QT + ("torch",),
}


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_does_not_import_what_it_must_not(layer: str) -> None:
    folder = ROOT / layer
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{layer}.py"]
    assert files, f"no files found in {layer}"
    bad = [
        f"{f.relative_to(ROOT.parent)} imports {m}"
        for f in files
        for m in imported_modules(f)
        if any(m == x or m.startswith(x + ".") for x in FORBIDDEN[layer])
    ]
    assert not bad, "\n".join(bad)


def test_importing_engine_and_catalog_loads_no_qt() -> None:
    code = (
        "import sys, workbench.core.engine, workbench.catalog, workbench.cli;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('PySide6','pyqtgraph','shiboken6')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr


def test_core_imports_run_one_way() -> None:
    """`config` looks algorithms, datasets and models up in the leaf `registry`; their modules
    import the leaf `params` and `registry`, never `config` (which would close a circle)."""
    pieces = ("algorithms", "tasks", "models")
    files = [f for p in pieces for f in sorted((ROOT / "core" / p).rglob("*.py"))]
    assert len(files) > 10
    bad = [
        f"{f.relative_to(ROOT.parent)} imports {m}"
        for f in files
        for m in imported_modules(f)
        if m == "workbench.core.config"
    ]
    assert not bad, "\n".join(bad)
    leaves = {"params": ROOT / "core" / "params.py", "registry": ROOT / "core" / "registry.py"}

    def runtime(path: Path) -> set[str]:  # what importing it imports (TYPE_CHECKING aside)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                node.body = []
        return {
            n.module
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0
        } | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    allowed = {"params": {"workbench.core.errors", "workbench.core.registry"}}
    for name, path in leaves.items():
        deps = {m for m in runtime(path) if m.startswith("workbench.")}
        assert deps <= allowed.get(name, {"workbench.core.errors"}), f"{name} imports {deps}"
    config_deps = imported_modules(ROOT / "core" / "config.py")
    assert not any(m.startswith(f"workbench.core.{p}") for m in config_deps for p in pieces)


def test_the_cli_help_names_every_built_in_algorithm_and_dataset() -> None:
    """`run --help` lists the built-ins without importing torch: the written-out list must
    hold exactly what the registries have (with no plugins loaded)."""
    import os

    code = (
        "from workbench.cli import BUILT_IN; from workbench.core.registry import ALGORITHMS,"
        " DATASETS; print(sorted(BUILT_IN['algorithm']) == sorted(ALGORITHMS.names()),"
        " sorted(BUILT_IN['dataset']) == sorted(DATASETS.names()))"
    )
    env = {**os.environ, "WORKBENCH_PLUGINS": ""}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, env=env
    )
    assert r.stdout.split() == ["True", "True"], r.stdout + r.stderr
