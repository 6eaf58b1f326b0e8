"""One command for a GPU machine: parity, speed and rendering of sharp-rt's torch-native CUDA path.

    python benchmarks/gpu_suite.py [--device cuda|cpu] [--preset sharp|tiny1536|tiny] [--out DIR]
                                   [--wheels DIR] [--budget-s S]

Made for a GPU machine lent for one command of at most 10 minutes, with no network, whose
only way back is the folder ``$OUT``.  So the results survive anything:

* ``gpu_suite.json`` (everything) and ``gpu_suite.md`` (the tables) are rewritten atomically
  into ``--out`` (default: ``$OUT`` when set, else ``gpu-suite``) after every step, and while
  a variant runs, after each of its measures;
* SIGTERM / SIGINT and the hard deadline (``--budget-s`` + 20 s) are caught by a thread (the
  signals are blocked in every other thread, so a long CUDA or C++ call cannot delay it): it
  kills the running child's process group, records what the child had measured, writes both
  files and exits (143 for SIGTERM, 130 for SIGINT, 3 at the hard deadline);
* every model step runs in a child process in its own process group, with its own deadline
  (the part of the budget it may use): the fp32 reference, each variant (a torch.compile
  compile included), the ONNX export and gsplat's CUDA build.  At its deadline the group is
  killed (nvcc and ninja included) and the suite says so; the child's measures so far are
  kept (a variant that fails keeps what it measured; NaN during the timed loop keeps the
  parity results); the child's memory goes with it.

Steps, ordered by the value of their figures (the budget runs out at the end, not the start):

1. environment: GPU, driver, CUDA, torch, Triton, timm, onnx(runtime), gsplat, CPU, load, the
   Inductor cache (empty: compiles are cold).
2. inputs: synthetic full-model weights of ``--preset`` (the roles and scales of
   ``sharp_ref.synthetic``, drawn on the device), saved as a checkpoint (fsynced), and a
   12-megapixel JPEG made from ``tests/data/chelsea.png`` (4000x3000, upscaled, with noise).
3. reference: ``sharp_ref`` fp32 eager (TF32 off) on the 12 MP JPEG, coffee.png and chelsea.png.
4. variant eager-fp16 (CUDA only); 5. render (portable rasterizer: 8 frames at 512x512 of a
   1.18 M-Gaussian scene; on CUDA also with 16x its CPU-tuned work batches); 6. variant eager-bf16;
   7. variant compiled-fp16 (CUDA only); 8. timm; 9. variant compiled-bf16; 10. onnx;
   11. gsplat (only with a carried gsplat wheel and time left; after every timed step).

A variant (``TorchEngine``; compiled: ``torch.compile``, on CUDA ``reduce-overhead``, CUDA
graphs) measures, each result saved as soon as it exists:

* cold start: the checkpoint read from disk (its pages dropped from the page cache first with
  ``fsync`` + ``POSIX_FADV_DONTNEED``; on tmpfs it is labelled cached), engine, first photo
  to a written PLY (compiling included);
* parity against the fp32 reference on every photo (``compare_outputs``, that precision's
  export tolerances);
* warm photo file -> written PLY (decode, preprocess, network, copy back, unprojection, PLY
  write) on the 12 MP JPEG and on coffee.png: median of ``--repeats``, per stage;
* the device-resident path (torch only; ``Predictor(device_resident=True)``, the default on
  CUDA): decode on the host, one upload of the uint8 pixels, resize, network and unprojection
  (``engines/torch_resident.py``) on the device, one copy back, PLY write; per stage (device
  stages by CUDA events); and a folder run (``predict_many``: decode and write of the
  neighbours overlap the network), ms per image;
* the network alone (``TorchEngine.forward`` on device tensors); the Dynamo counters (graphs
  compiled, recompiles, graph breaks, CUDA-graph skips) after the cold start and at the end:
  a recompile during the timed runs shows there.

Nothing runs beside a timed step: the ONNX export and gsplat's build are steps of their own,
and each step records the suite's live children and the machine's load when it started.
CUDA timings use CUDA events, CPU ones ``perf_counter``.  Exit status 0, 1 when a step or a
parity check failed, 2 for a usage error.  Budget: ``--budget-s``, 420 s on CUDA (the command
then ends within ~7.5 minutes), 840 s on CPU.

On the GPU machine, from the repository root with the carried ``.whl`` folder (plyfile, to
read the written PLY files back; the torch path needs nothing else the machine lacks)::

    python3 benchmarks/gpu_suite.py --wheels .whl

``--wheels DIR`` installs, from DIR only (``pip install --no-index --no-deps --target``
``/tmp/sharp-rt-site``, put first on ``sys.path``), the wheels whose top-level modules do not
import on that machine, so nothing installed there is shadowed; a missing DIR is a warning.
docs/benchmarks.md ("GPU") has the exact command and how to fill ``.whl``.

The CPU dry run (``--device cpu --preset tiny1536`` or ``tiny``) runs the same code and writes
the same files; CUDA-only pieces are skipped with their reasons and the goals read
"not applicable".  ``tests/test_gpu_suite.py`` runs it with ``OUT`` set, and kills one with
SIGTERM halfway.
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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent
SMALL_PHOTOS = (ROOT / "tests" / "data" / "coffee.png", ROOT / "tests" / "data" / "chelsea.png")
BIG_PHOTO_SIZE = (4000, 3000)  # 12 MP, 4:3 like a phone's main camera
BIG_PHOTO_NAME = "photo-12mp.jpg"
SITE = Path(tempfile.gettempdir()) / "sharp-rt-site"
VARIANTS = ("eager-fp16", "eager-bf16", "compiled-fp16", "compiled-bf16", "eager-fp32", "compiled-fp32")
DEFAULT_VARIANTS = VARIANTS[:4]
STEPS = ("reference", "variant", "render", "timm", "onnx", "gsplat")
GOALS = {
    "time_to_3d_s": 0.25,  # 12 MP JPEG to written PLY, warm, on an H100/H200 (issue 21)
    "network_fp16_ms": 60.0,  # 2x the compute floor: 21.5 TFLOP at ~790 TFLOP/s ~ 27 ms
    "portable_fps": 30.0,  # 512x512, 1.18 M Gaussians
}
REQUIRED = ("torch", "numpy", "PIL")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
HARD_GRACE_S = 20.0  # after the budget: the guard thread saves and exits


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


class StepFailedError(Exception):
    """A step failed after measuring something: ``measures`` are kept in its record."""

    def __init__(self, message: str, measures: dict) -> None:
        super().__init__(message)
        self.measures = measures


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


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def load_now() -> dict:
    """The 1-minute load average and the running / total task counts of /proc/loadavg."""
    with contextlib.suppress(OSError, IndexError):
        fields = Path("/proc/loadavg").read_text().split()
        return {"load_1m": float(fields[0]), "tasks_running_total": fields[3]}
    return {"load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (longest mount point of /proc/mounts), or '?'."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def save_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group a child leads (it was started in its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


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


# --- inputs ---------------------------------------------------------------------------------------------


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


def make_big_jpeg(path: Path, size: tuple[int, int] = BIG_PHOTO_SIZE, seed: int = 0) -> dict:
    """A photo-sized JPEG: chelsea.png upscaled (bicubic) to ``size`` with seeded noise (sigma 3 of 255),
    quality 92, so that decoding costs what a camera JPEG of that size costs.  Returns its facts."""
    import numpy as np
    from PIL import Image

    with Image.open(SMALL_PHOTOS[1]) as image:
        big = np.asarray(image.convert("RGB").resize(size, Image.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0.0, 3.0, size=big.shape).round().astype(np.int16)
    Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(path, quality=92)
    return {"file": path.name, "size": f"{size[0]}x{size[1]}", "bytes": path.stat().st_size}


def drop_from_page_cache(path: Path) -> str:
    """Flush ``path`` and ask the kernel to drop its cached pages; returns how it will be read."""
    kind = filesystem_type(path.resolve())
    if kind in ("tmpfs", "ramfs"):
        return f"cached: the checkpoint is on {kind} (memory)"
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except (AttributeError, OSError) as error:
        return f"possibly cached: the page cache could not be dropped ({error})"
    return f"from disk ({kind}): pages dropped with fsync + POSIX_FADV_DONTNEED"


def dynamo_counters() -> dict:
    """What torch._dynamo counted so far: frames, graphs, recompiles, graph breaks, CUDA-graph skips."""
    from torch._dynamo.utils import counters

    inductor = counters.get("inductor", {})
    return {
        "frames_compiled": int(counters.get("frames", {}).get("ok", 0)),
        "graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
        "recompiles": int(sum(counters.get("recompiles", {}).values())),
        "graph_breaks": int(sum(counters.get("graph_break", {}).values())),
        "cudagraph_skips": int(inductor.get("cudagraph_skips", 0)),
    }


# --- the suite ------------------------------------------------------------------------------------------


class Suite:
    """Runs the steps, keeps their results, writes the JSON and the markdown after each change."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.cuda = args.device == "cuda"
        self.out = Path(args.out)
        self.started = time.monotonic()
        self.deadline = self.started + args.budget_s
        base = Path("/var/tmp") if os.access("/var/tmp", os.W_OK) else None  # a disk, rarely tmpfs
        self.work = Path(tempfile.mkdtemp(prefix="sharp-rt-gpu-suite-", dir=base))
        self.lock = threading.RLock()
        self.aborting = threading.Event()  # set by the guard thread: the main thread stops writing
        self.current: str | None = None
        self.children: dict[str, subprocess.Popen] = {}
        self.partials: dict[str, Path] = {}
        self.checkpoint = self.work / f"{args.preset}-synthetic.pt"
        self.big_photo = self.work / BIG_PHOTO_NAME
        self.reference_file = self.work / "reference.npz"
        self.results: dict[str, Any] = {
            "suite": "sharp-rt benchmarks/gpu_suite.py",
            "format_version": 2,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "steps": {},
        }
        self.clock = Clock(args.device)

    # - plumbing -

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def photos(self) -> list[Path]:
        return [self.big_photo, *SMALL_PHOTOS]

    def save(self) -> None:
        """Rewrite gpu_suite.json and gpu_suite.md atomically (callable from the guard thread)."""
        self.halt_if_aborting()
        with self.lock:
            self.results["wall_seconds"] = round(time.monotonic() - self.started, 1)
            self.results["goals"] = goals(self.results, self.args)
            for _ in range(3):
                try:
                    text, md = json.dumps(self.results, indent=2, default=str), markdown(self.results)
                    break
                except RuntimeError:  # changed while dumped: try again
                    time.sleep(0.05)
            else:
                return
        from sharp_rt.core.atomic import write_atomic

        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "gpu_suite.json", (text + "\n").encode(), overwrite=True)
        write_atomic(self.out / "gpu_suite.md", (md + "\n").encode(), overwrite=True)

    def halt_if_aborting(self) -> None:
        """In the main thread while the guard thread saves and exits: wait for that exit."""
        if self.aborting.is_set() and threading.current_thread() is threading.main_thread():
            threading.Event().wait()

    def record(self, name: str, record: dict) -> None:
        self.halt_if_aborting()
        with self.lock:
            self.results["steps"][name] = record

    def step(self, name: str, function: Callable[[], dict | None], needs_s: float = 20.0) -> dict:
        """Run one step: ok (its result), skipped (reason) or failed (error, measures kept); never raises."""
        record: dict[str, Any]
        started = time.perf_counter()
        if name.split(":")[0] not in self.args.steps:
            record = {"status": "skipped", "reason": "not selected (--steps)"}
        elif self.left() < needs_s:
            record = {
                "status": "skipped",
                "reason": f"time budget: {self.left():.0f} s left, needs ~{needs_s:.0f} s",
            }
        else:
            print(f"[{time.monotonic() - self.started:6.1f} s] {name} ...", flush=True)
            alongside = {
                "suite_children": [n for n, c in self.children.items() if c.poll() is None],
                **load_now(),
            }
            self.current = name
            self.record(name, {"status": "running", "alongside": alongside})
            self.save()
            try:
                record = {"status": "ok", **(function() or {})}
            except SkipStepError as reason:
                record = {"status": "skipped", "reason": str(reason)}
            except StepFailedError as error:
                record = {**error.measures, "status": "failed", "error": str(error)}
            except Exception as error:
                record = {
                    "status": "failed",
                    "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                    "traceback": traceback.format_exc()[-3000:],
                }
            record["alongside"] = alongside
            self.current = None
            if record["status"] == "failed" and "torch" in sys.modules:  # an in-process step's memory
                with contextlib.suppress(Exception):
                    self.free_memory()
        record["seconds"] = round(time.perf_counter() - started, 2)
        if record["status"] != "ok":
            print(f"    {record['status']}: {record.get('reason') or record.get('error')}", flush=True)
        self.record(name, record)
        self.save()
        return record

    def run_child(self, name: str, kind: str, spec: dict, limit_s: float, min_s: float = 5.0) -> dict:
        """Run ``kind`` in a child process (own process group) for at most ``limit_s`` seconds.

        Skipped (:class:`SkipStepError`) when ``limit_s`` is under ``min_s``.  The child writes
        its measures to a partial JSON file as it goes; they are merged into this step's record
        while it runs, and returned.  Raises :class:`StepFailedError` (with the measures) when
        the child fails or is killed at its deadline.
        """
        if limit_s < min_s:
            raise SkipStepError(f"time budget: {max(limit_s, 0.0):.0f} s left for this step")
        partial = self.work / f"{name.replace(':', '-')}.partial.json"
        partial.unlink(missing_ok=True)
        spec = {**spec, "partial": str(partial), "device": self.device}
        spec_file = self.work / f"{name.replace(':', '-')}.spec.json"
        save_json_atomic(spec_file, spec)
        log_path = self.work / f"{name.replace(':', '-')}.log"
        with open(log_path, "w") as log:
            child = subprocess.Popen(
                [sys.executable, __file__, "--child", kind, str(spec_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # its own process group: killed with everything it started
            )
        self.children[name] = child
        self.partials[name] = partial
        with self.lock:
            self.results["steps"][name]["pid"] = child.pid
            self.results["steps"][name]["deadline_s"] = round(limit_s, 1)
        self.save()  # the child's pid and deadline are on disk before it runs
        end, seen = time.monotonic() + limit_s, 0.0
        killed = False
        while child.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=min(1.0, max(0.01, end - time.monotonic())))
            if partial.is_file() and partial.stat().st_mtime != seen:  # progress: save it
                seen = partial.stat().st_mtime
                with self.lock:
                    self.results["steps"][name].update(read_partial(partial))
                self.save()
            if child.poll() is None and time.monotonic() >= end:
                kill_group(child)
                killed = True
        self.halt_if_aborting()  # killed by the guard thread, which records the measures
        del self.children[name]
        measures = {**read_partial(partial), "deadline_s": round(limit_s, 1)}
        lines = log_path.read_text(errors="replace").strip().splitlines()
        if killed:
            phase = measures.get("phase", "starting")
            raise StepFailedError(
                f"killed at its deadline ({limit_s:.0f} s) while {phase}, with its process group",
                measures,
            )
        if child.returncode != 0:
            raise StepFailedError(
                f"the child process exited with {child.returncode}: {(lines or ['no output'])[-1][:300]}",
                {**measures, "log_tail": lines[-15:]},
            )
        return measures

    def abort(self, reason: str, code: int) -> None:
        """From the guard thread: kill the children, keep their measures, save, exit ``code``."""
        self.aborting.set()
        for name, child in list(self.children.items()):
            kill_group(child)
            with self.lock:
                step = self.results["steps"].setdefault(name, {})
                step.update(read_partial(self.partials.get(name)))
        with self.lock:
            if self.current and self.results["steps"].get(self.current, {}).get("status") == "running":
                self.results["steps"][self.current].update(status="interrupted", error=reason)
            self.results["interrupted"] = reason
            self.results.setdefault("environment", {})["load_average_end"] = _loadavg()
        with contextlib.suppress(Exception):
            self.save()
        print(f"\n{reason}: results saved in {self.out}", flush=True)
        shutil.rmtree(self.work, ignore_errors=True)
        os._exit(code)

    def guard(self) -> None:
        """Thread: wait for SIGTERM / SIGINT (blocked in every other thread) or the hard deadline."""
        hard = self.deadline + HARD_GRACE_S
        while True:
            timeout = hard - time.monotonic()
            if timeout <= 0:
                self.abort(
                    f"stopped at the hard deadline (budget + {HARD_GRACE_S:.0f} s) during {self.current}", 3
                )
            info = signal.sigtimedwait(SIGNALS, min(timeout, 1.0))
            if info is not None:
                name = signal.Signals(info.si_signo).name
                self.abort(f"interrupted by {name} during {self.current}", 128 + info.si_signo)

    # - 1. environment -

    def environment(self) -> dict:
        import torch

        cache = Path(tempfile.gettempdir()) / f"torchinductor_{os.environ.get('USER', 'root')}"
        with contextlib.suppress(Exception):
            from torch._inductor.runtime.cache_dir_utils import cache_dir

            cache = Path(cache_dir())
        env: dict[str, Any] = {
            "date": datetime.date.today().isoformat(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "load_average_start": _loadavg(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "installed_from_wheels": self.args.installed_wheels,
            "inductor_cache": f"{cache}: "
            + ("warm (not empty)" if cache.is_dir() and any(cache.iterdir()) else "empty: cold compiles"),
            "work_dir": f"{self.work} ({filesystem_type(self.work)})",
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
        with self.lock:
            self.results["environment"] = env
        return {}

    # - 2. inputs -

    def inputs(self) -> dict:
        import torch

        from sharp_rt.sharp_ref import get_config

        self.config = get_config(self.args.preset)
        started = time.perf_counter()
        state = synthetic_state(self.config, self.args.seed, self.device)
        parameters = sum(value.numel() for value in state.values())
        if self.cuda:
            torch.cuda.synchronize()
        drawn = time.perf_counter() - started
        started = time.perf_counter()
        torch.save({key: value.cpu() for key, value in state.items()}, self.checkpoint)
        with open(self.checkpoint, "rb") as f:
            os.fsync(f.fileno())  # on disk, so that the cold start can read it from there
        saved = time.perf_counter() - started
        del state
        self.free_memory()
        started = time.perf_counter()
        photo = make_big_jpeg(self.big_photo, seed=self.args.seed)
        return {
            "preset": self.config.name,
            "parameters": parameters,
            "resolution": self.config.internal_resolution,
            "gaussians": self.config.num_gaussians,
            "draw_seconds": round(drawn, 2),
            "save_seconds": round(saved, 2),
            "checkpoint_bytes": self.checkpoint.stat().st_size,
            "big_photo": {**photo, "seconds": round(time.perf_counter() - started, 2)},
        }

    # - 3. reference and the variants -

    def reference_step(self) -> dict:
        limit = min(self.left() - 5.0, 180.0 if self.cuda else 300.0)
        spec = {"checkpoint": str(self.checkpoint), "photos": list(map(str, self.photos()))}
        return self.run_child("reference", "reference", {**spec, "out": str(self.reference_file)}, limit)

    def variant(self, name: str, reserve_s: float) -> dict:
        kind, precision = name.split("-")
        compile = kind == "compiled"
        if precision == "fp16" and not self.cuda:
            raise SkipStepError("fp16 runs on CUDA only (TorchEngine refuses fp16 on CPU)")
        if compile and self.cuda and not have("triton"):
            raise SkipStepError("torch.compile on CUDA needs Triton, which is not installed")
        if not self.reference_file.is_file():
            raise SkipStepError("no fp32 reference (the reference step did not finish)")
        cap = (240.0 if compile else 120.0) if self.cuda else (480.0 if compile else 240.0)
        spec = {
            "checkpoint": str(self.checkpoint),
            "photos": list(map(str, self.photos())),
            "reference": str(self.reference_file),
            "precision": precision,
            "compile": compile,
            "repeats": self.args.repeats,
            "ply": str(self.work / f"{name.replace(':', '-')}.ply"),
        }
        return self.run_child(f"variant:{name}", "variant", spec, min(cap, self.left() - reserve_s))

    def free_memory(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    # - 5. render (portable rasterizer) and 11. gsplat -

    def render_scene(self):
        import numpy as np

        sys.path.insert(0, str(BENCHMARKS))
        from render import photo_scene

        from sharp_rt.render import trajectory

        scene = photo_scene(side=self.args.scene_side)
        size = self.args.render_size
        video = trajectory(scene, "rotate_forward", 60, (size, size))
        cameras = [video[round(i)] for i in np.linspace(0, len(video) - 1, self.args.frames, endpoint=False)]
        return scene, cameras

    def time_renderer(self, backend: str, scene, cameras) -> tuple[dict, list]:
        from sharp_rt.render import Renderer

        started = time.perf_counter()
        renderer = Renderer(scene, backend=backend, device=self.device)
        setup = time.perf_counter() - started
        started = time.perf_counter()
        renderer.render(cameras[0])  # warm-up: work buffers, kernels
        first = time.perf_counter() - started
        times: list[float] = []
        for camera in cameras:
            if len(times) >= 2 and (self.left() < 60.0 or sum(times) > 30_000.0):  # a slow machine
                break
            with self.clock.measure(times):
                renderer.render_linear(camera)
        cameras = cameras[: len(times)]
        images = []
        if self.cuda and have("gsplat"):  # untimed, for the PSNR against gsplat (last step)
            images = [renderer.render(camera).image for camera in cameras]
        del renderer
        self.free_memory()
        ms = median(times)
        return {
            "setup_s": round(setup, 3),
            "first_frame_s": round(first, 3),
            "ms_per_frame_median": ms,
            "fps": round(1000.0 / ms, 2) if ms else None,
            "ms_per_frame": [round(t, 2) for t in times],
            "frames_timed": len(times),
        }, images

    def render(self) -> dict:
        import numpy as np

        from sharp_rt.render import rasterize_torch

        scene, cameras = self.render_scene()
        size = self.args.render_size
        result: dict[str, Any] = {"gaussians": len(scene), "size": f"{size}x{size}", "frames": len(cameras)}
        result["torch"], images = self.time_renderer("torch", scene, cameras)
        result["frames"] = result["torch"]["frames_timed"]  # fewer than asked on a slow machine
        result["torch"]["chunk_sizes"] = (
            f"CPU-tuned defaults: FIRST_CHUNK {rasterize_torch.FIRST_CHUNK}, LAST_CHUNK "
            f"{rasterize_torch.LAST_CHUNK}, WORK_ELEMENTS {rasterize_torch.WORK_ELEMENTS}"
        )
        if images:
            np.savez(self.work / "portable-frames.npz", *images)  # for gsplat's PSNR, last step
        if self.cuda and self.left() > 60.0:  # the same code with GPU-sized work batches (x16)
            default = rasterize_torch.WORK_ELEMENTS
            rasterize_torch.WORK_ELEMENTS = default * 16
            try:
                result["torch_large_batches"], _ = self.time_renderer("torch", scene, cameras)
                result["torch_large_batches"]["chunk_sizes"] = f"WORK_ELEMENTS {default * 16} (x16)"
            finally:
                rasterize_torch.WORK_ELEMENTS = default
        return result

    def gsplat(self) -> dict:
        import numpy as np

        if not self.cuda:
            raise SkipStepError("gsplat needs CUDA")
        if not have("gsplat"):
            raise SkipStepError("gsplat is not installed (carry its wheel in --wheels to compare)")
        frames = self.work / "portable-frames.npz"
        if not frames.is_file():
            raise SkipStepError("the portable rasterizer's frames are missing (the render step did not run)")
        props = self.results.get("environment", {}).get("compute_capability", "")
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(tempfile.gettempdir()) / "sharp-rt-torch-ext"))
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", props)  # this GPU only: a shorter build
        build = self.run_child("gsplat", "gsplat-build", {}, self.left() - 30.0)
        scene, cameras = self.render_scene()
        timing, images = self.time_renderer("gsplat", scene, cameras)
        portable = np.load(frames)
        pairs = [(portable[f"arr_{i}"], image) for i, image in enumerate(images) if f"arr_{i}" in portable]
        psnr = [_psnr(a, b) for a, b in pairs]
        return {
            **build,
            "gsplat": timing,
            "portable_psnr_vs_gsplat_db": None
            if not psnr
            else {"min": round(min(psnr), 2), "mean": round(float(np.mean(psnr)), 2)},
        }

    # - 8. timm -

    def timm(self) -> dict:
        sys.path.insert(0, str(BENCHMARKS))
        from vit_timm_check import TimmUnavailableError, compare_vit_with_timm

        from sharp_rt.sharp_ref.config import ViTConfig

        config = ViTConfig() if self.args.preset == "sharp" else ViTConfig(embed_dim=64, depth=4, num_heads=4)
        try:
            result = compare_vit_with_timm(config, device=self.device, batch=2, taps=(1, config.depth - 1))
        except TimmUnavailableError as error:
            raise SkipStepError(str(error)) from None
        finally:
            self.free_memory()
        summary = {k: result[k] for k in ("timm", "device", "grid_max_abs", "grid_max_rel", "taps_max_abs")}
        summary["vit"] = f"{config.embed_dim}-wide, {config.depth} blocks, {config.img_size} px"
        summary["passed"] = result["grid_max_rel"] < 1e-4
        return summary

    # - 10. onnx -

    def onnx(self) -> dict:
        absent = [m for m in ("onnx", "onnxscript", "onnxruntime") if not have(m)]
        if absent:
            raise SkipStepError(f"{', '.join(absent)} not installed (the ONNX export needs them)")
        spec = {"checkpoint": str(self.checkpoint), "out": str(self.work / "onnx-fp16")}
        reserve = 0.0 if not self.cuda or not have("gsplat") else 90.0  # gsplat's build comes last
        return self.run_child("onnx", "onnx", spec, self.left() - 5.0 - reserve)

    # - the run -

    def run(self) -> int:
        self.step("environment", self.environment, needs_s=0)
        self.step("inputs", self.inputs, needs_s=0)
        inputs = self.results["steps"]["inputs"]["status"] == "ok"
        timm_reserve = 15.0 if "timm" in self.args.steps else 0.0
        for name in self.plan():
            if name == "render":
                self.step("render", self.render, needs_s=15.0)
            elif name == "timm":
                self.step("timm", self.timm, needs_s=10.0)
            elif not inputs:
                self.record(name, {"status": "skipped", "reason": "the inputs step failed"})
            elif name == "reference":
                self.step("reference", self.reference_step, needs_s=20.0)
            elif name == "onnx":
                self.step("onnx", self.onnx, needs_s=30.0)
            elif name == "gsplat":
                self.step("gsplat", self.gsplat, needs_s=60.0)
            else:
                variant = name.split(":", 1)[1]
                later_timm = timm_reserve if self.plan().index(name) < self.plan().index("timm") else 0.0
                needs = (60.0 if self.cuda else 120.0) if variant.startswith("compiled") else 20.0
                self.step(name, lambda v=variant, r=later_timm: self.variant(v, r), needs_s=needs)
        with self.lock:
            self.results.setdefault("environment", {})["load_average_end"] = _loadavg()
        self.save()
        shutil.rmtree(self.work, ignore_errors=True)
        print((self.out / "gpu_suite.md").read_text(), flush=True)
        steps = self.results["steps"].values()
        failed = any(s["status"] == "failed" for s in steps)
        parity_failed = any(s.get("parity_passed") is False for s in steps)
        onnx = self.results["steps"].get("onnx", {})
        return 1 if failed or parity_failed or onnx.get("validation") == "failed" else 0

    def plan(self) -> list[str]:
        """The steps after environment and inputs, in the order of the value of their figures."""
        order = ["reference", "eager-fp16", "render", "eager-bf16", "compiled-fp16", "timm", "compiled-bf16"]
        extra = [v for v in self.args.variants if v not in order]  # fp32 variants, on request
        names = [n if n in ("reference", "render", "timm") else f"variant:{n}" for n in order + extra]
        names = [n for n in names if not n.startswith("variant:") or n.split(":")[1] in self.args.variants]
        return [*names, "onnx", "gsplat"]


# --- child processes ------------------------------------------------------------------------------------


class Progress:
    """A child's measures, rewritten atomically to its partial JSON file after each one."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {}

    def __call__(self, **updates: Any) -> None:
        self.data.update(updates)
        save_json_atomic(self.path, self.data)


def read_partial(path: Path | None) -> dict:
    with contextlib.suppress(OSError, ValueError, TypeError):
        return json.loads(Path(path).read_text())  # type: ignore[arg-type]
    return {}


def reference_child(spec: dict) -> int:
    """The fp32 reference (TF32 off) of every photo, saved as one .npz: ``{stem}/{output}`` arrays."""
    import numpy as np

    from sharp_rt.engines.torch_engine import TorchEngine
    from sharp_rt.export.aoti import full_fp32
    from sharp_rt.predict.predictor import Predictor
    from sharp_rt.sharp_ref import load_checkpoint

    progress = Progress(spec["partial"])
    progress(phase="loading the checkpoint")
    arrays, seconds = {}, {}
    with full_fp32():
        predictor = Predictor(TorchEngine(load_checkpoint(spec["checkpoint"]), spec["device"], "fp32"))
        for photo in map(Path, spec["photos"]):
            progress(phase=f"running {photo.name}")
            started = time.perf_counter()
            prepared = predictor.prepare(photo)
            factor = np.array([prepared.f_px / prepared.width], np.float32)
            for name, value in predictor.engine.run(prepared.image, factor).items():
                arrays[f"{photo.stem}/{name}"] = value
            seconds[photo.stem] = round(time.perf_counter() - started, 3)
    nonfinite = int(sum(np.size(v) - np.count_nonzero(np.isfinite(v)) for v in arrays.values()))
    tmp = Path(spec["out"]).with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, spec["out"])
    progress(phase="done", photos=list(seconds), seconds_per_photo=seconds, nonfinite=nonfinite, tf32=False)
    return 0


def variant_child(spec: dict) -> int:
    """One variant: cold start, parity per photo, warm photo -> PLY (host and device paths), network."""
    import numpy as np
    import torch

    from sharp_rt.engines.torch_engine import TorchEngine
    from sharp_rt.export.validate import TOLERANCES, compare_outputs
    from sharp_rt.predict.predictor import Predictor, check_engine_outputs, unproject_outputs
    from sharp_rt.runtime.ply import write_ply
    from sharp_rt.sharp_ref import load_checkpoint

    device, precision, compile = spec["device"], spec["precision"], spec["compile"]
    cuda = device == "cuda"
    clock = Clock(device)
    progress = Progress(spec["partial"])
    photos = [Path(p) for p in spec["photos"]]
    ply = Path(spec["ply"])
    progress(
        precision=precision,
        compiled=compile,
        tolerance=TOLERANCES[precision].to_json(),
        timer="end to end: perf_counter (wall); network: " + ("CUDA events" if cuda else "perf_counter"),
        phase="cold start: reading the checkpoint",
    )
    checkpoint = Path(spec["checkpoint"])
    cache = drop_from_page_cache(checkpoint)
    started = time.perf_counter()
    model = load_checkpoint(checkpoint)
    read_s = time.perf_counter() - started
    engine = TorchEngine(model, device, precision, compile=compile)
    predictor = Predictor(engine, device_resident=False)  # the host path (numpy resize, unprojection)
    progress(phase="cold start: the first photo" + (" (compiling)" if compile else ""))
    prepared = predictor.prepare(photos[0])
    factor = np.array([prepared.f_px / prepared.width], np.float32)
    first = engine.run(prepared.image, factor)
    cold_error = None
    try:
        one = {k: v[0] for k, v in first.items()}
        check_engine_outputs(one, engine.info)
        write_ply(unproject_outputs(one, prepared.f_px, prepared.width, prepared.height), ply, overwrite=True)
    except Exception as error:  # NaN / inf: keep going, parity shows it
        cold_error = f"{type(error).__name__}: {error}"
    cold = time.perf_counter() - started
    after_cold = dynamo_counters() if compile else None
    read_back = "skipped: plyfile is not installed (carry its wheel)"
    if cold_error is None and have("plyfile"):  # untimed: the written file is a valid 3DGS PLY
        from sharp_rt.runtime.ply import read_ply

        count = len(read_ply(ply).opacities)
        read_back = f"{count} Gaussians" + ("" if count == engine.info.num_gaussians else " (WRONG COUNT)")
    progress(
        ply_read_back=read_back,
        cold_start_s=round(cold, 2),
        cold_start_error=cold_error,
        compile_mode=engine.info.details.get("compile_mode"),
        checkpoint_read_s=round(read_s, 2),
        checkpoint_gb_per_s=round(checkpoint.stat().st_size / read_s / 1e9, 2),
        checkpoint_cache=cache,
        counters_after_cold_start=after_cold,
    )
    reference = np.load(spec["reference"])
    parity: dict[str, dict] = {}
    for photo in photos:
        progress(phase=f"parity on {photo.name}")
        if photo != photos[0]:
            item = predictor.prepare(photo)
            first = engine.run(item.image, np.array([item.f_px / item.width], np.float32))
        expected = {name: reference[f"{photo.stem}/{name}"] for name in first}
        parity[photo.stem] = parity_summary(compare_outputs(first, expected, precision))
        progress(parity=parity, parity_passed=all(p["status"] == "passed" for p in parity.values()))

    host_gaussians = {}  # photo -> the host path's last Gaussians, for the device path's check

    def host_path(photo: Path) -> dict:
        """Wall time (perf_counter) of Predictor.prepare + infer + write_ply: what a user waits for."""
        end_to_end: list[float] = []
        stages: dict[str, list[float]] = {}
        for _ in range(spec["repeats"]):
            began = time.perf_counter()
            item = predictor.prepare(photo)
            gaussians, seconds = predictor.infer(item)
            t = time.perf_counter()
            write_ply(gaussians, ply, overwrite=True)
            end_to_end.append((time.perf_counter() - began) * 1000.0)
            host_gaussians[photo] = gaussians
            for stage, value in {**item.seconds, **seconds, "write": time.perf_counter() - t}.items():
                stages.setdefault(stage, []).append(value * 1000.0)
        return {
            "ms_median": median(end_to_end),
            "ms": [round(v, 2) for v in end_to_end],
            "stages_ms_median": {stage: median(values) for stage, values in stages.items()},
        }

    resident = Predictor(engine, device_resident=True)  # the Predictor's own device-resident path

    def device_path(photo: Path) -> dict:
        """Wall time of the device-resident Predictor's prepare + infer + write_ply (the default path of
        a torch engine on CUDA: engines/torch_resident.py); stages: decode and write on the host,
        upload (perf_counter), preprocess / inference / unproject on the device (CUDA events; the
        unprojection's one copy back added)."""
        totals: list[float] = []
        stages: dict[str, list[float]] = {}
        for _ in range(spec["repeats"]):
            began = time.perf_counter()
            item = resident.prepare(photo)
            gaussians, seconds = resident.infer(item)
            t = time.perf_counter()
            write_ply(gaussians, ply, overwrite=True)
            totals.append((time.perf_counter() - began) * 1000.0)
            for stage, value in {**item.seconds, **seconds, "write": time.perf_counter() - t}.items():
                stages.setdefault(stage, []).append(value * 1000.0)
        host = host_gaussians[photo] if photo in host_gaussians else predictor.predict(photo)
        scale = float(np.max(np.abs(host.mean_vectors))) or 1.0
        return {
            "ms_median": median(totals),
            "stages_ms_median": {stage: median(values) for stage, values in stages.items()},
            "means_max_rel_diff_vs_host_path": float(
                np.max(np.abs(gaussians.mean_vectors - host.mean_vectors))
            )
            / scale,
            "timer": "perf_counter end to end; device stages: CUDA events" if cuda else "perf_counter",
        }

    def folder_run(photo: Path) -> dict:
        """Predictor.predict_many over ``repeats`` copies of the photo, each written as a PLY: the
        next image decodes in a thread and runs on the device while the previous one is written."""
        count = max(2, spec["repeats"])
        began = time.perf_counter()
        for result in resident.predict_many([photo] * count):
            if result.error is not None:
                raise result.error
            write_ply(result.gaussians, ply, overwrite=True)
        return {"images": count, "ms_per_image": (time.perf_counter() - began) * 1000.0 / count}

    measures = (
        ("time_to_3d", lambda: {p.name: host_path(p) for p in photos[:2]}),
        ("device_path", lambda: {p.name: device_path(p) for p in photos[:2]}),
        ("folder_run", lambda: folder_run(photos[0])),
        ("network", lambda: network_times(engine, clock, spec["repeats"], photos[0], predictor, device)),
    )
    for key, measure in measures:
        progress(phase=f"measuring {key.replace('_', ' ')}")
        try:
            progress(**{key: measure()})
        except Exception as error:  # e.g. NaN in one run: the parity results and other measures stay
            progress(**{f"{key}_error": f"{type(error).__name__}: {str(error)[:300]}"})
    final = dynamo_counters() if compile else None
    memory = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    cudagraphs = None
    if compile and cuda:
        cudagraphs = "used (no skips)" if final and final["cudagraph_skips"] == 0 else "skipped"
    progress(
        phase="done",
        counters=final,
        recompiles_while_timed=None if not compile else final["graphs"] - after_cold["graphs"],
        cuda_graphs=cudagraphs,
        peak_gpu_memory_gib=memory,
        gaussians_per_image=int(engine.info.num_gaussians),
    )
    ply.unlink(missing_ok=True)
    predictor.close()
    return 0


def network_times(engine, clock: Clock, repeats: int, photo: Path, predictor, device: str) -> dict:
    """The network alone on device tensors made outside inference mode (as a caller would): compiled,
    one untimed run first; then ``repeats`` timed ones.  TorchEngine.forward makes inference tensors of
    them, so the compiled graph of the end-to-end runs is reused (the counters show a recompile if not)."""
    import numpy as np
    import torch

    item = predictor.prepare(photo)
    x = torch.from_numpy(item.image).to(device)
    f = torch.from_numpy(np.array([item.f_px / item.width], np.float32)).to(device)
    if engine.compiled:
        engine.forward(x, f)  # untimed: would recompile here if the inputs' kind differed
    times: list[float] = []
    for _ in range(repeats):
        with clock.measure(times):
            engine.forward(x, f)
    return {"ms_median": median(times), "ms": [round(v, 2) for v in times]}


def onnx_child(spec: dict) -> int:
    """fp16 ONNX export of the suite's weights, validated by ONNX Runtime on the CPU (all cores)."""
    from sharp_rt.export.pipeline import export_engine

    progress = Progress(spec["partial"])
    progress(phase="exporting and validating")
    started = time.perf_counter()
    result = export_engine(
        spec["checkpoint"], precision="fp16", out_dir=spec["out"], overwrite=True, log=print
    )
    validation = result.manifest.validation
    progress(
        **{key: value for key, value in parity_summary(validation).items() if key != "status"},
        phase="done",
        validation=validation["status"],
        runtime=validation.get("runtime"),
        export_seconds=round(time.perf_counter() - started, 1),
        validation_seconds=validation.get("seconds"),
        threads=os.cpu_count(),
    )
    return 0


def gsplat_build_child(spec: dict) -> int:
    """Build (JIT, nvcc) and load gsplat's CUDA kernels."""
    progress = Progress(spec["partial"])
    progress(phase="building gsplat's CUDA kernels")
    started = time.perf_counter()
    from gsplat.cuda._backend import _C

    if _C is None:
        raise RuntimeError("gsplat's CUDA build produced no module")
    progress(phase="done", gsplat_build_s=round(time.perf_counter() - started, 1))
    return 0


CHILDREN = {
    "reference": reference_child,
    "variant": variant_child,
    "onnx": onnx_child,
    "gsplat-build": gsplat_build_child,
}


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


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _variants(steps: dict) -> dict[str, dict]:
    return {k.split(":", 1)[1]: v for k, v in steps.items() if k.startswith("variant:")}


def best_time_to_3d(step: dict) -> tuple[float | None, str]:
    """The faster of the host and device paths on the 12 MP JPEG (ms), and which."""
    paths = [
        (step.get(key, {}).get(BIG_PHOTO_NAME, {}).get("ms_median"), label)
        for key, label in (("time_to_3d", "host path"), ("device_path", "device path"))
    ]
    paths = [(ms, label) for ms, label in paths if ms is not None]
    return min(paths) if paths else (None, "")


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

    variants = _variants(steps)
    e2e = [(*best_time_to_3d(v), k) for k, v in variants.items() if v.get("parity_passed")]
    e2e = [item for item in e2e if item[0] is not None]
    best = min(e2e) if e2e else None
    fp16 = [
        (v["network"]["ms_median"], k)
        for k, v in variants.items()
        if v.get("precision") == "fp16" and v.get("network", {}).get("ms_median")
    ]
    net = min(fp16) if fp16 else (None, None)
    render = steps.get("render", {})
    runs = [render.get(k, {}).get("fps") for k in ("torch", "torch_large_batches")]
    fps = max((f for f in runs if f), default=None) if render.get("status") == "ok" else None
    rows = [
        {
            "goal": "time to 3D, 12 MP JPEG to written PLY (warm, parity passed)",
            "target": f"<= {GOALS['time_to_3d_s']} s",
            "measured": None if best is None else f"{best[0] / 1000:.3f} s ({best[2]}, {best[1]})",
            "verdict": verdict(best, best is not None and best[0] / 1000 <= GOALS["time_to_3d_s"]),
        },
        {
            "goal": "network in fp16",
            "target": f"<= {GOALS['network_fp16_ms']:.0f} ms",
            "measured": None if net[0] is None else f"{net[0]:.1f} ms ({net[1]})",
            "verdict": verdict(net[0], net[0] is not None and net[0] <= GOALS["network_fp16_ms"]),
        },
    ]
    for precision in ("fp16", "bf16"):
        ran = {k: v for k, v in variants.items() if v.get("precision") == precision and v.get("parity")}
        photos = sorted({photo for v in ran.values() for photo in v["parity"]})
        passed = bool(ran) and all(v.get("parity_passed") for v in ran.values())
        rows.append(
            {
                "goal": f"{precision} parity on the full model, every photo (export bounds)",
                "target": "passed on every photo",
                "measured": None
                if not ran
                else f"{'passed' if passed else 'FAILED'} ({', '.join(ran)}; {len(photos)} photos)",
                "verdict": verdict(ran or None, passed),
            }
        )
    rows.append(
        {
            "goal": "portable rasterizer, 512x512, 1.18 M Gaussians",
            "target": f">= {GOALS['portable_fps']:.0f} fps",
            "measured": None
            if fps is None
            else f"{fps} fps ({render['size']}, {render['gaussians']:,} Gaussians)",
            "verdict": verdict(fps, fps is not None and fps >= GOALS["portable_fps"]),
        }
    )
    return rows


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10.0**-digits:
            return f"{value:.{digits}e}"
        return f"{value:.{digits}f}"
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
        f"gsplat {env.get('gsplat')}; Inductor cache {env.get('inductor_cache', '?').split(': ')[-1]}; "
        f"load average {_load(env.get('load_average_start'))} -> {_load(env.get('load_average_end'))}; "
        f"wall time {results.get('wall_seconds')} s."
        + (f" **{results['interrupted']}**." if results.get("interrupted") else "")
    )


def _counters_cell(step: dict) -> str:
    if not step.get("compiled"):
        return "eager"
    counters = step.get("counters") or step.get("counters_after_cold_start") or {}
    if not counters:
        return "–"
    recompiles = step.get("recompiles_while_timed")
    return (
        f"{counters['graphs']} graphs, {counters['graph_breaks']} breaks, "
        f"{'?' if recompiles is None else recompiles} recompiled while timed; "
        f"CUDA graphs: {step.get('cuda_graphs') or 'n/a (CPU)'}"
    )


def _variant_rows(steps: dict) -> list[list[Any]]:
    rows = []
    big, small = BIG_PHOTO_NAME, SMALL_PHOTOS[0].name
    for variant, step in _variants(steps).items():
        if step.get("status") == "skipped" or "precision" not in step:
            rows.append([variant, _why(step), "", "", "", "", "", "", ""])
            continue
        host, device = step.get("time_to_3d", {}), step.get("device_path", {})
        parity = step.get("parity", {})
        worst = max(parity.values(), key=lambda p: p["covariance_max"], default=None)
        status = "ok" if step["status"] == "ok" else _why(step)
        cold = step.get("cold_start_s")
        cache = step.get("checkpoint_cache", "")
        rows.append(
            [
                f"{variant} ({status})",
                "–" if cold is None else f"{cold} ({'disk' if cache.startswith('from disk') else 'cached'})",
                host.get(big, {}).get("ms_median"),
                device.get(big, {}).get("ms_median"),
                host.get(small, {}).get("ms_median"),
                step.get("network", {}).get("ms_median"),
                _counters_cell(step),
                ", ".join(f"{k}: {p['status']}" for k, p in parity.items()) or "–",
                "–" if worst is None else f"{worst['covariance_p99_9']:.1e} / {worst['covariance_max']:.1e}",
            ]
        )
    return rows


def _stage_rows(steps: dict) -> list[list[str]]:
    rows = []
    big = BIG_PHOTO_NAME
    for variant, step in _variants(steps).items():
        for key, label in (("time_to_3d", "host"), ("device_path", "device")):
            stages = step.get(key, {}).get(big, {}).get("stages_ms_median")
            if stages:
                rows.append([variant, label, ", ".join(f"{k} {_fmt(v)}" for k, v in stages.items())])
        folder = step.get("folder_run")
        if folder:  # predict_many: decode and write overlap the network
            per_image = f"{_fmt(folder['ms_per_image'])} per image ({folder['images']} images, predict_many)"
            rows.append([variant, "folder", per_image])
    return rows


def _render_rows(steps: dict) -> list[list[Any]]:
    render, gsplat = steps.get("render", {}), steps.get("gsplat", {})
    if render.get("status") != "ok":
        return [["portable (torch)", _why(render), "", "", "", "", ""]]
    frame = f"{render['size']}, {render['gaussians']:,} Gaussians, {render['frames']} frames"
    rows = []
    psnr = gsplat.get("portable_psnr_vs_gsplat_db")
    labelled = (
        ("portable (torch)", render["torch"]),
        ("portable, WORK_ELEMENTS x16", render.get("torch_large_batches")),
        ("gsplat", gsplat.get("gsplat")),
    )
    for label, row in labelled:
        if row:
            rows.append(
                [
                    label,
                    frame,
                    row["setup_s"],
                    row["first_frame_s"],
                    row["ms_per_frame_median"],
                    row["fps"],
                    f"{psnr['min']} / {psnr['mean']}" if psnr and label == "portable (torch)" else "–",
                ]
            )
    if not gsplat.get("gsplat"):
        rows.append(["gsplat", _why(gsplat), "", "", "", "", ""])
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


def _step_rows(steps: dict) -> list[list[Any]]:
    rows = []
    for name, step in steps.items():
        alongside = step.get("alongside", {})
        beside = ", ".join(alongside.get("suite_children", [])) or "nothing of the suite's"
        rows.append(
            [
                name,
                step.get("status", "?"),
                step.get("seconds"),
                f"{beside}; load {_fmt(alongside.get('load_1m'), 2)}, "
                f"tasks {alongside.get('tasks_running_total', '?')}"
                if alongside
                else "–",
            ]
        )
    return rows


def markdown(results: dict) -> str:
    """The tables of a run: environment, goals, variants, stages, rendering, checks, steps."""
    steps, args = results["steps"], results["args"]
    goal_rows = [
        [g["goal"], g["target"], g["measured"] or "–", g["verdict"]] for g in results.get("goals", [])
    ]
    variant_header = [
        "variant", "cold start (s, checkpoint)", "12 MP JPEG -> PLY, host path (ms):",
        "12 MP, device path (ms):", "coffee.png -> PLY (ms):", "network (ms):",
        "torch.compile: graphs, recompiles, CUDA graphs", "parity per photo",
        "covariance rel. error p99.9 / max (worst photo)",
    ]  # fmt: skip
    render_header = [
        "renderer", "frame", "setup (s):", "first frame (s):", "per frame (ms, median):", "fps:",
        "portable vs gsplat PSNR, min / mean (dB)",
    ]  # fmt: skip
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
            "Stages of the 12 MP JPEG, median ms (host: numpy decode, resize, unprojection; device: torch):",
            "",
            *_table(["variant", "path", "stages (ms)"], _stage_rows(steps)),
            "",
            *_table(render_header, _render_rows(steps)),
            "",
            *_table(["check", "result"], _check_rows(steps)),
            "",
            *_table(["step", "status", "seconds:", "alongside (at its start)"], _step_rows(steps)),
        ]
    )


