"""One command for a GPU machine: parity, speed and rendering of sharp-rt's torch-native CUDA path.

    python benchmarks/gpu_suite.py [--device cuda|cpu] [--preset sharp|tiny1536|tiny] [--out DIR]

What it does (each step is timed; a step whose optional piece is missing or that does not
fit the time budget is skipped with the reason, and the rest goes on; on CUDA in this order,
on CPU the cheap steps 5 and 6 come first):

1. environment: GPU, driver, CUDA, torch, Triton, timm, onnx(runtime), gsplat, CPU, load;
   on CUDA it starts building gsplat's CUDA kernels (JIT, nvcc) in a background process.
2. weights: synthetic full-model weights of ``--preset`` drawn on the device (the roles and
   scales of ``sharp_ref.synthetic``, normals from torch's generator on the device), saved
   as a local checkpoint; on CUDA the ONNX step starts on the CPU in a background process.
3. reference: ``sharp_ref`` fp32 eager (TF32 off) on the 2 photos (tests/data/coffee.png,
   chelsea.png).
4. variants (eager-fp16, eager-bf16, compiled-fp16, compiled-bf16 by default, eager-fp32 on
   request with torch's default TF32 settings; fp16 needs CUDA): each
   is loaded from the checkpoint into ``TorchEngine`` (``compile=True``: torch.compile,
   Inductor + CUDA graphs), and measured:
   * cold start: checkpoint load + engine + first photo to a written PLY (compiling included;
     in this process, so the CUDA context is already up);
   * parity against the fp32 reference on both photos (``sharp_rt.export.validate.compare_outputs``
     with that precision's tolerance);
   * warm end to end, photo file to written PLY (decode, preprocess, network, copy back,
     unprojection, PLY write): median of ``--repeats`` (5 on CUDA, 2 on CPU) by CUDA events
     (perf_counter on CPU), and per stage; the network alone (``TorchEngine.forward`` on
     device tensors): median of ``--repeats``.
5. render: a SHARP-sized scene (1,179,648 Gaussians, ``benchmarks/render.py``), 8 frames of
   the default trajectory at 512x512 with gsplat and with the portable rasterizer on the
   device: setup, time per frame (median), and the PSNR of the portable frames against gsplat.
6. timm: sharp-rt's ViT-L/16 (384 px) against timm's VisionTransformer on the device.
7. onnx: ``sharp-rt export --precision fp16`` of the same weights with validation through
   ONNX Runtime on the CPU (parity only; its timings are the CPU's).

It writes ``gpu_suite.json`` (everything) and ``gpu_suite.md`` (the tables, with the GPU goals
of docs/benchmarks.md as verdicts: time to 3D <= 0.5 s, network fp16 <= 60 ms, portable rasterizer
>= 30 fps at 512x512 on 1.18 M Gaussians within 35 dB PSNR of gsplat) into ``--out``.  Exit
status 0, or 1 when a step failed or a parity check failed.  Budget: ``--budget-s`` (default
450 s on CUDA, so that the whole run stays under 8 minutes; 840 s on CPU).

On the GPU machine (Python 3.12, CUDA torch with Triton, nvcc, timm, onnx, onnxruntime;
nothing is fetched), from the repository root, with the carried ``.whl`` folder::

    python3 benchmarks/gpu_suite.py --wheels .whl --out gpu-suite-results

``--wheels DIR`` installs, from DIR only (``pip install --no-index --no-deps --target``
``/tmp/sharp-rt-site``, put first on ``sys.path``), the wheels whose top-level modules do not
import on that machine, so nothing installed there is shadowed; ninja's binary goes on PATH
for gsplat's build.  Prepare the folder in the checkout (git ignores it; 37 MiB with these
pins, the versions the test suite runs with; numpy and Pillow are there in case the machine
lacks them) and copy it along with the checkout::

    echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl gsplat==1.5.3 ninja==1.13.2 rich==15.0.0 \\
        pygments==2.21.0 markdown-it-py==4.3.0 mdurl==0.1.2 packaging==26.4 plyfile==1.1.5 \\
        pillow==13.0.0 numpy==2.4.6 onnxscript==0.7.2 onnx-ir==1.1.0 ml-dtypes==0.5.4 \\
        typing-extensions==4.16.0

(gsplat is a source wheel, 6.5 MB: its CUDA kernels compile on first use, in the background
from step 1, into /tmp/sharp-rt-torch-extensions, kept for reruns on the same machine.)

The CPU dry run (``--device cpu --preset tiny1536``) runs the same code and writes the same
files; the CUDA-only pieces (fp16, CUDA events, gsplat) are skipped with their reasons and
the goals read "not applicable".  ``tests/test_gpu_suite.py`` runs a small dry run in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent
PHOTOS = (ROOT / "tests" / "data" / "coffee.png", ROOT / "tests" / "data" / "chelsea.png")
SITE = Path(tempfile.gettempdir()) / "sharp-rt-site"
EXTENSIONS = Path(tempfile.gettempdir()) / "sharp-rt-torch-extensions"
VARIANTS = ("eager-fp16", "eager-bf16", "compiled-fp16", "compiled-bf16", "eager-fp32", "compiled-fp32")
DEFAULT_VARIANTS = VARIANTS[:4]
GOALS = {
    "time_to_3d_s": 0.5,  # photo to written PLY, warm, on an H100/H200
    "network_fp16_ms": 60.0,  # 2x the compute floor: 21.5 TFLOP at ~790 TFLOP/s ~ 27 ms
    "portable_fps": 30.0,  # 512x512, 1.18 M Gaussians
    "portable_psnr_db": 35.0,  # against gsplat
}
REQUIRED = ("torch", "numpy", "PIL", "plyfile")


# --- carried wheels -------------------------------------------------------------------------------------


def wheel_modules(wheel: Path) -> set[str]:
    """Top-level import names a wheel installs (its top_level.txt, else its RECORD's first path parts)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        if top_level:
            return {line.strip() for line in archive.read(top_level[0]).decode().splitlines() if line.strip()}
    parts = {name.split("/")[0].removesuffix(".py") for name in names}
    return {part for part in parts if part.isidentifier()}  # drops *.dist-info, *.data, *.libs


def _use_site(target: Path) -> None:
    """Put ``target`` (a pip --target folder) first on sys.path and PYTHONPATH, its bin/ on PATH."""
    if not target.is_dir() or str(target) in sys.path:
        return
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    if (target / "bin").is_dir():  # ninja's binary, for gsplat's build
        os.environ["PATH"] = f"{target / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    importlib.invalidate_caches()


def install_missing_wheels(folder: Path, target: Path = SITE) -> list[str]:
    """Install (no index, no deps) the wheels of ``folder`` whose modules do not import; return them."""
    _use_site(target)  # a rerun finds what an earlier run installed
    missing = [wheel for wheel in sorted(folder.glob("*.whl")) if not any(map(have, wheel_modules(wheel)))]
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
             "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, missing)],
            check=True,
        )  # fmt: skip
        _use_site(target)
    return [wheel.name for wheel in missing]


