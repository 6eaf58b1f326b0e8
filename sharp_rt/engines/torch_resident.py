"""The torch engine's device-resident path: photo pixels in, metric Gaussians out, one copy back.

```
run = launch(engine, pixels, f_px)  # upload uint8 [H, W, 3]; resize, network, unprojection queued
count, packed = run.wait()          # the device finishes: NaN/inf count, [N, 14] float32 host copy
run.gaussians(packed)               # metric Gaussians: views of that host array
run.seconds()                       # upload, preprocess, inference, unproject (s): CUDA events on CUDA
```

On CUDA the work :func:`launch` queues runs asynchronously: ``Predictor.predict_many`` writes
the previous image's output while the device computes this one, and only :meth:`DeviceRun.wait`
blocks.  Nothing between :func:`launch` and :meth:`DeviceRun.wait` synchronizes the device (no
host -> device copy: the unprojection's scales are Python floats).  On a CPU device the same
calls run synchronously; ``tests/test_device_resident.py`` checks there that the Gaussians equal
the host path's (numpy :mod:`sharp_rt.runtime.preprocess` and :mod:`sharp_rt.runtime.unproject`).

``runtime/`` stays torch-free, so the twins of its preprocessing (:func:`preprocess_tensor`) and
unprojection (:mod:`sharp_rt.engines.torch_unproject`) live in this layer.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sharp_rt.engines.base import OUTPUT_NAMES
from sharp_rt.engines.torch_engine import TorchEngine
from sharp_rt.engines.torch_unproject import gaussians_from_packed, pack_metric
from sharp_rt.runtime.gaussians import Gaussians


def preprocess_tensor(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """The torch twin of :func:`sharp_rt.runtime.preprocess.preprocess`, on the pixels' device.

    pixels: uint8 [H, W, 3] (RGB).  Returns float32 [1, 3, size, size] in [0, 1], contiguous
    (the layout the engine was compiled for: Dynamo guards on strides).  ml-sharp's
    ``F.interpolate(x / 255, (size, size), mode="bilinear", align_corners=True)``; equal to the
    numpy version within 1e-6 (float32 rounding; ``tests/test_device_resident.py``).  Raises
    ValueError for another dtype or shape.
    """
    if pixels.dtype != torch.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected RGB uint8 pixels [H, W, 3], got {pixels.dtype} {list(pixels.shape)}")
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    image = pixels.permute(2, 0, 1).contiguous()[None].to(torch.float32) / 255.0  # [1, 3, H, W]
    resized = torch.nn.functional.interpolate(image, (size, size), mode="bilinear", align_corners=True)
    return resized.contiguous()


class _Marks:
    """Stage boundaries: CUDA events on CUDA (read after the device finished), else perf_counter."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.points: list[tuple[str, object]] = []

    def mark(self, stage: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append((stage, event))
        else:
            self.points.append((stage, time.perf_counter()))

    def seconds(self) -> dict[str, float]:
        """Map each stage to the seconds between its mark and the previous one (after the device finished)."""
        out: dict[str, float] = {}
        for (_, before), (stage, after) in zip(self.points, self.points[1:], strict=False):
            if self.cuda:
                out[stage] = before.elapsed_time(after) / 1000.0  # type: ignore[union-attr]
            else:
                out[stage] = after - before  # type: ignore[operator]
        return out


class DeviceRun:
    """One image's device work, queued by :func:`launch`; valid until the engine runs again."""

    def __init__(
        self,
        outputs: dict[str, torch.Tensor],
        packed: torch.Tensor,
        nonfinite: torch.Tensor,
        f_px: float,
        image_size: tuple[int, int],
        marks: _Marks,
        upload_s: float,
    ) -> None:
        self.outputs = outputs  # NDC, batch dim dropped, on the device
        self.packed = packed  # [N, 14] float32 metric, on the device
        self.nonfinite = nonfinite  # 0-d int64: NaN/inf values in the outputs
        self.f_px = f_px
        self.image_size = image_size
        self._marks = marks
        self._upload_s = upload_s
        self._copy_s = 0.0

    def wait(self) -> tuple[int, np.ndarray]:
        """Block until the device is done; the NaN/inf count of the outputs and the host [N, 14] array."""
        count = int(self.nonfinite)  # synchronizes
        started = time.perf_counter()
        host = self.packed.cpu().numpy()  # the one device -> host copy
        self._copy_s = time.perf_counter() - started
        return count, host

    def host_outputs(self) -> dict[str, np.ndarray]:
        """The NDC outputs copied to the host as float32 (for the NaN/inf report only)."""
        return {name: value.float().cpu().numpy() for name, value in self.outputs.items()}

    def gaussians(self, host: np.ndarray) -> Gaussians:
        """Metric, linear-RGB Gaussians (views of ``host``, the array :meth:`wait` returned)."""
        return gaussians_from_packed(host, self.f_px, self.image_size)

    def seconds(self) -> dict[str, float]:
        """Seconds of upload (host wall), preprocess, inference, unproject (device time + the copy back)."""
        stages = self._marks.seconds()
        stages["unproject"] = stages.get("unproject", 0.0) + self._copy_s
        return {"upload": self._upload_s, **stages}


def launch(engine: TorchEngine, pixels: np.ndarray, f_px: float) -> DeviceRun:
    """Queue one photo's resize, network and unprojection on ``engine``'s device.

    pixels: uint8 [H, W, 3] (the decoded photo); f_px: its focal length in pixels.  The upload
    is the only synchronous step on CUDA.  Raises ValueError for bad pixels or focal length,
    and what the network raises (e.g. ``torch.OutOfMemoryError``).
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected RGB uint8 pixels [H, W, 3], got {pixels.dtype} {list(pixels.shape)}")
    height, width = pixels.shape[:2]
    if not f_px > 0:
        raise ValueError(f"need f_px > 0, got {f_px}")
    if not pixels.flags.writeable or not pixels.flags.c_contiguous:
        pixels = np.array(pixels, order="C")  # torch.from_numpy wants a writable, contiguous array
    device = engine.info.device
    with torch.inference_mode():
        started = time.perf_counter()
        uploaded = torch.from_numpy(pixels).to(device)
        upload_s = time.perf_counter() - started
        marks = _Marks(device)
        marks.mark("start")
        image = preprocess_tensor(uploaded, engine.info.resolution)
        factor = torch.full((1,), float(f_px) / width, dtype=torch.float32, device=device)
        marks.mark("preprocess")
        network = engine.forward(image, factor)
        outputs = {name: getattr(network, name)[0] for name in OUTPUT_NAMES}
        marks.mark("inference")
        nonfinite = sum(torch.count_nonzero(~torch.isfinite(value)) for value in outputs.values())
        packed = pack_metric(outputs, float(f_px), (width, height))
        marks.mark("unproject")
    return DeviceRun(outputs, packed, nonfinite, float(f_px), (width, height), marks, upload_s)
