"""AOTInductor backend: runs an artifact's ``model.pt2`` (``sharp-rt export --target aoti``).

The package holds ahead-of-time compiled kernels (C++ on CPU, Triton/CUDA on
NVIDIA GPUs) and the weights of one precision for one device, with the engine
contract's I/O at batch 1; ``torch._inductor.aoti_load_package`` loads it
without recompiling.  The same file runs from C++ without Python
(``cpp/examples/predict_ppm.cpp``, docs/cpp.md).

A package only runs where it can: :func:`check_package_environment` compares
the manifest's ``aoti`` record (device, torch version, CUDA compute capability
or CPU vector ISA) with this machine and refuses a mismatch with a message to
re-export, instead of a crash in compiled code.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.contract import Manifest, Precision, open_manifest
from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import OUTPUT_NAMES, Engine, EngineInfo, artifact_info

REEXPORT_HINT = "re-export on this machine with `sharp-rt export --target aoti --overwrite`"


def _torch():
    try:
        import torch
    except ImportError:
        raise EngineError(
            "AOTInductor packages need PyTorch, which is not installed", hint="pip install 'sharp-rt[torch]'"
        ) from None
    return torch


def torch_minor(version: str) -> str:
    """``"2.11.0+cu130"`` -> ``"2.11"``: packages are tied to the PyTorch release that compiled them."""
    return ".".join(version.split("+")[0].split(".")[:2])


def aoti_environment(device: str) -> dict[str, str]:
    """What a package built here for ``device`` (``cpu`` / ``cuda``) depends on: torch, and GPU or CPU ISA."""
    torch = _torch()
    environment = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        if not torch.cuda.is_available():
            raise EngineError("No CUDA GPU is visible to torch", hint="use --device cpu")
        major, minor = torch.cuda.get_device_capability()
        environment.update(
            gpu_name=torch.cuda.get_device_name(),
            compute_capability=f"{major}.{minor}",
            cuda_version=str(torch.version.cuda),
        )
    else:
        from torch._inductor import cpu_vec_isa  # private, but the ISA a CPU package is compiled for

        environment["cpu_vec_isa"] = str(cpu_vec_isa.pick_vec_isa())
    return environment


def check_package_environment(recorded: Mapping[str, Any], package: str | Path = "model.pt2") -> None:
    """Raise :class:`EngineError` unless this machine can run a package built in ``recorded``."""
    torch = _torch()
    device = recorded.get("device")
    if torch_minor(str(recorded.get("torch"))) != torch_minor(torch.__version__):
        raise EngineError(
            f"{package} was compiled by PyTorch {recorded.get('torch')}; this is PyTorch {torch.__version__}",
            hint=REEXPORT_HINT,
        )
    if device == "cuda":
        current = aoti_environment("cuda")
        if current["compute_capability"] != recorded.get("compute_capability"):
            raise EngineError(
                f"{package} holds CUDA kernels for compute capability {recorded.get('compute_capability')} "
                f"({recorded.get('gpu_name')}); this GPU is {current['gpu_name']} "
                f"(compute {current['compute_capability']})",
                hint=REEXPORT_HINT,
            )
    elif device == "cpu":
        from torch._inductor import cpu_vec_isa

        supported = {str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()}
        needed = str(recorded.get("cpu_vec_isa"))
        if needed not in supported and needed not in ("", "None"):
            raise EngineError(
                f"{package} holds CPU kernels for {needed}, which this CPU lacks "
                f"(it has {', '.join(sorted(supported)) or 'none'})",
                hint=REEXPORT_HINT,
            )
    else:
        raise EngineError(f"{package}: unknown device {device!r} in the manifest", hint=REEXPORT_HINT)


class AotiEngine(Engine):
    """A loaded AOTInductor package: batch 1 per call (larger batches run image by image)."""

    def __init__(self, directory: str | Path | Manifest, *, precision: Precision | None = None) -> None:
        manifest = open_manifest(directory, precision=precision)
        if manifest.aoti_path is None or manifest.aoti is None:
            raise EngineError(
                f"{manifest.directory} has no AOTInductor package", hint="export with --target aoti"
            )
        check_package_environment(manifest.aoti, manifest.aoti_path)
        self.manifest = manifest
        device = str(manifest.aoti["device"])
        info = artifact_info(manifest, "aoti", device, torch=manifest.aoti.get("torch"))
        self._start(manifest.aoti_path, info)

    @classmethod
    def from_package(
        cls, package: str | Path, *, device: str, resolution: int, num_gaussians: int, precision: Precision
    ) -> AotiEngine:
        """Open a package file without a manifest (export-time validation of a fresh package)."""
        self = cls.__new__(cls)
        self.manifest = None
        info = EngineInfo("aoti", device, precision, resolution, num_gaussians, max_batch=None)
        self._start(Path(package), info)
        return self

    def _start(self, package: Path, info: EngineInfo) -> None:
        torch = _torch()
        started = time.perf_counter()
        try:
            self.model = torch._inductor.aoti_load_package(str(package))
        except Exception as error:  # torch raises RuntimeError and friends from C++
            raise EngineError(
                f"PyTorch cannot load the AOTInductor package {package}: {str(error).splitlines()[0]}",
                hint=REEXPORT_HINT,
            ) from None
        self._torch = torch
        info.details["startup_seconds"] = round(time.perf_counter() - started, 3)
        self.info = dataclasses.replace(info, max_batch=None)  # run() loops over the batch

    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (numpy float32)."""
        if self.model is None:
            raise EngineError("This AOTInductor engine was closed")
        torch = self._torch
        device = self.info.device
        results: list[dict[str, np.ndarray]] = []
        with torch.inference_mode():
            for index in range(image.shape[0]):
                inputs = (
                    torch.from_numpy(image[index : index + 1]).to(device),
                    torch.from_numpy(disparity_factor[index : index + 1]).to(device),
                )
                outputs = self.model(*inputs)
                results.append(
                    {n: t.float().cpu().numpy() for n, t in zip(OUTPUT_NAMES, outputs, strict=True)}
                )
        if len(results) == 1:
            return results[0]
        return {name: np.concatenate([r[name] for r in results]) for name in OUTPUT_NAMES}

    def close(self) -> None:
        """Drop the package (and free CUDA memory if it ran on a GPU)."""
        self.model = None
        if self.info.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
