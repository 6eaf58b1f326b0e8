"""``sharp-rt export`` end to end: checkpoint -> validated ONNX (+ TensorRT plan) + manifest.

```
check the output folder (no engine there unless --overwrite; writable) before reading anything big
read checkpoint, detect config, sha256
  ├─ (validate) sharp_ref fp32 on each probe photo ───────────────┐ reference outputs
  ├─ (fp16) to_mixed_fp16 (named fp32 islands), in place          │
  ├─ export to <out>/.export-<pid>/model.onnx(+.data); free model  │
  ├─ onnx.checker + shape inference                                │
  ├─ (validate) ONNX Runtime on the probes ── compare ────────────┘ -> errors (+ renders, if render_check)
  │    (fp16, bounds missed) rank the candidate islands by measured fp16 sensitivity (once),
  │    add the next ones to the float32 islands, export and validate again; refuse when spent
  ├─ move the files into <out>/  (old manifest removed first)
  ├─ (tensorrt) build model.plan from model.onnx
  └─ write manifest.json last (atomic)
```

Growing the fp16 layout (issue 23): the shipped islands
(:data:`~sharp_rt.sharp_ref.mixed_precision.FP16_FP32_ISLANDS`) were chosen on synthetic
weights; a checkpoint whose activations are harder on fp16 may miss the bounds with them.
Then :func:`sharp_rt.export.precision.rank_islands` measures, on the probes and the given
weights, how much fp16 storage changes each candidate module's output, and the export adds
candidates in that order (1, then 2, 4, 8, ... per round), re-exporting and re-validating
each time, until every bound holds.  If the ranking is spent (or ``max_islands`` reached)
and the bounds still fail, nothing is written and :class:`EngineError` names the precision
that works (fp32).  An fp16 export therefore never ships a graph that fails its bounds on
ONNX Runtime (a TensorRT plan built from it that then fails its own validation is kept and
marked ``failed``, as before: growing against TensorRT is not implemented).

Each long step runs inside ``stage(name)``, a context manager the caller may give
(the CLI shows a live status with the elapsed time; the default logs one line with
the step's time when it ends): ``reference``, ``tracing``, ``checks``,
``validation``, and for TensorRT ``tensorrt build`` and ``tensorrt validation``.

Memory: the torch model is freed before ONNX Runtime loads the graph, so the
peak is max(reference forward, exporter, ORT session), not their sum.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sharp_rt.core.contract import (
    ONNX_DATA_NAME,
    ONNX_NAME,
    ONNX_PRECISIONS,
    OPSET,
    PLAN_NAME,
    ArtifactPrecision,
    bf16_refusal,
)
from sharp_rt.core.errors import EngineError, SharpError
from sharp_rt.engines.choice import ArtifactOption, Machine, choose_engine
from sharp_rt.engines.tensorrt_engine import TensorRTEngine, tensorrt_environment
from sharp_rt.export.artifact import (
    ExportManifest,
    ExportResult,
    Stage,
    error_summary,
    logged_stages,
    peak_rss_mib,
    prepare_out_dir,
    staged,
    tool_versions,
)
from sharp_rt.export.islands import covered as _covered
from sharp_rt.export.islands import measure_ranking as _measure_ranking
from sharp_rt.export.islands import next_islands as _next_islands
from sharp_rt.export.islands import with_islands as _with_islands
from sharp_rt.export.tensorrt_build import build_plan
from sharp_rt.export.validate import (
    PROBE_PHOTOS,
    onnxruntime_session,
    probe_image,
    reference_outputs,
    run_onnx,
    validate_probes,
)

TARGETS = ("onnx", "tensorrt")
# render_check(engine outputs, reference outputs, f_px, width, height) -> render measures
# (sharp_rt.render.fidelity.RenderFidelity: the render layer is passed in, never imported here)
RenderCheck = Callable[..., dict[str, Any]]


__all__ = [  # ExportResult, Stage, logged_stages, peak_rss_mib, prepare_out_dir: sharp_rt.export.artifact
    "ExportResult",
    "Stage",
    "default_out_dir",
    "export_engine",
    "logged_stages",
    "peak_rss_mib",
    "precision_layout",
    "prepare_out_dir",
]


def default_out_dir(config_name: str, precision: ArtifactPrecision) -> Path:
    """``engines/<config>-<precision>`` relative to the working directory."""
    return Path("engines") / f"{config_name}-{precision}"


def precision_layout(
    precision: ArtifactPrecision,
    islands: dict[str, str] | None = None,
    grown: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest's ``layout``: the compute dtype and which parts stay float32 (docs/precision.md).

    islands: the float32 islands of the shipped graph (default: the measured fp16 layout);
    grown: the islands added for these weights (module, what, measured error, rank, round).
    """
    from sharp_rt.sharp_ref.mixed_precision import FP16_FP32_ISLANDS

    always = ["inputs and outputs", "depth normalization and initializer", "composer"]
    if precision == "fp32":
        return {"compute": "float32", "fp32_islands": {}, "fp32_always": always}
    return {
        "compute": "float16",
        "fp32_islands": dict(FP16_FP32_ISLANDS if islands is None else islands),
        "grown_islands": list(grown or []),
        "fp32_always": [*always, "every LayerNorm / GroupNorm (statistics and affine)"],
    }