# --- small helpers --------------------------------------------------------------------------------------


class SkipStepError(Exception):
    """A step cannot run here; the message is the reason."""


def have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version_of(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception as error:  # absent, or broken (e.g. timm without a matching torchvision)
        return None if isinstance(error, ModuleNotFoundError) else f"broken: {type(error).__name__}"


def command_output(*args: str) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


class Clock:
    """Elapsed milliseconds of a block: CUDA events on CUDA (on the current stream), else perf_counter."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    @contextlib.contextmanager
    def measure(self, into: list[float]):
        import torch

        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            into.append(start.elapsed_time(end))
        else:
            started = time.perf_counter()
            yield
            into.append((time.perf_counter() - started) * 1000.0)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


# --- weights --------------------------------------------------------------------------------------------


def synthetic_state(config, seed: int, device: str) -> dict:
    """Synthetic weights drawn on ``device``: the roles and scales of ``sharp_ref.synthetic`` (docstring
    table), standard normals from a torch generator seeded per key with ``crc32(key) ^ seed``."""
    import zlib

    import torch

    from sharp_rt.sharp_ref.predictor import build_predictor

    state = {}
    generator = torch.Generator(device=device)
    for key, meta in build_predictor(config, device="meta").state_dict().items():
        shape = tuple(meta.shape)
        generator.manual_seed(zlib.crc32(key.encode("utf-8")) ^ seed)
        x = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        if key.endswith("monodepth_predictor.head.4.bias"):
            x = 1.0 + 0.02 * x
        elif key.endswith(("pos_embed", "cls_token")):
            x = 0.02 * x
        elif len(shape) == 1 and key.endswith(".weight"):
            x = 1.0 + 0.1 * x
        elif key.endswith(".gamma"):
            x = 0.1 * x
        elif len(shape) == 1:
            x = 0.02 * x
        else:
            x = x / math.sqrt(math.prod(shape[1:]))
        state[key] = x
    return state


# --- the suite ------------------------------------------------------------------------------------------


class Suite:
    """Runs the steps, keeps their results, writes the JSON and the markdown."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.cuda = args.device == "cuda"
        self.started = time.monotonic()
        self.deadline = self.started + args.budget_s
        self.work = Path(tempfile.mkdtemp(prefix="sharp-rt-gpu-suite-"))
        self.results: dict[str, Any] = {
            "suite": "sharp-rt benchmarks/gpu_suite.py",
            "format_version": 1,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "steps": {},
        }
        self.children: dict[str, subprocess.Popen] = {}
        self.reference: dict[str, dict] = {}  # photo name -> fp32 outputs
        self.clock = Clock(args.device)

    # - plumbing -

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, function: Callable[[], dict | None], needs_s: float = 20.0) -> dict:
        """Run one step: ok (its result), skipped (reason) or failed (error); never raises."""
        record: dict[str, Any]
        started = time.perf_counter()
        if name not in self.args.steps and name.split(":")[0] not in self.args.steps:
            record = {"status": "skipped", "reason": "not selected (--steps)"}
        elif self.left() < needs_s:
            record = {
                "status": "skipped",
                "reason": f"time budget: {self.left():.0f} s left, needs ~{needs_s:.0f} s",
            }
        else:
            print(f"[{time.monotonic() - self.started:6.1f} s] {name} ...", flush=True)
            try:
                record = {"status": "ok", **(function() or {})}
            except SkipStepError as reason:
                record = {"status": "skipped", "reason": str(reason)}
            except Exception as error:
                record = {
                    "status": "failed",
                    "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                    "traceback": traceback.format_exc()[-3000:],
                }
        record["seconds"] = round(time.perf_counter() - started, 2)
        if record["status"] != "ok":
            print(f"    {record['status']}: {record.get('reason') or record.get('error')}", flush=True)
        self.results["steps"][name] = record
        return record

    # - 1. environment -

    def environment(self) -> dict:
        import torch

        env: dict[str, Any] = {
            "date": datetime.date.today().isoformat(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "installed_from_wheels": self.args.installed_wheels,
        }
        for module in ("numpy", "triton", "timm", "onnx", "onnxscript", "onnxruntime", "gsplat", "plyfile"):
            env[module] = version_of(module)
        env["nvcc"] = (command_output("nvcc", "--version") or "").splitlines()[-1:] or None
        if self.cuda:
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda, but torch sees no CUDA device")
            props = torch.cuda.get_device_properties(0)
            env.update(
                gpu=props.name,
                compute_capability=f"{props.major}.{props.minor}",
                gpu_memory_gib=round(props.total_memory / 2**30, 1),
                driver=command_output("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
            )
            self.start_gsplat_build(f"{props.major}.{props.minor}")
        self.results["environment"] = env
        return {}

    def start_gsplat_build(self, arch: str) -> None:
        """Compile gsplat's kernels in the background (JIT with nvcc), for the render step."""
        if not have("gsplat"):
            return
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(EXTENSIONS))  # this process loads the same build
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", arch)  # this GPU only: a shorter build
        env = {**os.environ, "MAX_JOBS": os.environ.get("MAX_JOBS", "8")}
        log = open(self.work / "gsplat_build.log", "w")  # closed when this process ends
        self.children["gsplat"] = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from gsplat.cuda._backend import _C; assert _C is not None, 'no gsplat build'",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.gsplat_started = time.monotonic()

    # - 2. weights -

    def weights(self) -> dict:
        import torch

        from sharp_rt.sharp_ref import get_config

        self.config = get_config(self.args.preset)
        started = time.perf_counter()
        state = synthetic_state(self.config, self.args.seed, self.device)
        parameters = sum(value.numel() for value in state.values())
        if self.cuda:
            torch.cuda.synchronize()
        drawn = time.perf_counter() - started
        self.checkpoint = self.work / f"{self.args.preset}-synthetic.pt"
        started = time.perf_counter()
        torch.save({key: value.cpu() for key, value in state.items()}, self.checkpoint)
        saved = time.perf_counter() - started
        del state
        if self.cuda and "onnx" in self.args.steps:
            self.start_onnx_export()
        return {
            "preset": self.config.name,
            "parameters": parameters,
            "resolution": self.config.internal_resolution,
            "gaussians": self.config.num_gaussians,
            "draw_seconds": round(drawn, 2),
            "save_seconds": round(saved, 2),
            "checkpoint_bytes": self.checkpoint.stat().st_size,
        }

    # - 3. reference and 4. variants -

    def photo_inputs(self):
        """(name, path, image [1,3,S,S], disparity factor [1]) of each photo."""
        import numpy as np

        from sharp_rt.runtime.image_io import load_image
        from sharp_rt.runtime.preprocess import preprocess

        inputs = []
        for path in PHOTOS:
            loaded = load_image(path)
            factor = np.array([loaded.f_px / loaded.width], dtype=np.float32)
            inputs.append(
                (path.stem, path, preprocess(loaded.image, self.config.internal_resolution), factor)
            )
        return inputs

    def open_engine(self, precision: str, compile: bool):
        from sharp_rt.engines.torch_engine import TorchEngine
        from sharp_rt.sharp_ref import load_checkpoint

        return TorchEngine(load_checkpoint(self.checkpoint), self.device, precision, compile=compile)

    def reference_step(self) -> dict:
        from sharp_rt.export.aoti import full_fp32

        with full_fp32():
            engine = self.open_engine("fp32", compile=False)
            try:
                for name, _, image, factor in self.photo_inputs():
                    self.reference[name] = engine.run(image, factor)
            finally:
                engine.close()
        return {"photos": list(self.reference), "tf32": False}

    def variant(self, name: str) -> dict:
        """Cold start, parity on the photos, warm end-to-end and network timings of one variant."""
        import numpy as np

        from sharp_rt.export.validate import TOLERANCES, compare_outputs
        from sharp_rt.predict.predictor import Predictor, unproject_outputs
        from sharp_rt.runtime.ply import write_ply

        kind, precision = name.split("-")
        compile = kind == "compiled"
        if precision == "fp16" and not self.cuda:
            raise SkipStepError("fp16 runs on CUDA only (TorchEngine refuses fp16 on CPU)")
        if compile and self.cuda and not have("triton"):
            raise SkipStepError("torch.compile on CUDA needs Triton, which is not installed")
        if not self.reference:
            raise SkipStepError("no fp32 reference (the reference step did not run)")
        photos = self.photo_inputs()
        ply = self.work / f"{name}.ply"
        # Cold: checkpoint -> engine -> first photo written as PLY (compiling, for compiled variants);
        # its network outputs are also the first photo's parity check.
        started = time.perf_counter()
        engine = self.open_engine(precision, compile)
        predictor = Predictor(engine)
        prepared = predictor.prepare(PHOTOS[0])
        first = engine.run(prepared.image, np.array([prepared.f_px / prepared.width], np.float32))
        gaussians = unproject_outputs(
            {k: v[0] for k, v in first.items()}, prepared.f_px, prepared.width, prepared.height
        )
        write_ply(gaussians, ply, overwrite=True)
        cold = time.perf_counter() - started
        try:
            parity = {}
            for photo, _, image, factor in photos:
                outputs = first if photo == PHOTOS[0].stem else engine.run(image, factor)
                result = compare_outputs(outputs, self.reference[photo], precision)
                parity[photo] = parity_summary(result)
            end_to_end: list[float] = []
            wall: list[float] = []
            stages: dict[str, list[float]] = {}
            for _ in range(self.args.repeats):
                began = time.perf_counter()
                with self.clock.measure(end_to_end):
                    prepared = predictor.prepare(PHOTOS[0])
                    gaussians, seconds = predictor.infer(prepared)
                    t = time.perf_counter()
                    write_ply(gaussians, ply, overwrite=True)
                wall.append((time.perf_counter() - began) * 1000.0)
                for stage, value in {**prepared.seconds, **seconds, "write": time.perf_counter() - t}.items():
                    stages.setdefault(stage, []).append(value * 1000.0)
            network = self.network_times(engine, photos[0][2], photos[0][3])
        finally:
            predictor.close()
            ply.unlink(missing_ok=True)
            self.free_memory()
        return {
            "precision": precision,
            "compiled": compile,
            "compile_mode": engine.info.details.get("compile_mode"),
            "tolerance": TOLERANCES[precision].to_json(),
            "cold_start_s": round(cold, 2),
            "parity": parity,
            "parity_passed": all(p["status"] == "passed" for p in parity.values()),
            "end_to_end_ms_median": median(end_to_end),
            "end_to_end_ms": [round(v, 2) for v in end_to_end],
            "end_to_end_wall_ms_median": median(wall),
            "stages_ms_median": {stage: median(values) for stage, values in stages.items()},
            "network_ms_median": median(network),
            "network_ms": [round(v, 2) for v in network],
            "timer": "CUDA events" if self.cuda else "perf_counter",
            "gaussians_per_image": int(np.prod(self.reference[photos[0][0]]["opacities"].shape)),
        }

    def network_times(self, engine, image, factor) -> list[float]:
        """The network alone on device tensors: ``repeats`` timed runs (compiled: after an untimed run,
        which records the CUDA graph for device tensors)."""
        import torch

        x = torch.from_numpy(image).to(self.device)
        f = torch.from_numpy(factor).to(self.device)
        if engine.compiled:
            engine.forward(x, f)
        times: list[float] = []
        for _ in range(self.args.repeats):
            with self.clock.measure(times):
                engine.forward(x, f)
        return times

    def free_memory(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()

    # - 5. render -

    def render(self) -> dict:
        import numpy as np

        sys.path.insert(0, str(BENCHMARKS))
        from render import photo_scene

        from sharp_rt.render import Renderer, trajectory

        scene = photo_scene(side=self.args.scene_side)
        size = self.args.render_size
        video = trajectory(scene, "rotate_forward", 60, (size, size))
        cameras = [video[round(i)] for i in np.linspace(0, len(video) - 1, self.args.frames, endpoint=False)]
        result: dict[str, Any] = {"gaussians": len(scene), "size": f"{size}x{size}", "frames": len(cameras)}
        images: dict[str, list[np.ndarray]] = {}
        backends = ["torch"]
        gsplat_reason = self.gsplat_ready()
        if gsplat_reason is None:
            backends.insert(0, "gsplat")
        else:
            result["gsplat_skipped"] = gsplat_reason
        for backend in backends:
            started = time.perf_counter()
            renderer = Renderer(scene, backend=backend, device=self.device)
            setup = time.perf_counter() - started
            started = time.perf_counter()
            renderer.render(cameras[0])  # warm-up: work buffers, kernels
            first = time.perf_counter() - started
            times: list[float] = []
            for camera in cameras:
                with self.clock.measure(times):
                    renderer.render_linear(camera)
            if "gsplat" in backends:  # images for the PSNR of the portable frames against gsplat
                images[backend] = [renderer.render(camera).image for camera in cameras]
            ms = median(times)
            result[backend] = {
                "setup_s": round(setup, 3),
                "first_frame_s": round(first, 3),
                "ms_per_frame_median": ms,
                "fps": round(1000.0 / ms, 2) if ms else None,
                "ms_per_frame": [round(t, 2) for t in times],
            }
            del renderer
            self.free_memory()
        if "gsplat" in images:
            psnr = [_psnr(a, b) for a, b in zip(images["torch"], images["gsplat"], strict=True)]
            result["torch"]["psnr_vs_gsplat_db"] = {
                "min": round(min(psnr), 2),
                "mean": round(float(np.mean(psnr)), 2),
            }
        return result

    def gsplat_ready(self) -> str | None:
        """None when gsplat can render here, else why not (waits for the background build)."""
        if not self.cuda:
            return "gsplat needs CUDA"
        if "gsplat" not in self.children:
            return "gsplat is not installed (carry its wheel: see the module docstring)"
        build = self.children["gsplat"]
        try:
            build.wait(timeout=max(1.0, self.left() - 60.0))
        except subprocess.TimeoutExpired:
            build.kill()
            return "gsplat's CUDA build did not finish within the time budget"
        log = (self.work / "gsplat_build.log").read_text(errors="replace").strip().splitlines()
        self.results.setdefault("environment", {})["gsplat_build_s"] = round(
            time.monotonic() - self.gsplat_started, 1
        )
        if build.returncode != 0:
            return f"gsplat's CUDA build failed: {(log or ['no output'])[-1][:300]}"
        return None

    # - 6. timm -

    def timm(self) -> dict:
        sys.path.insert(0, str(BENCHMARKS))
        from vit_timm_check import TimmUnavailableError, compare_vit_with_timm

        from sharp_rt.sharp_ref.config import ViTConfig

        config = ViTConfig() if self.args.preset == "sharp" else ViTConfig(embed_dim=64, depth=4, num_heads=4)
        try:
            result = compare_vit_with_timm(config, device=self.device, batch=2, taps=(1, config.depth - 1))
        except TimmUnavailableError as error:
            raise SkipStepError(str(error)) from None
        summary = {k: result[k] for k in ("timm", "device", "grid_max_abs", "grid_max_rel", "taps_max_abs")}
        summary["vit"] = f"{config.embed_dim}-wide, {config.depth} blocks, {config.img_size} px"
        summary["passed"] = result["grid_max_rel"] < 1e-4
        return summary

    # - 7. onnx -

    def onnx_missing(self) -> str | None:
        absent = [m for m in ("onnx", "onnxscript", "onnxruntime") if not have(m)]
        return f"{', '.join(absent)} not installed (the ONNX export needs them)" if absent else None

    def start_onnx_export(self) -> None:
        if self.onnx_missing():
            return
        threads = str(max(1, (os.cpu_count() or 2) // 3)) if self.cuda else str(os.cpu_count() or 1)
        log = open(self.work / "onnx_export.log", "w")  # closed when this process ends
        self.children["onnx"] = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--onnx-child",
                str(self.checkpoint),
                str(self.work / "onnx-fp16"),
                threads,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # the CPU only: parity, not speed
        )

    def onnx(self) -> dict:
        reason = self.onnx_missing()
        if reason:
            raise SkipStepError(reason)
        if "onnx" not in self.children:
            self.start_onnx_export()
        child = self.children["onnx"]
        try:
            child.wait(timeout=max(1.0, self.left()))
        except subprocess.TimeoutExpired:
            child.kill()
            raise SkipStepError("the ONNX export did not finish within the time budget") from None
        lines = (self.work / "onnx_export.log").read_text(errors="replace").strip().splitlines()
        summary = [line for line in lines if line.startswith("{")]
        if child.returncode != 0 or not summary:
            raise RuntimeError(f"the ONNX export failed: {(lines or ['no output'])[-1][:300]}")
        return json.loads(summary[-1])

    # - the run -

    def run(self) -> int:
        self.step("environment", self.environment, needs_s=0)
        self.step("weights", self.weights, needs_s=0)
        weights = self.results["steps"]["weights"]["status"] == "ok"
        if not self.cuda:  # the cheap steps first; on CUDA they wait for gsplat's build, so they come last
            self.step("timm", self.timm)
            self.step("render", self.render)
        if weights:
            self.step("reference", self.reference_step)
            for variant in self.args.variants:
                compiled = variant.startswith("compiled")
                needs = (
                    (90.0 if self.cuda else 240.0) if compiled else 30.0
                )  # compiling takes minutes on a CPU
                self.step(f"variant:{variant}", lambda v=variant: self.variant(v), needs_s=needs)
        if self.cuda:
            self.step("render", self.render)
            self.step("timm", self.timm)
        if weights:
            self.step("onnx", self.onnx, needs_s=10.0)  # last: it gets whatever time is left
        for child in self.children.values():
            if child.poll() is None:
                child.kill()
        environment = self.results.setdefault("environment", {})
        environment["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        self.results["wall_seconds"] = round(time.monotonic() - self.started, 1)
        self.results["goals"] = goals(self.results, self.args)
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_suite.json").write_text(json.dumps(self.results, indent=2) + "\n")
        (out / "gpu_suite.md").write_text(markdown(self.results) + "\n")
        shutil.rmtree(self.work, ignore_errors=True)
        print((out / "gpu_suite.md").read_text())
        steps = self.results["steps"].values()
        failed = any(s["status"] == "failed" for s in steps)
        parity_failed = any(s.get("parity_passed") is False for s in steps)
        onnx = self.results["steps"].get("onnx", {})
        return 1 if failed or parity_failed or onnx.get("validation") == "failed" else 0


def onnx_child(checkpoint: str, out: str, threads: str) -> int:
    """Background process: fp16 ONNX export of the suite's weights, validated by ONNX Runtime on the CPU."""
    import torch

    from sharp_rt.export.pipeline import export_engine

    torch.set_num_threads(int(threads))
    started = time.perf_counter()
    result = export_engine(checkpoint, precision="fp16", out_dir=out, overwrite=True, log=print)
    validation = result.manifest.validation
    print(
        json.dumps(
            {
                **{key: value for key, value in parity_summary(validation).items() if key != "status"},
                "validation": validation["status"],
                "runtime": validation.get("runtime"),
                "export_seconds": round(time.perf_counter() - started, 1),
                "validation_seconds": validation.get("seconds"),
                "threads": int(threads),
            }
        ),
        flush=True,
    )
    return 0


# --- report ---------------------------------------------------------------------------------------------


def parity_summary(result: dict) -> dict:
    """The parts of a ``compare_outputs`` result the report shows: status, errors, failures."""
    covariances, means = result["covariances"], result["outputs"]["mean_vectors"]
    return {
        "status": result["status"],
        "tolerance": result["tolerance"],
        "covariance_p99": covariances["p99"],
        "covariance_p99_9": covariances["p99_9"],
        "covariance_max": covariances["max"],
        "mean_vectors_max": means["max"],
        "colors_max": result["outputs"]["colors"]["max"],
        "opacities_max": result["outputs"]["opacities"]["max"],
        "nonfinite": sum(stats["nonfinite"] for stats in result["outputs"].values()),
        "failures": result["failures"],
    }


def _psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def goals(results: dict, args: argparse.Namespace) -> list[dict]:
    """The GPU goals with measured values and verdicts (they apply to --device cuda --preset sharp)."""
    steps = results["steps"]
    applies = args.device == "cuda" and args.preset == "sharp"
    why_not = "not applicable: " + (
        "a CPU dry run" if args.device != "cuda" else f"preset {args.preset}, not sharp"
    )

    def verdict(value, ok: bool) -> str:
        if not applies:
            return why_not
        return "not measured" if value is None else ("met" if ok else "missed")

    variants = {
        k.split(":", 1)[1]: v for k, v in steps.items() if k.startswith("variant:") and v["status"] == "ok"
    }
    e2e = [(v["end_to_end_ms_median"], k) for k, v in variants.items() if v.get("end_to_end_ms_median")]
    best = min(e2e) if e2e else (None, None)
    fp16 = [(v["network_ms_median"], k) for k, v in variants.items() if v["precision"] == "fp16"]
    net = min(fp16) if fp16 else (None, None)
    render = steps.get("render", {})
    fps = render.get("torch", {}).get("fps") if render.get("status") == "ok" else None
    psnr = (
        render.get("torch", {}).get("psnr_vs_gsplat_db", {}).get("min")
        if render.get("status") == "ok"
        else None
    )
    time_s = None if best[0] is None else best[0] / 1000.0
    return [
        {
            "goal": "time to 3D, photo to written PLY (warm)",
            "target": f"<= {GOALS['time_to_3d_s']} s",
            "measured": None if time_s is None else f"{time_s:.3f} s ({best[1]})",
            "verdict": verdict(time_s, time_s is not None and time_s <= GOALS["time_to_3d_s"]),
        },
        {
            "goal": "network in fp16",
            "target": f"<= {GOALS['network_fp16_ms']:.0f} ms",
            "measured": None if net[0] is None else f"{net[0]:.1f} ms ({net[1]})",
            "verdict": verdict(net[0], net[0] is not None and net[0] <= GOALS["network_fp16_ms"]),
        },
        {
            "goal": "portable rasterizer, 512x512, 1.18 M Gaussians",
            "target": f">= {GOALS['portable_fps']:.0f} fps, >= {GOALS['portable_psnr_db']:.0f} dB vs gsplat",
            "measured": None
            if fps is None
            else f"{fps} fps, " + (f"{psnr} dB" if psnr is not None else "no gsplat"),
            "verdict": verdict(
                None if fps is None or psnr is None else fps,
                fps is not None
                and psnr is not None
                and fps >= GOALS["portable_fps"]
                and psnr >= GOALS["portable_psnr_db"],
            ),
        },
    ]


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}e}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table; numeric columns are right-aligned by the caller's ``:`` in the header."""
    names = [name.rstrip(":") for name in header]
    align = ["---:" if name.endswith(":") else "---" for name in header]
    lines = [f"| {' | '.join(names)} |", f"| {' | '.join(align)} |"]
    return lines + [
        f"| {' | '.join(_fmt(cell) if not isinstance(cell, str) else cell for cell in row)} |" for row in rows
    ]


def _why(step: dict) -> str:
    return f"{step.get('status', 'not run')}: {step.get('reason') or step.get('error') or ''}".rstrip(": ")


def _environment_line(results: dict) -> str:
    env = results.get("environment", {})
    if env.get("gpu"):
        machine = (
            f"{env['gpu']} (compute {env['compute_capability']}, {env.get('gpu_memory_gib')} GiB, "
            f"driver {env.get('driver')})"
        )
    else:
        machine = f"CPU: {env.get('cpu')}, {env.get('cpu_count')} cores"
    return (
        f"{machine}; Python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
        f"Triton {env.get('triton')}, timm {env.get('timm')}, onnxruntime {env.get('onnxruntime')}, "
        f"gsplat {env.get('gsplat')}; load average {_load(env.get('load_average_start'))} -> "
        f"{_load(env.get('load_average_end'))}; wall time {results.get('wall_seconds')} s."
    )


def _variant_rows(steps: dict) -> list[list[Any]]:
    rows = []
    for name, step in steps.items():
        if not name.startswith("variant:"):
            continue
        variant = name.split(":", 1)[1]
        if step["status"] != "ok":
            rows.append([variant, _why(step), "", "", "", "", ""])
            continue
        stage = step["stages_ms_median"]
        decode = (stage.get("load") or 0.0) + (stage.get("preprocess") or 0.0)
        stages = " / ".join(
            _fmt(v) for v in (decode, stage.get("inference"), stage.get("unproject"), stage.get("write"))
        )
        parity = step["parity"].values()
        rows.append(
            [
                variant,
                step["cold_start_s"],
                step["end_to_end_ms_median"],
                step["network_ms_median"],
                stages,
                ", ".join(p["status"] for p in parity),
                ", ".join(f"{p['covariance_p99_9']:.1e} / {p['covariance_max']:.1e}" for p in parity),
            ]
        )
    return rows


def _render_rows(render: dict) -> list[list[Any]]:
    if render.get("status") != "ok":
        return [["–", _why(render), "", "", "", "", ""]]
    rows = []
    frame = f"{render['size']}, {render['gaussians']:,} Gaussians, {render['frames']} frames"
    for backend, label in (("gsplat", "gsplat"), ("torch", "portable (torch)")):
        if backend in render:
            row = render[backend]
            psnr = row.get("psnr_vs_gsplat_db")
            psnr_text = f"{psnr['min']} / {psnr['mean']}" if psnr else "–"
            rows.append(
                [
                    label,
                    frame,
                    row["setup_s"],
                    row["first_frame_s"],
                    row["ms_per_frame_median"],
                    row["fps"],
                    psnr_text,
                ]
            )
    if "gsplat_skipped" in render:
        rows.append(["gsplat", f"skipped: {render['gsplat_skipped']}", "", "", "", "", ""])
    return rows


def _check_rows(steps: dict) -> list[list[str]]:
    timm, onnx = steps.get("timm", {}), steps.get("onnx", {})
    if timm.get("status") == "ok":
        verdict = "passed" if timm["passed"] else "FAILED"
        timm_row = [
            f"ViT vs timm {timm['timm']} ({timm['vit']}, {timm['device']})",
            f"max abs {timm['grid_max_abs']:.1e}, max rel {timm['grid_max_rel']:.1e}: {verdict}",
        ]
    else:
        timm_row = ["ViT vs timm", _why(timm)]
    if onnx.get("status") == "ok":
        onnx_row = [
            f"fp16 ONNX via {onnx['runtime']}",
            f"{onnx['validation']}: covariance p99.9 {onnx['covariance_p99_9']:.1e}, max "
            f"{onnx['covariance_max']:.1e}; means max {onnx['mean_vectors_max']:.1e} (export + validation "
            f"{onnx['export_seconds']} s, {onnx['threads']} threads)",
        ]
    else:
        onnx_row = ["fp16 ONNX via ONNX Runtime (CPU)", _why(onnx)]
    return [timm_row, onnx_row]


def markdown(results: dict) -> str:
    """The tables of a run: environment, goals, variants (speed, parity), rendering, timm and ONNX."""
    steps, args = results["steps"], results["args"]
    goal_rows = [
        [g["goal"], g["target"], g["measured"] or "–", g["verdict"]] for g in results.get("goals", [])
    ]
    variant_header = [
        "variant", "cold start (s):", "end to end, warm (ms):", "network (ms):",
        "decode+preprocess / inference / unproject / write (ms)", "parity (coffee, chelsea)",
        "covariance rel. error p99.9 / max",
    ]  # fmt: skip
    render_header = [
        "renderer", "frame", "setup (s):", "first frame (s):", "per frame (ms, median):", "fps:",
        "PSNR vs gsplat, min / mean (dB)",
    ]  # fmt: skip
    others = [
        f"* {name}: {_why(step)}"
        for name, step in steps.items()
        if step["status"] != "ok" and name in ("environment", "weights", "reference")
    ]
    return "\n".join(
        [
            f"## sharp-rt GPU suite: {args['device']}, preset {args['preset']} ({results['started']})",
            "",
            _environment_line(results),
            "",
            *_table(["goal", "target", "measured", "verdict"], goal_rows),
            "",
            *_table(variant_header, _variant_rows(steps)),
            "",
            *_table(render_header, _render_rows(steps.get("render", {}))),
            "",
            *_table(["check", "result"], _check_rows(steps)),
            *(["", *others] if others else []),
        ]
    )


def _load(values) -> str:
    return "?" if not values else f"{values[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--onnx-child"]:
        sys.path.insert(0, str(ROOT))
        return onnx_child(*argv[1:4])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--preset", choices=("sharp", "tiny1536", "tiny"), default="sharp")
    parser.add_argument("--out", type=Path, default=Path("gpu-suite"), help="folder for gpu_suite.json / .md")
    parser.add_argument(
        "--wheels", type=Path, help="folder of carried wheels: install those whose modules are missing"
    )
    parser.add_argument("--budget-s", type=float, help="time budget (default: 450 on cuda, 840 on cpu)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    steps = ("reference", "variant", "render", "timm", "onnx")
    parser.add_argument(
        "--steps", nargs="+", default=list(steps), choices=steps, help="steps to run (+ environment, weights)"
    )
    parser.add_argument(
        "--repeats", type=int, help="warm runs per timing, median (default: 5 on cuda, 2 on cpu)"
    )
    parser.add_argument("--frames", type=int, default=8, help="frames per renderer")
    parser.add_argument("--render-size", type=int, default=512, help="square frame side, pixels")
    parser.add_argument(
        "--scene-side", type=int, default=768, help="render scene: 2 x side^2 Gaussians (768: 1.18 M)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights")
    args = parser.parse_args(argv)
    args.budget_s = args.budget_s or (450.0 if args.device == "cuda" else 840.0)
    args.repeats = args.repeats or (5 if args.device == "cuda" else 2)
    args.steps = [*args.steps, "environment", "weights"]
    args.installed_wheels = install_missing_wheels(args.wheels) if args.wheels else []
    missing = [module for module in REQUIRED if not have(module)]
    if missing:
        print(
            f"error: {', '.join(missing)} cannot be imported; carry their wheels, pass --wheels (see above)"
        )
        return 2
    sys.path.insert(0, str(ROOT))
    return Suite(args).run()


if __name__ == "__main__":
    raise SystemExit(main())
