"""Shared fixtures: synthetic tiny models and checkpoints, golden cases."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).parent / "parity_kit"))


def golden(name: str) -> dict:
    """Load ``tests/data/<name>.npz`` with the parity kit's loader."""
    import golden_io

    return golden_io.load_golden(DATA / f"{name}.npz")


def read_png(name: str) -> np.ndarray:
    """A golden input image as uint8 [H, W, 3]."""
    from PIL import Image

    with Image.open(DATA / name) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="session", autouse=True)
def private_sharp_rt_cache(tmp_path_factory):
    """Keep what tests cache (engines, torch bf16 layouts, OpenVINO blobs) out of the user's cache.

    ``SHARP_RT_CACHE`` points at a session folder unless the caller set it; CLI subprocesses
    inherit it.  Tests of the cache location itself set or delete the variable themselves.
    """
    import os

    if os.environ.get("SHARP_RT_CACHE"):
        yield
        return
    os.environ["SHARP_RT_CACHE"] = str(tmp_path_factory.mktemp("sharp-rt-cache"))
    try:
        yield
    finally:
        os.environ.pop("SHARP_RT_CACHE", None)


@pytest.fixture(scope="session")
def tiny_state():
    """Synthetic seed-0 weights of the ``tiny`` preset (torch tensors)."""
    pytest.importorskip("torch")
    from sharp_rt.sharp_ref import synthetic_checkpoint, tiny_config

    return synthetic_checkpoint(tiny_config(), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_state):
    """The ``tiny`` predictor with synthetic seed-0 weights."""
    from sharp_rt.sharp_ref import predictor_from_state_dict, tiny_config

    return predictor_from_state_dict(tiny_state, tiny_config())


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_state) -> Path:
    """The tiny synthetic weights saved as a ``.pt`` file."""
    from sharp_rt.sharp_ref import save_checkpoint

    return save_checkpoint(tiny_state, tmp_path_factory.mktemp("ckpt") / "tiny_seed0.pt")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny synthetic checkpoint exported to fp32 ONNX (shared: copy it before changing it)."""
    pytest.importorskip("onnxruntime")
    from sharp_rt.export.pipeline import export_engine

    out = tmp_path_factory.mktemp("engines") / "tiny-fp32"
    result = export_engine(tiny_checkpoint, precision="fp32", out_dir=out)
    assert result.passed
    return out


@pytest.fixture()
def photo_folder(tmp_path):
    """Two good photos, one corrupt JPEG and one unsupported file in nested folders."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(DATA / "coffee.png", folder / "coffee.png")
    shutil.copy(DATA / "chelsea.png", folder / "nested" / "chelsea.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "notes.txt").write_text("not an image, and not picked up by the folder scan")
    return folder


@pytest.fixture()
def read_only_folder(tmp_path):
    """An existing folder this process cannot write to (skips where permissions do not bind, e.g. root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        probe = folder / "probe"
        try:
            probe.write_bytes(b"")
        except PermissionError:
            yield folder
        else:
            probe.unlink()
            pytest.skip("this process may write to read-only folders (root with CAP_DAC_OVERRIDE)")
    finally:
        folder.chmod(0o700)