def _validate(
    onnx_path: Path,
    probes: list,
    references: list,
    precision: ArtifactPrecision,
    log: Callable[[str], None],
    render_check: RenderCheck | None = None,
) -> dict[str, Any]:
    import onnxruntime

    started = time.perf_counter()
    try:
        session = onnxruntime_session(onnx_path)
        outputs = [run_onnx(session, image, factor) for _, image, factor in probes]
    except Exception as error:  # onnxruntime raises its own exception types
        raise EngineError(
            f"ONNX Runtime cannot run the exported model: {str(error).splitlines()[0]}"
        ) from None
    del session
    result = validate_probes(outputs, probes, references, precision, render_check)
    result["runtime"] = f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider"
    result["seconds"] = round(time.perf_counter() - started, 1)
    log(f"Validation {result['status']}: {error_summary(result)}")
    for failure in result["failures"]:
        log(f"  {failure}")
    return result


def _validate_plan(
    plan: Path,
    config,
    probes,
    references,
    precision: ArtifactPrecision,
    validation: dict,
    log,
    render_check=None,
) -> dict[str, Any]:
    """Run the fresh plan on the probes with the TensorRT engine; the result: ``validation["tensorrt"]``."""
    engine = TensorRTEngine.from_plan(
        plan, resolution=config.internal_resolution, num_gaussians=config.num_gaussians, precision=precision
    )
    try:
        outputs = [engine.run(image, factor) for _, image, factor in probes]
        result = validate_probes(outputs, probes, references, precision, render_check)
    finally:
        engine.close()
    log(f"TensorRT validation {result['status']}: {error_summary(result)}")
    failures = validation["failures"] + [f"tensorrt {failure}" for failure in result["failures"]]
    status = "failed" if failures else "passed"
    return {**validation, "status": status, "failures": failures, "tensorrt": result}


def _refusal(validation, islands, grown, ranking, max_islands) -> EngineError:
    """The one error of an fp16 export that cannot meet its bounds: what failed, what was tried."""
    spent = all(_covered(row["module"], islands) for row in ranking)
    why = "every candidate module is float32 now" if spent else f"the cap of {max_islands} added islands"
    first = validation["failures"][0] if validation["failures"] else "validation failed"
    return EngineError(
        f"fp16 cannot meet its validation bounds on these weights ({first}; "
        f"{len(validation['failures'])} failure(s)) even after adding {len(grown)} float32 island(s), "
        f"{why}; nothing was written",
        hint="export with --precision fp32, which these weights need (sharp_ref's own precision)",
    )


