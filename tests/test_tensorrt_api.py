"""Every TensorRT name sharp-rt uses exists in the real Python bindings of TensorRT 10.8 and 11.x.

TensorRT cannot be installed here (its libraries wheel comes from NVIDIA's own
index), but the bindings wheel, ``tensorrt-cu12-bindings`` (about 1.2 MB), is on
PyPI.  It holds the pybind11 module ``tensorrt_bindings/tensorrt.so`` (which
links libnvinfer, so it cannot be imported without the libraries) and
``tensorrt_bindings/__init__.py``.  pybind11 registers every class, method,
property, enum value and keyword argument under its name as a C string, so a
name the bindings define appears in the module's data as ``name\\0`` (possibly
as the tail of a longer string: linkers merge string suffixes).  That is a
necessary condition, strong enough to catch a removal: the scan finds
``BuilderFlag.FP16`` and ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` in
10.8 but not in 11.4, where TensorRT removed them.

The names are collected from the source of the two TensorRT modules: every
attribute used on a TensorRT object (``trt.…``, a builder, network, parser,
builder config, profile, runtime, engine, execution context or timing cache)
and every keyword argument passed to one.  The wheels are downloaded with pip
into pytest's cache (once); without network the tests skip and say so.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = (
    ROOT / "sharp_rt" / "engines" / "tensorrt_engine.py",
    ROOT / "sharp_rt" / "export" / "tensorrt_build.py",
)
# The oldest and the newest release the [tensorrt] extra allows (pyproject.toml: tensorrt>=10.8,<12).
VERSIONS = ("10.8.0.43", "11.4.0.106")
# Variables that hold TensorRT objects in those modules (self.engine / self.context included).
TENSORRT_OBJECTS = {
    "trt",
    "builder",
    "network",
    "parser",
    "config",
    "profile",
    "runtime",
    "engine",
    "context",
}


def _root_and_path(node: ast.expr) -> tuple[str | None, list[str]]:
    """``self.context.set_input_shape`` -> ("self", ["context", "set_input_shape"]); steps over calls."""
    path: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            path.insert(0, node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Name):
            return node.id, path
        else:
            return None, path


def _tensorrt_path(node: ast.expr) -> list[str]:
    """The TensorRT names in an attribute chain, or [] when it does not start at a TensorRT object."""
    root, path = _root_and_path(node)
    if root == "self" and path and path[0] in ("engine", "context"):
        return path[1:]
    return path if root in TENSORRT_OBJECTS else []


def used_tensorrt_names() -> set[str]:
    """Attributes and keyword arguments sharp-rt uses on TensorRT objects."""
    names: set[str] = set()
    for module in MODULES:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.update(_tensorrt_path(node))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and _tensorrt_path(node.func)
            ):
                names.update(keyword.arg for keyword in node.keywords if keyword.arg)
    return names


def _cache_dir(request, tmp_path_factory) -> Path:
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    return Path(cache.mkdir("tensorrt-bindings")) if cache is not None else tmp_path_factory.mktemp("trt")


def _download(version: str, folder: Path) -> Path:
    """The bindings wheel of ``version`` for this Python on x86-64 Linux (pip download, cached)."""
    found = sorted(folder.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if found:
        return found[0]
    python = f"{sys.version_info.major}{sys.version_info.minor}"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
        "--python-version", python, "--implementation", "cp",
        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--dest", str(folder), f"tensorrt-cu12-bindings=={version}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip(f"downloading tensorrt-cu12-bindings=={version} from PyPI timed out (offline?)")
    found = sorted(folder.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if done.returncode != 0 or not found:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(
            f"cannot download tensorrt-cu12-bindings=={version} for Python {python} from PyPI "
            f"(offline, or no wheel for this Python): {reason}"
        )
    return found[0]


class Bindings:
    """What one bindings wheel defines: the compiled module's strings and the package's Python names."""

    def __init__(self, wheel: Path) -> None:
        with zipfile.ZipFile(wheel) as archive:
            self.binary = archive.read("tensorrt_bindings/tensorrt.so")
            init = archive.read("tensorrt_bindings/__init__.py").decode("utf-8")
        tree = ast.parse(init)
        self.python_names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        self.python_names |= {
            target.id
            for n in tree.body
            if isinstance(n, ast.Assign)
            for target in n.targets
            if isinstance(target, ast.Name)
        }

    def defines(self, name: str) -> bool:
        """True when ``name`` is a C string of the module (or a tail of one), or a name of __init__.py."""
        return name in self.python_names or name.encode() + b"\0" in self.binary


@pytest.fixture(scope="module", params=VERSIONS)
def bindings(request, tmp_path_factory) -> tuple[str, Bindings]:
    version = request.param
    return version, Bindings(_download(version, _cache_dir(request, tmp_path_factory)))


def test_scan_finds_the_tensorrt_calls_of_both_modules():
    used = used_tensorrt_names()
    expected = {
        "Logger", "WARNING", "Builder", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED", "OnnxParser",
        "parse_from_file", "num_errors", "create_builder_config", "create_timing_cache", "set_timing_cache",
        "ignore_mismatch", "add_optimization_profile", "build_serialized_network", "get_timing_cache",
        "serialize", "Runtime", "deserialize_cuda_engine", "create_execution_context",
        "get_tensor_profile_shape", "set_input_shape", "set_tensor_address", "execute_async_v3",
        "get_tensor_dtype", "TensorIOMode", "DataType", "FLOAT", "__version__",
    }  # fmt: skip
    assert expected <= used, sorted(expected - used)
    assert not {"cudaMalloc", "cudaMemcpyAsync", "ctypes", "nbytes"} & used  # CUDA and numpy are not TensorRT


def test_every_tensorrt_name_sharp_rt_uses_is_defined(bindings):
    version, wheel = bindings
    missing = sorted(name for name in used_tensorrt_names() if not wheel.defines(name))
    assert not missing, f"TensorRT {version} bindings lack {missing}"


def test_scan_detects_names_that_tensorrt_11_removed(bindings):
    """The check can fail: BuilderFlag.FP16 and EXPLICIT_BATCH are gone in 11, execute_async_v2 in 10."""
    version, wheel = bindings
    assert not wheel.defines("execute_async_v2") and not wheel.defines("no_such_tensorrt_method")
    old = version.startswith("10.")
    assert wheel.defines("FP16") is old and wheel.defines("EXPLICIT_BATCH") is old


def test_extra_pins_the_tested_major_versions():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"tensorrt>=10\.8,<12"', text), "the [tensorrt] extra must allow exactly what is tested"
