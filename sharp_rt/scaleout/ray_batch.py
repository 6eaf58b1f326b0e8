"""``sharp-rt predict --ray``: a photo library on a Ray cluster, streamed by Ray Data.

```
driver: plan_outputs ─> one row {source, target} per image (one row per block)
  ─map(decode_row)           Ray tasks (IO_TASK_CPUS each): load_image + preprocess  ┐ all three stages run
  ─map_batches(EngineActor)  actor pool: --workers actors, one loaded engine each     │ at once, streamed with
  ─map(write_row)            Ray tasks: unproject (+ prune) + atomic write            ┘ Ray Data backpressure
  ─iter_rows() on the driver ─> ImageResult per image (progress bar, summary)
```

- A bad image becomes a row with ``error`` set: it is reported, the job goes on.
- A dead actor is restarted by Ray and its in-flight images are retried
  (``max_restarts`` / ``max_task_retries``); an image whose retries run out is
  dropped by Ray Data (``max_errored_blocks = -1``) and reported as lost.
- Outputs appear atomically, so a rerun skips the complete ones (``outputs.plan_outputs``).
- Inputs, outputs and the engine must be at the same paths on every node
  (one machine, or a shared file system); sharp-rt must be installed on every node.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.contract import OUTPUT_NAMES
from sharp_rt.core.errors import SharpError
from sharp_rt.predict.outputs import ImageResult, OutputFormat, write_output
from sharp_rt.predict.predictor import EngineSpec, check_engine_outputs, prepare_image, unproject_outputs
from sharp_rt.runtime.image_io import FocalOverride, FocalRule
from sharp_rt.runtime.prune import check_prune_options, prune_gaussians

IO_TASK_CPUS = 0.25  # logical CPUs of one decode or write task
# Logical CPUs of a write task that also prunes (--max-gaussians / --prune): pruning is seconds to
# minutes of numpy work per image, so as many run at once as there are CPUs left, not four per CPU.
PRUNE_TASK_CPUS = 1.0
# Test hook: a marker path; the first actor call that creates the marker exits (a killed worker).
CRASH_ONCE_ENV = "SHARP_RT_TEST_CRASH_ONCE"


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run on Ray."""

    address: str = "local"  # "local": a private Ray here; "auto": the running cluster; or its address
    workers: int | None = None  # engine actors; None: one per GPU (GPUs // gpus_per_worker), else 1
    gpus_per_worker: float | None = None  # None: 1 if the cluster has GPUs, else 0
    cpus_per_worker: float | None = None  # logical CPUs per actor; None: 1 with GPUs, else a fair share
    max_retries: int = 3  # restarts of a dead actor (and retries of its images) before an image is lost


@dataclasses.dataclass(frozen=True)
class Resources:
    """The actor pool :func:`plan_resources` chose."""

    workers: int  # engine actors
    cpus_per_worker: float  # logical CPUs each actor reserves
    gpus_per_worker: float  # GPUs each actor reserves
    threads: int  # inference threads per actor (CPU backends)


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a ``host:port`` / ``ray://host:port`` nobody listens on (Ray itself waits minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "local", "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise SharpError(
            f"Cannot reach Ray at {address}: {error.strerror or error}",
            hint="check the address (the head's GCS port, 6379, or ray://head:10001 for Ray Client), "
            "or use --ray local",
        ) from None


def connect(address: str) -> bool:
    """Join (or start) Ray unless this process already did; True if this call connected."""
    import ray

    if ray.is_initialized():
        return False
    check_reachable(address)
    settings: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **settings)
        else:
            ray.init(address=address, **settings)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SharpError(
            f"Cannot connect to Ray at {address!r}: {str(error).splitlines()[0]}",
            hint="start a cluster with `ray start --head` (then --ray auto), pass its address, "
            "or use --ray local",
        ) from None
    return True


def worker_spec(spec: EngineSpec, threads: int) -> EngineSpec:
    """The spec each worker opens: the driver's decision, unless it was "auto" (a worker's machine decides).

    An explicit backend and precision open exactly as decided on the driver; with ``auto`` the
    fastest engine depends on the worker's machine (its GPU, its CPU's bf16 units), so each worker
    decides once, for itself, when it opens the engine.
    """
    auto = spec.backend == "auto" or spec.precision == "auto"
    return dataclasses.replace(spec, threads=threads, choice=None if auto else spec.choice)