def export_engine(
    checkpoint: str | Path | None = None,
    *,
    precision: ArtifactPrecision = "fp32",
    target: str = "onnx",
    out_dir: str | Path | None = None,
    validate: bool = True,
    dynamic_batch: bool = False,
    max_batch: int = 4,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda message: None,
    stage: Stage | None = None,
    render_check: RenderCheck | None = None,
    grow_islands: bool = True,
    max_islands: int | None = None,
) -> ExportResult:
    """Export a SHARP checkpoint to an artifact directory (see the module docstring).

    checkpoint: .pt / .safetensors; None: the official checkpoint in the cache (downloaded if missing).
    precision: ``fp32`` or ``fp16`` (mixed precision carried by the ONNX graph).
    target: ``onnx``, or ``tensorrt`` (also builds ``model.plan``; needs TensorRT and a GPU).
    out_dir: default ``engines/<config>-<precision>``.
    validate: run the ONNX with ONNX Runtime on the probe photos
    (:data:`~sharp_rt.export.validate.PROBE_PHOTOS`) and compare with ``sharp_ref`` fp32
    (bounds: :data:`sharp_rt.export.validate.TOLERANCES`; NaN/inf always fails).
    max_batch: largest batch of the TensorRT profile of a ``dynamic_batch`` plan.
    log: called with what the export does and found; stage: see the module docstring.
    render_check: also render each probe's splat against the reference's and bound the PSNR
    (``sharp_rt.render.fidelity.RenderFidelity()``; None: per-Gaussian measures only).
    grow_islands (fp16): when validation fails, grow the float32 islands along the measured
    sensitivity ranking until the bounds hold; ``max_islands`` caps how many are added (None: all).
    The output folder is checked (an existing engine, write access) before the checkpoint is read.
    A failed fp32 validation still writes everything (manifest marked ``failed``): check
    :attr:`ExportResult.passed`.  An fp16 export that cannot meet its bounds (``grow_islands``)
    writes nothing and raises :class:`EngineError`.  User errors raise :class:`SharpError`.
    """
    started = time.perf_counter()
    stage = stage or logged_stages(log)
    openvino_bf16 = precision == "bf16" and target == "onnx"
    if openvino_bf16:  # OpenVINO computes bf16 from the fp32 graph: export fp32, choose its bf16 layout
        _check_openvino_bf16()
        precision = "fp32"
    if precision not in ONNX_PRECISIONS:
        raise SharpError(
            f"ONNX and TensorRT engines are fp32 or fp16, not {precision!r}",
            hint="choose fp32 or fp16 (bf16: `--target onnx` for OpenVINO, `--target aoti` for torch)",
        )
    if target not in TARGETS:
        raise SharpError(f"Unknown target {target!r}", hint="choose onnx or tensorrt")
    if target == "tensorrt":
        try:
            tensorrt_environment()  # fails fast, in one line, without TensorRT or a GPU
        except EngineError as error:
            raise EngineError(
                error.message,
                hint="install TensorRT with `pip install 'sharp-rt[tensorrt]'` on a machine with an NVIDIA "
                "GPU; or export the ONNX target (drop --target tensorrt) and run it with "
                "`sharp-rt predict --engine DIR --backend onnxruntime`",
            ) from None

    from sharp_rt.export.onnx_export import check_onnx, export_onnx
    from sharp_rt.export.precision import to_mixed_fp16
    from sharp_rt.sharp_ref.checkpoint import (
        checkpoint_config,
        checkpoint_file,
        detect_config,
        file_sha256,
        predictor_from_state_dict,
        read_state_dict,
    )
    from sharp_rt.sharp_ref.mixed_precision import FP16_FP32_ISLANDS

    if out_dir is not None:
        out = Path(out_dir)
        prepare_out_dir(out, overwrite)  # before the download / the read of a 2.8 GB checkpoint
    checkpoint_path = checkpoint_file(checkpoint)
    if out_dir is None:
        out = default_out_dir(checkpoint_config(checkpoint_path).name, precision)  # shapes only: cheap
        prepare_out_dir(out, overwrite)
    state = read_state_dict(checkpoint_path)
    config = detect_config(state)
    log(
        f"Exporting {config.name} ({config.internal_resolution} px, {config.num_gaussians:,} Gaussians) "
        f"as {precision} to {out}/"
        + (", then choosing OpenVINO's bf16 layout for these weights" if openvino_bf16 else "")
    )
    sha256 = file_sha256(checkpoint_path)
    model = predictor_from_state_dict(state, config)
    del state

    probes: list = []  # (photo, image [B, 3, S, S], disparity_factor [B])
    references: list = []
    if validate:
        for photo in PROBE_PHOTOS:
            probe = probe_image(config.internal_resolution, batch=2 if dynamic_batch else 1, photo=photo)
            with stage(f"reference: sharp_ref fp32 on {photo}"):
                references.append(reference_outputs(model, *probe))
            probes.append((photo, *probe))
    islands = dict(FP16_FP32_ISLANDS) if precision == "fp16" else {}
    grown: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    ranking: list[dict[str, Any]] | None = None

    with staged(out) as staging:
        while True:
            if precision == "fp16":
                to_mixed_fp16(model, islands)
            t0 = time.perf_counter()
            with stage("tracing: torch.export to ONNX"):
                export_onnx(
                    model,
                    staging.path(ONNX_NAME),
                    dynamic_batch=dynamic_batch,
                    metadata={
                        "sharp_rt.config": config.name,
                        "sharp_rt.precision": precision,
                        "sharp_rt.checkpoint_sha256": sha256,
                    },
                )
            export_seconds = time.perf_counter() - t0
            del model
            gc.collect()
            with stage("checks: onnx.checker and shape inference"):
                check_onnx(
                    staging.path(ONNX_NAME), config.internal_resolution, config.num_gaussians, dynamic_batch
                )
            validation: dict[str, Any] = {"status": "skipped"}
            if validate:
                with stage("validation: ONNX Runtime against the reference"):
                    validation = _validate(
                        staging.path(ONNX_NAME),
                        probes,
                        references,
                        precision,
                        log,
                        None if openvino_bf16 else render_check,  # fp32: float32 noise apart
                    )
                rounds.append(
                    {
                        "added": [row["module"] for row in grown if row["round"] == len(rounds)],
                        "status": validation["status"],
                        "failures": validation["failures"],
                    }
                )
            if validation["status"] != "failed" or precision != "fp16" or not grow_islands:
                break
            # fp16 missed its bounds: grow the float32 islands along the measured ranking.
            model = predictor_from_state_dict(read_state_dict(checkpoint_path), config)
            if ranking is None:
                ranking = _measure_ranking(model, probes, stage)
            batch = _next_islands(ranking, islands, 2 ** (len(rounds) - 1), max_islands, len(grown))
            if not batch:
                raise _refusal(validation, islands, grown, ranking, max_islands)
            log(
                f"fp16 misses its bounds with {len(islands)} float32 island(s); adding "
                f"{len(batch)} along the measured fp16 sensitivity ranking:"
            )
            for row in batch:
                log(
                    f"  + {row['module']} ({row['what']}): fp16 output error "
                    f"{row['error']:.1e}, rank {row['rank']}"
                )
                grown.append({**row, "round": len(rounds)})
            islands = _with_islands(islands, [row["module"] for row in batch], ranking)
        if validate:
            validation["rounds"] = rounds
        # old manifest first, then the plan / package of an older export and ort-cache, then the files
        staging.publish([ONNX_NAME, ONNX_DATA_NAME])

    tensorrt_section = None
    if target == "tensorrt":
        with stage("tensorrt build"):
            tensorrt_section = build_plan(
                out / ONNX_NAME,
                out / PLAN_NAME,
                resolution=config.internal_resolution,
                dynamic_batch=dynamic_batch,
                max_batch=max_batch,
                log=log,
            )
        if validate:
            with stage("tensorrt validation"):
                validation = _validate_plan(
                    out / PLAN_NAME, config, probes, references, precision, validation, log, render_check
                )

    roles = {"onnx": ONNX_NAME, "onnx_data": ONNX_DATA_NAME}
    if tensorrt_section is not None:
        roles["plan"] = PLAN_NAME
    seconds = time.perf_counter() - started
    manifest = ExportManifest(
        config=config.name,
        internal_resolution=config.internal_resolution,
        num_gaussians=config.num_gaussians,
        precision=precision,
        opset=OPSET,
        dynamic_batch=dynamic_batch,
        checkpoint_sha256=sha256,
        checkpoint_file=checkpoint_path.name,
        files=ExportManifest.files_in(out, roles),
        layout=precision_layout(precision, islands, grown),
        validation=validation,
        tensorrt=tensorrt_section,
        export={
            "exporter": "torch.onnx.export(dynamo=True)",
            "onnx_seconds": round(export_seconds, 1),
            "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_rss_mib()),
        },
        versions=tool_versions(),
    )
    written = manifest.write(out)
    plain_fp32 = not openvino_bf16 and target == "onnx" and precision == "fp32"
    if plain_fp32 and validation["status"] == "passed" and predict_runs_openvino_bf16(out):
        # predict's default on this CPU is OpenVINO bf16 from this fp32 export: checked on these weights
        layout = {
            **manifest.layout,
            "bf16": openvino_bf16_check(out, probes, references, render_check, log, stage),
        }
        written = dataclasses.replace(manifest, layout=layout).write(out)
    if openvino_bf16:
        if validation["status"] != "passed":  # skipped (--no-validate) or a failed fp32 graph
            why = "not checked (--no-validate)" if validation["status"] == "skipped" else "not checked"
            log(f"OpenVINO bf16 layout {why}: OpenVINO runs its own bf16 choices (no float32 islands)")
        else:
            layout = dict(manifest.layout)
            error = None
            try:
                layout["bf16"] = openvino_bf16_section(
                    out,
                    checkpoint_path,
                    probes,
                    references,
                    render_check=render_check,
                    max_islands=max_islands if grow_islands else 0,
                    log=log,
                    stage=stage,
                )
            except EngineError as refused:  # recorded: `predict` then runs this export in fp32
                error = refused
                layout["bf16"] = bf16_refusal(refused.message)
            seconds = time.perf_counter() - started
            export = {**manifest.export, "seconds": round(seconds, 1), "peak_rss_mib": round(peak_rss_mib())}
            written = dataclasses.replace(manifest, layout=layout, export=export).write(out)
            if error is not None:
                raise EngineError(
                    f"{error.message}; the fp32 export in {out}/ is kept and records the refusal "
                    "(predict runs it in fp32)",
                    hint="run it with --precision fp32 (or predict's default, which now picks fp32 for it)",
                ) from None
    return ExportResult(written, seconds, peak_rss_mib())


