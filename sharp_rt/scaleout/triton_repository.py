"""``sharp-rt export --target triton``: a Triton Inference Server model repository.

```
MODEL_REPO/
  <model_name>/
    config.pbtxt           written last, atomically (sharp_rt.scaleout.triton_config)
    warmup/disparity_factor_one   4 bytes: float32 1.0, the warm-up request's disparity_factor
    1/                     a normal sharp-rt artifact directory (sharp_rt.export.pipeline):
      model.onnx + model.onnx.data   (backend onnxruntime)
      model.plan                     (backend tensorrt; the ONNX files stay next to it)
      manifest.json                  Triton ignores it; sharp-rt tools read it
```

The config (:mod:`sharp_rt.scaleout.triton_config`) declares the engine contract
(``sharp_rt.core.contract``) in Triton's terms: every tensor ``TYPE_FP32``; with
``max_batch_size > 0`` the dims leave out the batch and ``disparity_factor``
(``[B]`` in the model) is declared ``dims: [1]`` with ``reshape: { shape: [ ] }``,
so clients send ``[B, 1]``; with ``max_batch_size: 0`` the model is a static
batch-1 graph and the dims are the model's full shapes.  ``parameters`` carry the
sharp-rt facts (precision, preset, resolution, Gaussians, version) that
:class:`~sharp_rt.scaleout.triton_client.TritonEngine` reads back from the server.
Triton's docs accept ``backend: "tensorrt"`` or the classic
``platform: "tensorrt_plan"`` for plans; this writer uses ``backend``.

Importing this module is light (no tritonclient, no torch).
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sharp_rt.core.errors import OutputError, SharpError
from sharp_rt.export.pipeline import Stage
from sharp_rt.scaleout.triton_config import (
    CONFIG_NAME,
    INSTANCE_KINDS,
    TRITON_BACKENDS,
    VERSION_DIR,
    WARMUP_DIR,
    WARMUP_DISPARITY_FILE,
    model_config,
    to_pbtxt,
)

if TYPE_CHECKING:
    from sharp_rt.export.pipeline import ExportResult

DEFAULT_REPOSITORY = Path("model_repository")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class TritonExportResult:
    """What :func:`export_triton` wrote."""

    repository: Path  # the model repository (tritonserver --model-repository)
    model_dir: Path  # <repository>/<model_name>
    config_path: Path  # <model_dir>/config.pbtxt
    export: ExportResult  # what export_engine wrote into the version directory


def _check_options(
    model_name: str, triton_backend: str, max_batch_size: int, instances: int, instance_kind: str
) -> None:
    if not _MODEL_NAME.match(model_name):
        raise SharpError(
            f"Invalid Triton model name {model_name!r}",
            hint="use letters, digits, '_', '-' and '.' (it becomes a directory name)",
        )
    if triton_backend not in TRITON_BACKENDS:
        raise SharpError(f"Unknown Triton backend {triton_backend!r}", hint="choose onnxruntime or tensorrt")
    if instance_kind not in INSTANCE_KINDS:
        raise SharpError(f"Unknown instance kind {instance_kind!r}", hint="choose gpu or cpu")
    if max_batch_size < 0 or instances < 1:
        raise SharpError(
            f"Invalid max_batch_size {max_batch_size} / instances {instances}",
            hint="max_batch_size >= 0 (0: a static batch-1 model), instances >= 1",
        )


def export_triton(
    checkpoint: str | Path | None = None,
    *,
    precision: str = "fp32",
    out_dir: str | Path = DEFAULT_REPOSITORY,
    model_name: str = "sharp",
    triton_backend: str = "onnxruntime",
    max_batch_size: int = 4,
    instances: int = 1,
    instance_kind: str = "gpu",
    queue_delay_us: int = 5000,
    validate: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda message: None,
    stage: Stage | None = None,
) -> TritonExportResult:
    """Export a SHARP checkpoint into the Triton model repository ``out_dir`` (see the module docstring).

    triton_backend: ``onnxruntime`` (model.onnx), or ``tensorrt`` (model.plan; needs TensorRT and a GPU,
    built for this GPU model and TensorRT version, which the server must share).
    max_batch_size: largest batch Triton's dynamic batcher forms; 0 exports a static batch-1 model.
    instances / instance_kind: ``instance_group`` count and ``gpu`` or ``cpu``.
    queue_delay_us: how long the dynamic batcher waits to fill a batch.
    An existing ``<out_dir>/<model_name>`` needs ``overwrite``; it is checked, with write
    access, before the checkpoint is read.  ``log`` / ``stage``: as for ``export_engine``.
    User errors raise :class:`SharpError`.
    """
    from sharp_rt.core.atomic import check_writable, write_atomic
    from sharp_rt.export.pipeline import export_engine

    _check_options(model_name, triton_backend, max_batch_size, instances, instance_kind)
    if triton_backend == "tensorrt":
        from sharp_rt.engines.tensorrt_engine import tensorrt_environment

        tensorrt_environment()  # one-line error without TensorRT or a GPU, before touching the repository
    repository = Path(out_dir)
    model_dir = repository / model_name
    config_path = model_dir / CONFIG_NAME
    if model_dir.exists() and any(model_dir.iterdir()) and not overwrite:
        raise OutputError(
            f"{repository} already holds a Triton model {model_name!r} ({model_dir})",
            hint="pass --overwrite to replace it, or choose another --model-name / -o",
        )
    check_writable(model_dir)
    config_path.unlink(missing_ok=True)  # no config may describe files that are being replaced
    result = export_engine(
        checkpoint,
        precision=precision,
        target="tensorrt" if triton_backend == "tensorrt" else "onnx",
        out_dir=model_dir / VERSION_DIR,
        validate=validate,
        dynamic_batch=max_batch_size > 0,
        max_batch=max(max_batch_size, 1),
        overwrite=overwrite,
        log=log,
        stage=stage,
    )
    (model_dir / WARMUP_DIR).mkdir(exist_ok=True)
    write_atomic(model_dir / WARMUP_DIR / WARMUP_DISPARITY_FILE, struct.pack("<f", 1.0), overwrite=True)
    config = model_config(
        result.manifest,
        model_name=model_name,
        triton_backend=triton_backend,
        max_batch_size=max_batch_size,
        instances=instances,
        instance_kind=instance_kind,
        queue_delay_us=queue_delay_us,
    )
    write_atomic(config_path, (to_pbtxt(config) + "\n").encode("utf-8"), overwrite=True)
    return TritonExportResult(repository, model_dir, config_path, result)


def tritonserver_command(repository: str | Path) -> str:
    """The command line that serves ``repository`` with a local ``tritonserver``."""
    return f"tritonserver --model-repository={Path(repository).resolve()}"