def _load(values) -> str:
    return "?" if not values else f"{values[0]:.2f}"


# --- main -----------------------------------------------------------------------------------------------


def child_main(kind: str, spec_file: str) -> int:
    """Entry of a child process: signals back to default, then the child's work."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # the parent blocked them; kills must work here
    sys.path.insert(0, str(ROOT))
    spec = json.loads(Path(spec_file).read_text())
    Progress(spec["partial"])(phase="starting (importing torch)")
    try:
        return CHILDREN[kind](spec)
    except Exception as error:  # recorded beside the measures taken so far, which stay
        progress = Progress(spec["partial"])
        progress.data = read_partial(Path(spec["partial"]))
        progress(error=f"{type(error).__name__}: {str(error)[:300]}")
        traceback.print_exc()
        return 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--preset", choices=("sharp", "tiny1536", "tiny"), default="sharp")
    out = os.environ.get("OUT")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(out) if out else Path("gpu-suite"),
        help="folder for gpu_suite.json / .md (default: $OUT when set, else gpu-suite)",
    )
    parser.add_argument(
        "--wheels", type=Path, help="folder of carried wheels: install those whose modules are missing"
    )
    parser.add_argument("--budget-s", type=float, help="time budget (default: 420 on cuda, 840 on cpu)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument(
        "--steps", nargs="+", default=list(STEPS), choices=STEPS, help="steps to run (+ environment, inputs)"
    )
    parser.add_argument(
        "--repeats", type=int, help="warm runs per timing, median (default: 5 on cuda, 2 on cpu)"
    )
    parser.add_argument("--frames", type=int, default=8, help="frames per renderer")
    parser.add_argument("--render-size", type=int, default=512, help="square frame side, pixels")
    parser.add_argument(
        "--scene-side", type=int, default=768, help="render scene: 2 x side^2 Gaussians (768: 1.18 M)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights and the JPEG")
    args = parser.parse_args(argv)
    args.budget_s = args.budget_s or (420.0 if args.device == "cuda" else 840.0)
    args.repeats = args.repeats or (5 if args.device == "cuda" else 2)
    args.steps = [*args.steps, "environment", "inputs"]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1], argv[2])
    args = parse_args(argv)
    args.installed_wheels = []
    if args.wheels:
        if args.wheels.is_dir():
            args.installed_wheels = install_missing_wheels(args.wheels)
        else:
            print(f"warning: --wheels {args.wheels} is not a folder; going on without it", flush=True)
    missing = [module for module in REQUIRED if not have(module)]
    if missing:
        print(f"error: {', '.join(missing)} cannot be imported; carry their wheels, pass --wheels DIR")
        return 2
    sys.path.insert(0, str(ROOT))
    # SIGTERM / SIGINT go to the guard thread only: blocked here before any other thread exists.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    suite = Suite(args)
    print(f"sharp-rt GPU suite: results go to {suite.out.resolve()} (rewritten after every step)", flush=True)
    threading.Thread(target=suite.guard, name="gpu-suite-guard", daemon=True).start()
    return suite.run()


if __name__ == "__main__":
    raise SystemExit(main())
