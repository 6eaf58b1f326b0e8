"""The package's layers (docs/architecture.md), checked with import-linter, and the 0.1 module paths."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sharp_rt._moved import MOVED_MODULES

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """Run import-linter with ``project``'s pyproject contracts, importing ``project``'s sharp_rt."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "sharp_rt", project / "sharp_rt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    return project


def test_imports_follow_the_layers_without_circles_and_keep_torch_off_the_deployment_path():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the runtime reaching up into the engines
        ("runtime/preprocess.py", "from sharp_rt.engines import base as _upward", "Layers"),
        # two siblings of one layer depending on each other
        ("render/camera.py", "from sharp_rt.export import validate as _sideways", "Layers"),
        # a circle inside a package (the container importing a writer that imports it)
        ("runtime/gaussians.py", "from sharp_rt.runtime import ply as _circle", "No import circles"),
        # torch on the deployment path
        ("engines/onnxruntime_engine.py", "import torch as _torch", "never imports torch"),
    ],
)
def test_each_contract_catches_what_it_forbids(tmp_path, module, line, broken):
    project = copy_project(tmp_path)
    path = project / "sharp_rt" / module
    path.write_text(path.read_text() + f"\n\ndef _added():\n    {line}\n")
    result = lint_imports(project)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_a_moved_module_still_imports_from_its_old_path_and_says_where_it_went(old, new):
    sys.modules.pop(old, None)  # import it afresh, as a user's first import would
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # the module keeps its own identity
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)