def _check_openvino_bf16() -> None:
    """Refuse ``--precision bf16`` (ONNX target) without OpenVINO, which computes it, before any work."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        raise SharpError(
            "bf16 from an export is computed by OpenVINO, which is not installed",
            hint="pip install 'sharp-rt[openvino]'; or `--target aoti --precision bf16` (torch), "
            "or --precision fp32",
        )


def predict_runs_openvino_bf16(out: Path, machine: Machine | None = None) -> bool:
    """Whether ``sharp-rt predict``'s auto choice runs the fp32 export ``out`` in OpenVINO bf16 here.

    The engine choice itself (:func:`sharp_rt.engines.choice.choose_engine`) on ``machine`` (None:
    this one): true with OpenVINO installed, a CPU with bf16 units and no NVIDIA GPU (whose engines
    come first); false wherever nothing installed runs the export.
    """
    try:
        choice = choose_engine(machine or Machine.detect(), [ArtifactOption(out, "fp32", has_plan=False)])
    except SharpError:  # no backend installed for it: predict would not run it at all
        return False
    return (choice.backend, choice.precision) == ("openvino", "bf16")


def openvino_bf16_check(
    out: Path,
    probes: list,
    references: list,
    render_check: RenderCheck | None,
    log: Callable[[str], None],
    stage: Stage,
) -> dict[str, Any]:
    """OpenVINO's own bf16 (no float32 islands) on the probes of an fp32 export (manifest: ``layout.bf16``).

    What ``sharp-rt predict`` runs by default on a CPU with bf16 units, checked on these weights
    against the export's fp32 references (no fp32 forward repeated; two OpenVINO bf16 forwards and
    one compile: 113 s on the full model).  Within the bf16 bounds: ``status`` ``checked``.  Outside
    them: ``refused`` with the reason, so the auto choice runs this export in OpenVINO fp32 (nothing
    raises: the fp32 export itself passed); ``sharp-rt export --precision bf16`` grows float32 islands
    instead.  Trained-like stress weights miss here on the full model (docs/precision.md).
    """
    from sharp_rt.engines.openvino_engine import OpenVinoEngine

    with stage("bf16 check: OpenVINO bf16, predict's default on this CPU, on the probes"):
        engine = OpenVinoEngine(out, precision="bf16", cache=False, fp32_nodes=[])
        try:
            outputs = [engine.run(image, factor) for _, image, factor in probes]
        finally:
            engine.close()
    result = validate_probes(outputs, probes, references, "bf16", render_check)
    if result["status"] == "passed":
        log(f"OpenVINO bf16 (predict's default here) is within the bf16 bounds: {error_summary(result)}")
        return {"engine": "openvino", "status": "checked", "fp32_islands": {}, "failures": []}
    failure = result["failures"][0]
    log(
        f"OpenVINO bf16 misses its bounds on these weights ({failure}): predict runs this export in "
        "OpenVINO fp32 (recorded in the manifest); `sharp-rt export --precision bf16` grows float32 "
        "islands for bf16 instead"
    )
    return bf16_refusal(f"OpenVINO bf16 misses its bounds ({failure})")


def openvino_bf16_section(
    out: Path,
    checkpoint: Path,
    probes: list,
    references: list,
    *,
    render_check: RenderCheck | None,
    max_islands: int | None,
    log: Callable[[str], None],
    stage: Stage,
) -> dict[str, Any]:
    """OpenVINO's bf16 layout for the fp32 export ``out``, chosen on the probes (manifest: ``layout.bf16``).

    Reuses the export's fp32 references (no fp32 forward is repeated).  The full record (ONNX node
    names included) is written beside the compiled-model cache, where ``OpenVinoEngine`` reads it
    (:func:`sharp_rt.engines.openvino_engine.bf16_layout_path`).  Raises :class:`EngineError`
    (naming fp32) when no layout meets the bf16 bounds.
    """
    from sharp_rt.core.contract import open_manifest
    from sharp_rt.engines.openvino_engine import bf16_layout_path
    from sharp_rt.export.precision_bf16 import choose_openvino_bf16_layout

    record = choose_openvino_bf16_layout(
        out,
        checkpoint,
        render_check=render_check,
        max_islands=max_islands,
        log=log,
        stage=stage,
        reuse=False,
        probes=probes,
        references=references,
    )
    validation = record["validation"]
    kept = ("photo", "status", "failures", "covariances", "render")
    return {
        "engine": "openvino",
        "status": "passed",
        "compute": record["compute"],
        "fp32_islands": record["fp32_islands"],
        "grown_islands": [
            {key: row[key] for key in ("module", "what", "error", "rank", "round")}
            for row in record["grown_islands"]
        ],
        "fp32_nodes": len(record["fp32_nodes"]),
        "record": bf16_layout_path(open_manifest(out)).name,
        "validation": {
            "status": validation["status"],
            "failures": validation["failures"],
            "rounds": validation["rounds"],
            "covariances": validation["covariances"],
            "outputs": validation["outputs"],
            "probes": [
                {key: value for key, value in probe.items() if key in kept} for probe in validation["probes"]
            ],
        },
        "seconds": record["seconds"],
    }