def plan_resources(
    options: RayOptions, spec: EngineSpec, cluster: dict[str, float], write_cpus: float = IO_TASK_CPUS
) -> Resources:
    """Actor count and per-actor CPUs / GPUs / threads for ``cluster`` (``ray.cluster_resources()``).

    write_cpus: the logical CPUs of one write task (:data:`PRUNE_TASK_CPUS` when it prunes);
    room for one decode and one write task is kept beside the actors.
    """
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    gpus_per_worker = options.gpus_per_worker if options.gpus_per_worker is not None else float(gpus > 0)
    if gpus_per_worker > gpus:
        raise SharpError(
            f"--gpus-per-worker {gpus_per_worker:g} but the Ray cluster has {gpus:g} GPUs",
            hint="lower --gpus-per-worker (0 runs on CPUs)",
        )
    workers = options.workers or (int(gpus // gpus_per_worker) if gpus_per_worker else 1)
    if gpus_per_worker and workers * gpus_per_worker > gpus:
        raise SharpError(
            f"{workers} workers x {gpus_per_worker:g} GPUs exceed the cluster's {gpus:g} GPUs",
            hint="lower --workers or --gpus-per-worker",
        )
    spare = cpus - IO_TASK_CPUS - write_cpus  # keep room for one decode and one write task
    fair_share = 1.0 if gpus_per_worker else max(IO_TASK_CPUS, spare / workers)
    cpus_per_worker = options.cpus_per_worker or fair_share
    if workers * cpus_per_worker > spare:
        raise SharpError(
            f"{workers} workers x {cpus_per_worker:g} CPUs leave no CPU for decoding and writing "
            f"on this Ray cluster ({cpus:g} CPUs)",
            hint="lower --workers or --cpus-per-worker",
        )
    threads = spec.threads or max(1, round(cpus_per_worker))
    return Resources(workers, cpus_per_worker, gpus_per_worker, threads)


def decode_row(
    row: dict[str, Any],
    resolution: int,
    focal_rule: FocalRule = "sensor",
    focal: FocalOverride | None = None,
) -> dict[str, Any]:
    """Ray Data stage 1: load + preprocess one image; failures become ``error``.

    focal: a focal length the user states, replacing EXIF (``predict --focal-mm / --fov-deg``).
    """
    out: dict[str, Any] = {"source": row["source"], "target": row["target"], "error": ""}
    try:
        prepared = prepare_image(Path(row["source"]), resolution, focal_rule=focal_rule, focal=focal)
    except Exception as error:  # a bad image must not stop the job
        failed = {"error": _message(error), "image": None, "f_px": 0.0, "width": 0, "height": 0}
        return {**out, **failed, "load_s": 0.0, "preprocess_s": 0.0}
    return {
        **out,
        "image": prepared.image[0],  # [3, S, S] float32
        "f_px": prepared.f_px,
        "width": prepared.width,
        "height": prepared.height,
        **{f"{stage}_s": seconds for stage, seconds in prepared.seconds.items()},
    }


class EngineActor:
    """Ray Data stage 2: one loaded engine per actor; batches of one preprocessed image."""

    def __init__(self, spec: EngineSpec, crash_marker: str | None = None) -> None:
        self.engine = spec.open()
        self.crash_marker = crash_marker

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """One preprocessed image [1, 3, S, S] + metadata -> its five NDC outputs (no batch dim)."""
        if self.crash_marker:
            try:
                os.close(os.open(self.crash_marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)  # test hook: die like a worker killed mid-job
        row = {key: value[0] for key, value in batch.items() if key != "image"}
        outputs: dict[str, Any] = dict.fromkeys(OUTPUT_NAMES)
        row["inference_s"] = 0.0
        if not row["error"]:
            started = time.perf_counter()
            try:
                factor = np.array([row["f_px"] / row["width"]], dtype=np.float32)
                outputs = {k: v[0] for k, v in self.engine.run(batch["image"][:1], factor).items()}
                check_engine_outputs(outputs, self.engine.info)  # NaN / inf: this image fails
            except Exception as error:  # one failing image must not kill the actor
                row["error"] = _message(error)
            row["inference_s"] = time.perf_counter() - started
        return {key: [value] for key, value in {**row, **outputs}.items()}


def write_row(
    row: dict[str, Any],
    fmt: str,
    overwrite: bool,
    viewer_settings: bool = False,
    max_gaussians: int | None = None,
    prune: float | None = None,
) -> dict[str, Any]:
    """Ray Data stage 3: unproject (and prune) + write one image's Gaussians; failures become ``error``.

    max_gaussians / prune: keep at most ``max_gaussians`` and/or all but the fraction
    ``prune`` (:func:`sharp_rt.runtime.prune.prune_gaussians`, as the single-process path
    does; its seconds count as ``unproject``, as there).
    """
    out = {key: row[key] for key in row if key not in OUTPUT_NAMES}
    out.update(num_gaussians=0, unproject_s=0.0, write_s=0.0)
    if row["error"]:
        return out
    try:
        started = time.perf_counter()
        outputs = {name: np.asarray(row[name], dtype=np.float32) for name in OUTPUT_NAMES}
        gaussians = unproject_outputs(outputs, float(row["f_px"]), int(row["width"]), int(row["height"]))
        if max_gaussians is not None or prune is not None:
            gaussians = prune_gaussians(gaussians, max_gaussians, prune)
        out["unproject_s"] = time.perf_counter() - started
        started = time.perf_counter()
        write_output(
            gaussians,
            Path(row["target"]),
            OutputFormat(fmt),
            overwrite=overwrite,
            viewer_settings=viewer_settings,
            source=Path(row["source"]),  # recorded in the output: a later run resumes only this photo
        )
        out["write_s"] = time.perf_counter() - started
        out["num_gaussians"] = len(gaussians)
    except Exception as error:  # a full disk on one file must not kill the job
        out["error"] = _message(error)
    return out


def _message(error: Exception) -> str:
    return str(error) if isinstance(error, SharpError) else f"{type(error).__name__}: {error}"


def _result(row: dict[str, Any]) -> ImageResult:
    seconds = {key[:-2]: float(value) for key, value in row.items() if key.endswith("_s")}
    return ImageResult(
        Path(row["source"]), Path(row["target"]), row["error"] or None, int(row["num_gaussians"]), seconds
    )


def build_dataset(
    rows: list[dict[str, str]],
    resolution: int,
    spec: EngineSpec,
    fmt: OutputFormat,
    overwrite: bool,
    resources: Resources,
    max_retries: int,
    focal_rule: FocalRule = "sensor",
    viewer_settings: bool = False,
    focal: FocalOverride | None = None,
    max_gaussians: int | None = None,
    prune: float | None = None,
):
    """The Ray Data dataset: decode tasks -> engine actor pool -> write tasks (see the module docstring).

    rows: ``{"source", "target"}`` with absolute paths.  The three stages stay separate
    operators (Ray Data fuses a task map into a following actor map only when their remote
    arguments agree; the actors' restart settings keep them apart), so decoding and writing
    run in parallel with inference.
    """
    import ray.data

    decoded = ray.data.from_items(rows, override_num_blocks=len(rows)).map(
        decode_row,
        fn_kwargs={"resolution": resolution, "focal_rule": focal_rule, "focal": focal},
        num_cpus=IO_TASK_CPUS,
    )
    with warnings.catch_warnings():
        # max_restarts / max_task_retries have no named parameter in Ray 2.60 and only
        # ray_remote_args bounds them (the default retries forever); pyproject pins ray < 2.64.
        warnings.simplefilter("ignore", DeprecationWarning)
        inferred = decoded.map_batches(
            EngineActor,
            fn_constructor_kwargs={
                "spec": worker_spec(spec, resources.threads),
                "crash_marker": os.environ.get(CRASH_ONCE_ENV),
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=resources.workers),
            num_cpus=resources.cpus_per_worker,
            num_gpus=resources.gpus_per_worker,
            max_restarts=max_retries,
            max_task_retries=max_retries,
        )
    settings = {
        "fmt": fmt.value,
        "overwrite": overwrite,
        "viewer_settings": viewer_settings,
        "max_gaussians": max_gaussians,
        "prune": prune,
    }
    return inferred.map(write_row, fn_kwargs=settings, num_cpus=write_task_cpus(max_gaussians, prune))


def write_task_cpus(max_gaussians: int | None, prune: float | None) -> float:
    """Logical CPUs of one write task: :data:`PRUNE_TASK_CPUS` if it prunes, else :data:`IO_TASK_CPUS`."""
    return IO_TASK_CPUS if max_gaussians is None and prune is None else PRUNE_TASK_CPUS


def predict_on_ray(
    todo: list[tuple[Path, Path]],
    spec: EngineSpec,
    fmt: OutputFormat,
    *,
    overwrite: bool = False,
    viewer_settings: bool = False,
    options: RayOptions = RayOptions(),
    on_start: Callable[[Resources], None] = lambda resources: None,
    focal_rule: FocalRule = "sensor",
    focal: FocalOverride | None = None,
    max_gaussians: int | None = None,
    prune: float | None = None,
) -> Iterator[ImageResult]:
    """Predict ``(image, target)`` pairs on Ray; yields one :class:`ImageResult` per image as it finishes.

    ``viewer_settings``: also write each photo's camera for web viewers (``outputs.write_output``).
    ``focal``: one focal length for every image, replacing EXIF (``predict --focal-mm / --fov-deg``).
    ``max_gaussians`` / ``prune``: each output keeps at most ``max_gaussians`` and/or all but the
    fraction ``prune`` of its Gaussians, pruned by the write tasks as the single-process path
    does (``predict --max-gaussians / --prune``); a bad value is an
    :class:`~sharp_rt.core.errors.ArgumentError` before Ray starts.
    ``on_start`` is called once the actor pool is planned.  Images whose
    workers failed more than ``options.max_retries`` times come last, as lost.
    """
    check_prune_options(max_gaussians, prune)
    if not todo:
        return
    if importlib.util.find_spec("ray") is None:
        raise SharpError("--ray needs Ray", hint='pip install "sharp-rt[ray]"')
    if spec.uses_torch and spec.checkpoint is None:  # download once, here, not in every worker
        from sharp_rt.sharp_ref.checkpoint import checkpoint_file

        spec = dataclasses.replace(spec, checkpoint=checkpoint_file())
    resolution = spec.resolution()  # also checks the engine / checkpoint before any worker starts
    started_here = connect(options.address)
    try:
        import ray
        import ray.data

        write_cpus = write_task_cpus(max_gaussians, prune)
        resources = plan_resources(options, spec, ray.cluster_resources(), write_cpus)
        on_start(resources)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI shows its own
        context.print_on_execution_start = False
        context.max_errored_blocks = -1  # a lost image is reported, not fatal
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        absolute = [{"source": str(s.resolve()), "target": str(t.resolve())} for s, t in todo]
        dataset = build_dataset(
            absolute,
            resolution,
            spec,
            fmt,
            overwrite,
            resources,
            options.max_retries,
            focal_rule,
            viewer_settings,
            focal,
            max_gaussians,
            prune,
        )
        pending = {row["source"]: pair for row, pair in zip(absolute, todo, strict=True)}
        try:
            for row in dataset.iter_rows():
                source, target = pending.pop(row["source"])
                yield dataclasses.replace(_result(row), source=source, target=target)
        except ray.exceptions.RayError as error:
            raise SharpError(
                f"The Ray job stopped: {type(error).__name__}: {str(error).strip().splitlines()[0]}",
                hint=f"{len(todo) - len(pending)} images were done before it stopped; rerun the same "
                "command to resume (complete outputs are skipped); Ray logs: /tmp/ray/session_latest/logs",
            ) from None
        for source, target in pending.values():
            lost = (
                f"lost: the Ray worker running it died and {options.max_retries} retries did not help "
                "(see the Ray logs; rerun to resume)"
            )
            yield ImageResult(source, target, lost, 0, {})
    finally:
        if started_here:
            import ray

            ray.shutdown()
