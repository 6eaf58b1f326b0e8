"""bf16 layouts chosen from the weights: float32 islands grown until the bf16 bounds hold (issue 23).

Two bf16 engines run SHARP on CPUs, each with its own shipped layout:

* **torch** (``TorchEngine(precision="bf16")``, AOTInductor bf16 packages): the networks in bf16
  except :data:`~sharp_rt.sharp_ref.mixed_precision.BF16_FP32_ISLANDS` (and the depth
  normalization, initializer and composer, always float32);
* **OpenVINO** (the fp32 export under ``INFERENCE_PRECISION_HINT=bf16``): OpenVINO's own choices,
  no islands.  An island is kept float32 through the runtime attribute
  ``DisablePrecisionConversion`` on its ops (:func:`sharp_rt.engines.openvino_engine.islands_model`),
  which the CPU plugin honours under the bf16 hint.

Both layouts were chosen on synthetic weights.  :func:`choose_torch_bf16_layout` and
:func:`choose_openvino_bf16_layout` check a layout on the given weights the way ``sharp-rt export``
checks fp16: both probe photos (:data:`~sharp_rt.export.validate.PROBE_PHOTOS`), per Gaussian
against ``sharp_ref`` fp32 with ``TOLERANCES["bf16"]``, and, with a ``render_check``, in render
space (bf16 ≥ 40 dB on every view).  When a bound fails, the candidate islands
(:func:`~sharp_rt.export.precision.island_candidates`, then the whole ViTs and decoders) are
ranked once by their measured bf16-storage error on the probes
(:func:`~sharp_rt.export.precision.rank_islands` with ``torch.bfloat16``) and added in that order,
1, 2, 4, ... per round, until every bound holds; every island added is logged and recorded
(``grown_islands``: module, what, error, rank, round).  When the ranking is spent (or
``max_islands`` reached) one :class:`EngineError` names the precision that works: fp32.

The OpenVINO layout is written beside the export's compiled-model cache
(:func:`~sharp_rt.engines.openvino_engine.bf16_layout_path`); ``OpenVinoEngine`` opens bf16 with it
from then on, and its compiled blob is cached per layout.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sharp_rt.core.errors import EngineError, SharpError
from sharp_rt.export.artifact import Stage, error_summary, logged_stages
from sharp_rt.export.validate import PROBE_PHOTOS, probe_image, reference_outputs, validate_probes

RenderCheck = Callable[..., dict[str, Any]]
Evaluate = Callable[[dict[str, str]], dict[str, Any]]


def module_of_namespace(namespace: str) -> str | None:
    """The innermost predictor module path in a torch-exported ONNX node's ``namespace`` metadata.

    ``": EngineModule/predictor: SharpPredictor/predictor.feature_model: ...": "feature_model"``
    (pieces ``name: type`` separated by ``/``; the predictor's modules start with ``predictor.``).
    """
    found = None
    for piece in namespace.split("/"):
        name = piece.split(":")[0].strip()
        if name.startswith("predictor."):
            found = name.removeprefix("predictor.")
    return found


def onnx_nodes_in_islands(onnx_path: str | Path, islands: Mapping[str, str] | list[str]) -> list[str]:
    """Names of the ONNX nodes that belong to the modules ``islands`` (or modules inside them)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    nodes = []
    for node in graph.node:
        meta = {prop.key: prop.value for prop in node.metadata_props}
        module = module_of_namespace(meta.get("namespace", ""))
        if module and any(module == path or module.startswith(path + ".") for path in islands):
            nodes.append(node.name)
    return nodes


def _probes(resolution: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(photo, *probe_image(resolution, photo=photo)) for photo in PROBE_PHOTOS]


_MONODEPTH = "monodepth_model.monodepth_predictor"
_ENCODER = f"{_MONODEPTH}.encoder"
# A module computes entirely in float32 when it is an island (or inside one), or when all of its parts
# do (the weight-free glue between them aside): module -> its parts.
_PARTS: dict[str, tuple[str, ...]] = {
    "monodepth_model": (_MONODEPTH,),
    _MONODEPTH: (_ENCODER, f"{_MONODEPTH}.decoder", f"{_MONODEPTH}.head"),
    _ENCODER: tuple(
        f"{_ENCODER}.{name}"
        for name in (
            "patch_encoder",
            "image_encoder",
            "upsample_latent0",
            "upsample_latent1",
            "upsample0",
            "upsample1",
            "upsample2",
            "upsample_lowres",
            "fuse_lowres",
        )
    ),
    "feature_model": tuple(
        f"feature_model.{name}"
        for name in ("decoder", "image_encoder", "fusion", "texture_head", "geometry_head")
    ),
    "prediction_head": (
        "prediction_head.geometry_prediction_head",
        "prediction_head.texture_prediction_head",
    ),
}
NETWORKS = ("monodepth_model", "feature_model", "prediction_head")


def _float32(path: str, islands) -> bool:
    from sharp_rt.sharp_ref.mixed_precision import covered

    return covered(path, islands) or (
        path in _PARTS and all(_float32(part, islands) for part in _PARTS[path])
    )


def all_float32(islands) -> bool:
    """Whether ``islands`` leave no network part in bf16 (a "bf16" layout that is fp32 in all but name)."""
    return all(_float32(network, islands) for network in NETWORKS)


def _refusal(
    engine: str, validation: dict, islands, grown, ranking, max_islands, why: str | None = None
) -> EngineError:
    from sharp_rt.export.islands import covered as _covered

    spent = all(_covered(row["module"], islands) for row in ranking)
    if why is None:
        why = "every candidate module is float32 now" if spent else f"the cap of {max_islands} added islands"
    first = validation["failures"][0] if validation["failures"] else "validation failed"
    return EngineError(
        f"bf16 ({engine}) cannot meet its validation bounds on these weights ({first}; "
        f"{len(validation['failures'])} failure(s)) even after adding {len(grown)} float32 island(s), "
        f"{why}",
        hint="run these weights with --precision fp32 (the precision that meets every bound here)",
    )


def grow_bf16_islands(
    evaluate: Evaluate,
    rank: Callable[[], list[dict[str, Any]]],
    base: Mapping[str, str],
    *,
    engine: str,
    max_islands: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Validate ``base``; while a bound fails, add the next ranked candidates and validate again.

    evaluate(islands) -> the validation section (:func:`~sharp_rt.export.validate.validate_probes`);
    rank() -> the ranking (called once, at the first failure).  Two stages:

    1. the module candidates (rows without ``"level": "network"``), 1, 2, 4, ... per round, kept
       as they are added (as the fp16 export grows);
    2. when those are spent (or their next step would leave nothing in bf16), each whole network
       (``"level": "network"``) **on its own on** ``base``, in ranking order: a network in float32
       removes every rounding inside it and at its input, which no set of module islands does, and
       two whole networks leave almost nothing in bf16.

    A layout with every network float32 (:func:`all_float32`) is never tried: that is fp32.
    Returns ``{"fp32_islands", "grown_islands", "validation"}`` (the last round's validation, with
    ``rounds``: what each round added, its status and failures).  Raises :class:`EngineError`
    (naming fp32) when neither stage meets the bounds.
    """
    from sharp_rt.export.islands import next_islands as _next_islands
    from sharp_rt.export.islands import with_islands as _with_islands

    islands = dict(base)
    grown: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []  # every island added, also those a later stage dropped
    ranking: list[dict[str, Any]] | None = None
    networks: list[dict[str, Any]] = []
    stage_two = False
    while True:
        validation = evaluate(islands)
        added = [row["module"] for row in grown if row["round"] == len(rounds)]
        rounds.append({"added": added, "status": validation["status"], "failures": validation["failures"]})
        log(f"bf16 ({engine}) with {len(islands)} float32 island(s): {validation['status']}")
        if validation["status"] != "failed":
            break
        if ranking is None:
            full = rank()
            ranking = [row for row in full if row.get("level") != "network"]
            networks = [row for row in full if row.get("level") == "network"]
        batch = (
            []
            if stage_two
            else _next_islands(ranking, islands, 2 ** (len(rounds) - 1), max_islands, len(grown))
        )
        if batch and all_float32(_with_islands(islands, [row["module"] for row in batch], ranking)):
            batch = []  # the next module step would leave nothing in bf16: on to the whole networks
        if batch:
            first = validation["failures"][0]
            log(
                f"bf16 ({engine}) misses its bounds ({first}); adding {len(batch)} float32 island(s) "
                "along the measured bf16 sensitivity ranking:"
            )
        else:  # stage 2: the next whole network on its own on the base layout
            allowed = max_islands is None or max_islands >= 1
            candidates = [row for row in networks if allowed]
            candidates = [
                row
                for row in candidates
                if not all_float32(_with_islands(dict(base), [row["module"]], networks))
            ]
            if not candidates:
                why = None
                if not stage_two and networks and allowed:
                    why = "and every whole network would leave nothing in bf16 (that is fp32)"
                elif stage_two:
                    why = "every candidate module is float32 now, and no whole network on its own helps"
                raise _refusal(engine, validation, islands, history, ranking, max_islands, why=why)
            row = candidates[0]
            networks = [other for other in networks if other is not row]
            if not stage_two:
                log(
                    f"bf16 ({engine}) misses its bounds with every module candidate tried; trying each "
                    "whole network in float32 on its own, on the shipped layout:"
                )
            stage_two = True
            grown = []
            islands = dict(base)
            batch = [row]
        for row in batch:
            error = f"{row['error']:.1e}"
            log(f"  + {row['module']} ({row['what']}): bf16 output error {error}, rank {row['rank']}")
            grown.append({**row, "round": len(rounds)})
            history.append(row)
        islands = _with_islands(islands, [row["module"] for row in batch], ranking + networks + batch)
        islands = {
            path: what.replace("fp16 sensitivity", "bf16 sensitivity") for path, what in islands.items()
        }
    validation["rounds"] = rounds
    return {"fp32_islands": islands, "grown_islands": grown, "validation": validation}


def _load(checkpoint: str | Path):
    from sharp_rt.sharp_ref.checkpoint import checkpoint_file, detect_config, read_state_dict

    path = checkpoint_file(checkpoint)
    state = read_state_dict(path)
    return path, state, detect_config(state)


def choose_torch_bf16_layout(
    checkpoint: str | Path,
    *,
    render_check: RenderCheck | None = None,
    max_islands: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = lambda message: None,
    stage: Stage | None = None,
    probes: list[tuple[str, np.ndarray, np.ndarray]] | None = None,
    references: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """The torch engine's bf16 layout for these weights: the shipped islands, grown until the bounds hold.

    checkpoint: .pt / .safetensors.  probes / references: the probe photos and ``sharp_ref``'s fp32
    outputs on them where the caller has them (no fp32 forward repeated); None: computed here.
    Returns ``{"engine": "torch", "compute": "bfloat16", "fp32_islands", "grown_islands",
    "validation", "seconds"}``; pass ``fp32_islands`` to
    ``TorchEngine(..., fp32_islands=...)`` or ``SharpPredictor.to_compute_dtype``.
    Raises :class:`EngineError` (naming fp32) when no layout meets the bounds.
    """
    import torch

    from sharp_rt.export.islands import measure_ranking as _measure_ranking
    from sharp_rt.sharp_ref.checkpoint import predictor_from_state_dict
    from sharp_rt.sharp_ref.mixed_precision import BF16_FP32_ISLANDS

    started = time.perf_counter()
    stage = stage or logged_stages(log)
    if threads:
        torch.set_num_threads(threads)
    _, state, config = _load(checkpoint)
    reference_model = predictor_from_state_dict(state, config)
    if probes is None or references is None:
        probes = _probes(config.internal_resolution)
        references = []
        for photo, image, factor in probes:
            with stage(f"reference: sharp_ref fp32 on {photo}"):
                references.append(reference_outputs(reference_model, image, factor))

    def evaluate(islands: dict[str, str]) -> dict[str, Any]:
        model = predictor_from_state_dict(state, config).to_compute_dtype(torch.bfloat16, islands)
        with stage(f"validation: torch bf16, {len(islands)} float32 island(s), on the probes"):
            outputs = [reference_outputs(model, image, factor) for _, image, factor in probes]
            result = validate_probes(outputs, probes, references, "bf16", render_check)
        log(f"Validation {result['status']}: {error_summary(result)}")
        return result

    record = grow_bf16_islands(
        evaluate,
        lambda: _measure_ranking(reference_model, probes, stage, "bf16"),
        BF16_FP32_ISLANDS,
        engine="torch",
        max_islands=max_islands,
        log=log,
    )
    return {
        "engine": "torch",
        "compute": "bfloat16",
        **record,
        "seconds": round(time.perf_counter() - started, 1),
    }


def choose_openvino_bf16_layout(
    directory: str | Path,
    checkpoint: str | Path,
    *,
    render_check: RenderCheck | None = None,
    max_islands: int | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = lambda message: None,
    stage: Stage | None = None,
    reuse: bool = True,
    probes: list[tuple[str, np.ndarray, np.ndarray]] | None = None,
    references: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """OpenVINO's bf16 layout for an fp32 export: no islands, grown until the bounds hold; recorded.

    directory: an fp32 export (``sharp-rt export``); checkpoint: the weights it was exported from
    (the fp32 reference and the sensitivity ranking run in ``sharp_ref``).  A layout recorded for
    this export (:func:`~sharp_rt.engines.openvino_engine.read_bf16_layout`) is returned as it is
    when ``reuse``.  Otherwise the layout is grown (module docstring) and written to
    :func:`~sharp_rt.engines.openvino_engine.bf16_layout_path` (atomically), where every later bf16
    ``OpenVinoEngine`` of this export finds it.  Returns the record: ``format``, ``onnx_sha256``,
    ``fp32_islands``, ``grown_islands``, ``fp32_nodes`` (ONNX node names), ``validation``.
    probes / references: the probe photos ``(photo, image, disparity_factor)`` and ``sharp_ref``'s
    fp32 outputs on them, when the caller has them already (``sharp-rt export --precision bf16``:
    its own validation's), so no fp32 forward is repeated; None: computed here.
    Raises :class:`EngineError` (naming fp32) when no layout meets the bounds (nothing is written),
    :class:`SharpError` for an export that is not fp32.
    """
    import torch

    from sharp_rt.core.atomic import write_atomic
    from sharp_rt.core.contract import open_manifest
    from sharp_rt.engines.openvino_engine import (
        BF16_LAYOUT_FORMAT,
        OpenVinoEngine,
        bf16_layout_path,
        read_bf16_layout,
    )
    from sharp_rt.export.islands import measure_ranking as _measure_ranking
    from sharp_rt.sharp_ref.checkpoint import predictor_from_state_dict

    started = time.perf_counter()
    stage = stage or logged_stages(log)
    manifest = open_manifest(directory)
    if manifest.precision != "fp32":
        raise SharpError(
            f"OpenVINO computes bf16 from an fp32 export; {manifest.directory} holds {manifest.precision}",
            hint="export with --precision fp32",
        )
    if reuse and (recorded := read_bf16_layout(manifest)) is not None:
        log(f"bf16 layout recorded for this export: {len(recorded['fp32_islands'])} float32 island(s)")
        return recorded
    if threads:
        torch.set_num_threads(threads)
    reference_model = None
    if references is None or probes is None:
        _, state, config = _load(checkpoint)
        probes = _probes(config.internal_resolution)
        reference_model = predictor_from_state_dict(state, config)
        del state
        references = []
        for photo, image, factor in probes:
            with stage(f"reference: sharp_ref fp32 on {photo}"):
                references.append(reference_outputs(reference_model, image, factor))

    def rank() -> list[dict[str, Any]]:
        if reference_model is not None:
            return _measure_ranking(reference_model, probes, stage, "bf16")
        _, state, config = _load(checkpoint)  # only when the first layout misses its bounds
        return _measure_ranking(predictor_from_state_dict(state, config), probes, stage, "bf16")

    nodes_of: dict[tuple[str, ...], list[str]] = {}

    def evaluate(islands: dict[str, str]) -> dict[str, Any]:
        nodes = nodes_of.setdefault(
            tuple(sorted(islands)), onnx_nodes_in_islands(manifest.onnx_path, islands)
        )
        with stage(f"validation: OpenVINO bf16, {len(islands)} float32 island(s), on the probes"):
            engine = OpenVinoEngine(
                manifest, precision="bf16", threads=threads, cache=False, fp32_nodes=nodes
            )
            try:
                outputs = [engine.run(image, factor) for _, image, factor in probes]
                layout = engine.info.details.get("bf16_layout", {})
            finally:
                engine.close()
            result = validate_probes(outputs, probes, references, "bf16", render_check)
        result["openvino_layout"] = layout
        log(f"Validation {result['status']}: {error_summary(result)}")
        return result

    record = grow_bf16_islands(
        evaluate,
        rank,
        {},
        engine="OpenVINO",
        max_islands=max_islands,
        log=log,
    )
    record = {
        "format": BF16_LAYOUT_FORMAT,
        "engine": "openvino",
        "compute": "bfloat16 (INFERENCE_PRECISION_HINT=bf16)",
        "onnx_sha256": manifest.files["onnx"].sha256,
        **record,
        "fp32_nodes": nodes_of.get(tuple(sorted(record["fp32_islands"])), []),
        "seconds": round(time.perf_counter() - started, 1),
    }
    path = bf16_layout_path(manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1, default=float).encode(), overwrite=True)
    log(f"bf16 layout recorded in {path}")
    return record


# --------------------------------------------------------------------------- torch: recorded per checkpoint

TORCH_LAYOUT_FORMAT = "sharp-rt torch bf16 layout 1"
LAYOUTS_DIR = "layouts"


def torch_layout_path(sha256: str, root: str | Path | None = None) -> Path:
    """Where the torch bf16 layout of the checkpoint with ``sha256`` is recorded.

    ``<sharp-rt cache>/layouts/<sha256[:16]>-torch-bf16.json`` (``root``: instead of the cache).
    """
    from sharp_rt.core.paths import cache_root

    return (Path(root) if root is not None else cache_root()) / LAYOUTS_DIR / f"{sha256[:16]}-torch-bf16.json"


def _read_torch_record(path: Path, sha256: str) -> dict[str, Any] | None:
    from sharp_rt._version import __version__

    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    usable = (
        isinstance(record, dict)
        and record.get("format") == TORCH_LAYOUT_FORMAT
        and record.get("checkpoint_sha256") == sha256
        and record.get("sharp_rt") == __version__  # the shipped islands and candidates may change
    )
    return record if usable else None


def _choose_and_record_torch_layout(
    path: Path,
    sha256: str,
    record_path: Path,
    log: Callable[[str], None],
    stage: Stage | None,
    probes: list[tuple[str, np.ndarray, np.ndarray]] | None,
    references: list[dict[str, np.ndarray]] | None,
) -> dict[str, Any]:
    """Choose the torch bf16 layout (:func:`choose_torch_bf16_layout`) and record it, passed or refused."""
    from sharp_rt._version import __version__
    from sharp_rt.core.atomic import write_atomic

    log(
        f"Choosing the torch bf16 layout for {path.name} (once; recorded in {record_path}): "
        "sharp_ref fp32 and bf16 on the probe photos"
    )
    base = {"format": TORCH_LAYOUT_FORMAT, "checkpoint_sha256": sha256, "sharp_rt": __version__}
    try:
        chosen = choose_torch_bf16_layout(path, log=log, stage=stage, probes=probes, references=references)
    except EngineError as refused:
        record = {**base, "status": "refused", "reason": refused.message, "hint": refused.hint}
    else:
        validation = chosen["validation"]
        record = {
            **base,
            "status": "passed",
            "fp32_islands": chosen["fp32_islands"],
            "grown_islands": [
                {key: row[key] for key in ("module", "what", "error", "rank", "round")}
                for row in chosen["grown_islands"]
            ],
            "validation": {
                "status": validation["status"],
                "rounds": validation["rounds"],
                "covariances": validation["covariances"],
            },
            "seconds": chosen["seconds"],
        }
    with contextlib.suppress(OSError):  # an unwritable cache only costs the choice next time
        record_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(record_path, json.dumps(record, indent=1, default=float).encode(), overwrite=True)
    record["source"] = "chosen now"
    return record


def torch_bf16_layout(
    checkpoint: str | Path | None,
    *,
    root: str | Path | None = None,
    log: Callable[[str], None] = lambda message: None,
    stage: Stage | None = None,
    probes: list[tuple[str, np.ndarray, np.ndarray]] | None = None,
    references: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """The torch bf16 layout for these weights: recorded once per checkpoint, then read.

    checkpoint: .pt / .safetensors (None: the official one).  The first call for a checkpoint
    chooses the layout (:func:`choose_torch_bf16_layout`: two fp32 and two or more bf16 forwards on
    the probe photos) and records it, passed or refused, in :func:`torch_layout_path`; later calls
    (any process) read the record.  Returns the record: ``status`` (``passed``), ``fp32_islands``,
    ``grown_islands``, ``source`` (``recorded`` / ``chosen now``).  Raises :class:`EngineError`
    naming fp32 when bf16 cannot meet its bounds on these weights (also when a refusal is recorded).
    probes / references: as :func:`choose_torch_bf16_layout` (used only when the layout is chosen).
    """
    from sharp_rt.core.atomic import exclusive_lock
    from sharp_rt.sharp_ref.checkpoint import checkpoint_file, file_sha256

    path = checkpoint_file(checkpoint)
    sha256 = file_sha256(path)  # seconds for the official 2.8 GB file, beside a load of the same bytes
    record_path = torch_layout_path(sha256, root)
    record = _read_torch_record(record_path, sha256)
    if record is None:
        # one chooser per checkpoint (Ray workers start together): the others wait, then read its record
        with exclusive_lock(record_path.with_suffix(".lock")):
            record = _read_torch_record(record_path, sha256)
            if record is None:
                record = _choose_and_record_torch_layout(
                    path, sha256, record_path, log, stage, probes, references
                )
            else:
                record["source"] = "recorded (chosen by another process meanwhile)"
    else:
        record["source"] = "recorded"
    if record["status"] == "refused":
        raise EngineError(record["reason"], hint=record.get("hint") or "use --precision fp32")
    return record
