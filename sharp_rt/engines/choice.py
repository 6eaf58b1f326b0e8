"""Which engine to run when the user does not say: a pure function of the machine and the artifacts.

```
Machine.detect()  ─┐   (installed backends, NVIDIA GPU present, the CPU's bf16 unit)
artifacts ─────────┼─> choose_engine(...) ─> Choice(backend, precision, artifact, reason)
backend/precision ─┘   (what the user asked; "auto" leaves it to the measured ranking below)
```

With an NVIDIA GPU: a TensorRT plan if TensorRT is installed, else ONNX Runtime (its
CUDA provider), preferring an fp16 artifact.  Without one, the fastest engine
measured on CPUs of this project's class (full model, 2 threads, docs/benchmarks.md,
"End to end": interleaved rounds, medians of the engine's forward):

| rank | engine | needs | full model, AMD EPYC Zen 4 (AVX512-BF16), s / forward |
| ---: | --- | --- | ---: |
| 1 | OpenVINO bf16 | ``[openvino]``, an artifact, a CPU with AMX-BF16 or AVX512-BF16 | 56.7 |
| 2 | torch bf16 | ``[torch]``, a checkpoint, the same CPU | 99.3 |
| 3 | OpenVINO fp32 | ``[openvino]``, an artifact | 122.5 |
| 4 | torch fp32 | ``[torch]``, a checkpoint | 158.8 (ml-sharp's recipe, the same forward) |
| 5 | ONNX Runtime fp32 | ``[onnxruntime]``, an artifact | 135.2 (torch fp32: 144.5 in that run) |

The Intel probe behind rank 5 ran ONNX Runtime fp32 at 102-112 s where torch fp32 took 91.
Ranks 4 and 5 re-measured on the Zen 4 machine (issue 25; docs/benchmarks.md, "ONNX Runtime
fp32 against torch fp32", quiet re-run: 2 interleaved rounds, load 0.1-2.1): ONNX Runtime fp32
135.2 s wall / 264.8 CPU s per image against torch fp32 144.5 / 278.2 (1.05-1.07x in every image),
with 1.7-1.9 GB more peak RSS (8.05 against 6.15-6.32 GB).  The order stays torch first: the
fp32 CPU path is reached where the CPU has no bf16 units (older Xeons and EPYCs) or where
fp32 is asked for; the Intel probe had torch 1.1-1.2x ahead, a larger margin than ONNX
Runtime's here; and torch needs 1.8 GB less memory.  No
measurement on a CPU without bf16 units exists; that is what would move this rank.

``precision="auto"`` allows bf16 (the bf16 bound of docs/engine-contract.md) only where
the CPU has native bf16 units; ``"fp32"`` keeps to fp32 engines (the fp32 bound).
``"int8"`` (OpenVINO, opt-in) is never chosen by ``auto``: the rule (issue 25) is that auto
picks it only once it is measured both >= 1.6x OpenVINO bf16 and within its fidelity goal on
every evaluation photo on the full model.  Measured (docs/benchmarks.md, "Full model, int8"):
1.40x bf16 by wall and by CPU seconds (the protocol's 2 rounds x 3 photos, quiet machine; 1.46x
in a loaded run), renders >= 48.6 dB from the reference, half the memory; the speed goal is
missed, and per Gaussian it exceeds the bound its build checks on one photo.  On a CPU with
AMX-INT8 (Intel Xeon 4th gen+) the choice is the same, OpenVINO bf16 (on AMX-BF16): no AMX
machine has measured int8 against it; the peak int8 : bf16 ratio there is 2 : 1 as on Zen 4's
AVX-512 (2048 : 1024 against 128 : 64 op/cycle/core, ``sharp_rt.runtime.cpu``), and int8 speeds
only the matrix products, the very layers AMX-BF16 already runs fastest, so no gain is assumed
without a measurement.
Torch runs only from a checkpoint the user named (no surprise 2.8 GB download).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from sharp_rt.core.contract import (
    BACKENDS,
    COMPUTE_PRECISIONS,
    ArtifactPrecision,
    Backend,
    BackendRequest,
    Manifest,
    Precision,
    PrecisionRequest,
    read_manifest,
)
from sharp_rt.core.errors import EngineError, SharpError
from sharp_rt.runtime.cpu import read_cpu_info

logger = logging.getLogger("sharp_rt.engines")
_MODULE = {backend: "torch" if backend == "aoti" else backend for backend in BACKENDS}  # what each needs


@dataclasses.dataclass(frozen=True)
class Machine:
    """What the engine choice depends on."""

    backends: frozenset[str]  # installed backends (core.contract.BACKENDS; aoti when torch is)
    nvidia_gpu: bool  # an NVIDIA GPU is visible to the driver
    bf16_unit: str | None  # "AMX-BF16", "AVX512-BF16" or None (sharp_rt.runtime.cpu.CpuInfo.bf16_unit)
    cpu: str = ""  # CPU model name, for messages

    @classmethod
    def detect(cls) -> Machine:
        """Detect the backends by import spec (nothing is imported), GPU from the driver, CPU flags."""
        cpu = read_cpu_info()
        installed = frozenset(b for b in BACKENDS if importlib.util.find_spec(_MODULE[b]) is not None)
        gpu_dir = Path("/proc/driver/nvidia/gpus")
        nvidia = gpu_dir.is_dir() and any(gpu_dir.iterdir())
        return cls(installed, nvidia, cpu.bf16_unit, cpu.model_name)


@dataclasses.dataclass(frozen=True)
class ArtifactOption:
    """An export directory the choice may use."""

    directory: Path  # holds manifest.json
    precision: ArtifactPrecision  # what the export stores: fp32 or fp16 (bf16: AOTInductor packages)
    has_plan: bool  # a TensorRT plan is present
    # the manifest as read, so the engine the choice opens does not read it again
    manifest: Manifest | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def read(cls, directory: str | Path) -> ArtifactOption:
        """Summarize an artifact directory from its manifest (sizes not verified: cheap)."""
        return cls.of(read_manifest(directory, verify="none", allow_failed_validation=True))

    @classmethod
    def of(cls, manifest: Manifest) -> ArtifactOption:
        """The option a manifest already read describes (it is kept for opening the engine)."""
        return cls(manifest.directory, manifest.precision, manifest.plan_path is not None, manifest)


@dataclasses.dataclass(frozen=True)
class Choice:
    """The engine to open and why."""

    backend: Backend  # never "auto": the request resolved
    precision: Precision  # compute precision, resolved: fp32, fp16, bf16 or int8
    artifact: Path | None  # None: torch from a checkpoint
    reason: str  # one sentence for `sharp-rt info` and predict's first line
    # the engine to open instead when this one does not run here (auto chose a TensorRT plan: ONNX Runtime);
    # not compared: two choices are equal when they open the same engine for the same reason
    fallback: Backend | None = dataclasses.field(default=None, compare=False)
    # the artifact's manifest as read while choosing (opening reuses it; None: read it when opening)
    manifest: Manifest | None = dataclasses.field(default=None, compare=False, repr=False)


def _check_request(backend: str, precision: str) -> None:
    if backend not in ("auto", *BACKENDS):
        raise SharpError(f"Unknown backend {backend!r}", hint=f"use auto, {', '.join(BACKENDS)}")
    if precision not in ("auto", *COMPUTE_PRECISIONS):
        raise SharpError(f"Unknown precision {precision!r}", hint="use auto, fp32, bf16, fp16 or int8")


def _pick(artifacts: Sequence[ArtifactOption], precision: str) -> ArtifactOption | None:
    return next((a for a in artifacts if a.precision == precision), None)


def choose_engine(
    machine: Machine,
    artifacts: Iterable[ArtifactOption],
    *,
    backend: BackendRequest = "auto",
    precision: PrecisionRequest = "auto",
    checkpoint: bool = False,
) -> Choice:
    """The engine to run: the user's ``backend`` / ``precision`` where given, else the fastest that fits.

    machine: what is installed and what the hardware offers.
    artifacts: export directories to choose among, in the user's order.
    checkpoint: the user named a checkpoint (so torch can run without an export).
    The choice keeps the chosen artifact's manifest where the option carries it (opening reads
    nothing again); ``auto`` choosing a TensorRT plan names ONNX Runtime as its ``fallback``;
    ``auto`` choosing an artifact that holds an AOTInductor package opens it with ``aoti``.
    Raises SharpError when nothing installed can run what is available.
    """
    artifacts = list(artifacts)
    choice = _choose(machine, artifacts, backend, precision, checkpoint)
    option = next((a for a in artifacts if a.directory == choice.artifact), None)
    manifest = option.manifest if option is not None else None
    if backend == "auto" and manifest is not None and manifest.aoti_path is not None:
        why = "an AOTInductor package"
        return Choice("aoti", manifest.precision, manifest.directory, why, manifest=manifest)
    fallback = "onnxruntime" if backend == "auto" and choice.backend == "tensorrt" else None
    return dataclasses.replace(choice, fallback=fallback, manifest=manifest)


def choose_artifact_engine(
    source: str | Path | Manifest,
    *,
    backend: BackendRequest = "auto",
    precision: PrecisionRequest = "auto",
    machine: Machine | None = None,
    providers: bool = False,
) -> Choice:
    """The engine to open one export with, decided once: backend, precision, reason and the manifest.

    source: the export directory, or its manifest already read (then nothing is read again).
    backend / precision: the user's request (``auto``: see :data:`sharp_rt.core.contract.AUTO`).
    machine: default :meth:`Machine.detect` (consulted only by ``backend="auto"`` and by
    openvino's auto precision).  providers: the caller passes ONNX Runtime providers (auto means
    ONNX Runtime).  An AOTInductor package opens with ``aoti``.  Raises EngineError for a
    precision the backend cannot compute from this export (:func:`check_precision`), SharpError
    for an unknown name.
    """
    _check_request(backend, precision)
    if backend == "torch":
        raise EngineError(
            "The torch backend runs a checkpoint, not an export",
            hint="open the export with auto, tensorrt, openvino, onnxruntime or aoti; "
            "or use TorchEngine.from_checkpoint",
        )
    manifest = (
        source
        if isinstance(source, Manifest)
        else read_manifest(source, verify="size", allow_failed_validation=True)
    )
    option = ArtifactOption.of(manifest)
    check_precision(manifest.directory, manifest.precision, backend, precision)
    if backend == "aoti" or (backend == "auto" and manifest.aoti_path is not None):
        check_precision(manifest.directory, manifest.precision, "aoti", precision)
        why = "aoti requested" if backend == "aoti" else "an AOTInductor package"
        return Choice("aoti", manifest.precision, manifest.directory, why, manifest=manifest)
    if backend == "auto" and providers:
        check_precision(manifest.directory, manifest.precision, "onnxruntime", precision)
        reason = "ONNX Runtime providers given"
        return Choice("onnxruntime", manifest.precision, manifest.directory, reason, manifest=manifest)
    if backend == "auto" or (backend == "openvino" and precision == "auto"):
        machine = machine or Machine.detect()
    else:  # an explicit backend and precision need nothing from the machine
        machine = Machine(frozenset(BACKENDS), False, None)
    return choose_engine(machine, [option], backend=backend, precision=precision)


def _choose(
    machine: Machine,
    artifacts: list[ArtifactOption],
    backend: BackendRequest,
    precision: PrecisionRequest,
    checkpoint: bool,
) -> Choice:
    _check_request(backend, precision)
    bf16_ok = precision in ("auto", "bf16") and machine.bf16_unit is not None
    if backend == "torch" or (backend == "auto" and not artifacts and checkpoint):
        return _torch_choice(machine, precision, explicit=backend == "torch")
    if backend != "auto":
        return _explicit_artifact_choice(machine, artifacts, backend, precision)
    if precision == "int8" and artifacts:
        return _int8_choice(machine, artifacts)
    if not artifacts:
        raise SharpError(
            "No exported engine and no checkpoint to run",
            hint="create one with `sharp-rt export`, pass --engine DIR, or run torch with -c CHECKPOINT",
        )
    if machine.nvidia_gpu and precision != "bf16":
        gpu_order = [a for a in artifacts if a.precision == "fp16"] + [
            a for a in artifacts if a.precision != "fp16"
        ]
        if precision != "auto":
            gpu_order = [a for a in gpu_order if a.precision == precision]
        planned = next((a for a in gpu_order if a.has_plan), None)
        if "tensorrt" in machine.backends and planned is not None:
            return Choice("tensorrt", planned.precision, planned.directory, "NVIDIA GPU and a TensorRT plan")
        if "onnxruntime" in machine.backends and gpu_order:
            return Choice(
                "onnxruntime",
                gpu_order[0].precision,
                gpu_order[0].directory,
                "NVIDIA GPU without a usable TensorRT plan: ONNX Runtime (CUDA provider when present)",
            )
    return _cpu_choice(machine, artifacts, precision, bf16_ok, checkpoint)


def _cpu_choice(
    machine: Machine,
    artifacts: list[ArtifactOption],
    precision: PrecisionRequest,
    bf16_ok: bool,
    checkpoint: bool,
) -> Choice:
    """The fastest CPU engine by the measured ranking of the module docstring."""
    fp32_artifact = _pick(artifacts, "fp32")
    any_artifact = fp32_artifact or artifacts[0]
    has = machine.backends.__contains__
    refused = any_artifact.manifest is not None and any_artifact.manifest.bf16_refused
    if refused and bf16_ok and precision == "auto":  # its export found bf16 missing its bounds here
        bf16_ok = False
    if bf16_ok and has("openvino"):
        return Choice(
            "openvino",
            "bf16",
            any_artifact.directory,
            f"no NVIDIA GPU; this CPU has {machine.bf16_unit}: OpenVINO bf16 is the fastest CPU "
            "engine measured (1.5x torch bf16, 2.6x torch fp32 on the full model)",
        )
    if bf16_ok and has("torch") and checkpoint:
        return Choice(
            "torch",
            "bf16",
            None,
            f"no NVIDIA GPU, OpenVINO not installed; this CPU has {machine.bf16_unit}: torch bf16 "
            "(pip install 'sharp-rt[openvino]' runs 1.5x faster)",
        )
    if precision == "bf16":
        raise SharpError(
            "bf16 needs OpenVINO (with an export) or torch (with a checkpoint), and a CPU with bf16 units"
            if machine.bf16_unit
            else "This CPU has no bf16 units (AMX-BF16 or AVX512-BF16)",
            hint="pip install 'sharp-rt[openvino]'" if machine.bf16_unit else "use --precision fp32",
        )
    why = "fp32 requested" if precision == "fp32" else "no bf16 units on this CPU"
    if refused and precision == "auto" and machine.bf16_unit:
        why = "bf16 refused for these weights (the export's manifest, layout.bf16)"
    if precision == "fp16":  # an export-precision request: the engine's manifest check refuses a mismatch
        artifact = _pick(artifacts, "fp16") or artifacts[0]
        return Choice("onnxruntime", "fp16", artifact.directory, "fp16 requested")
    if has("openvino") and fp32_artifact is not None:
        return Choice(
            "openvino",
            "fp32",
            fp32_artifact.directory,
            f"no NVIDIA GPU, {why}: OpenVINO fp32 is the fastest fp32 CPU engine measured",
        )
    if has("torch") and checkpoint:
        return Choice("torch", "fp32", None, f"no NVIDIA GPU, {why}, OpenVINO not installed: torch fp32")
    if has("onnxruntime"):
        return Choice(
            "onnxruntime",
            any_artifact.precision,
            any_artifact.directory,
            f"no NVIDIA GPU, {why}, OpenVINO not installed: ONNX Runtime "
            "(pip install 'sharp-rt[openvino]' is faster on CPUs)",
        )
    raise SharpError(
        "No inference backend is installed that can run the export",
        hint="pip install 'sharp-rt[openvino]' (CPU) or 'sharp-rt[onnxruntime]'",
    )


def _int8_choice(machine: Machine, artifacts: list[ArtifactOption]) -> Choice:
    """``--precision int8``: OpenVINO int8, quantized from an fp32 export (opt-in)."""
    fp32_artifact = _pick(artifacts, "fp32")
    if "openvino" not in machine.backends or fp32_artifact is None:
        raise SharpError(
            "int8 runs on OpenVINO, quantized from an fp32 export",
            hint="pip install 'sharp-rt[openvino,int8]' and export with `sharp-rt export --precision fp32`",
        )
    return Choice(
        "openvino",
        "int8",
        fp32_artifact.directory,
        "int8 requested: OpenVINO int8 (matrix products; convolutions where they keep the bound) (opt-in; "
        "auto does not pick it: 1.40x bf16 measured on the full model, short of the 1.6x its choice needs)",
    )


def _torch_choice(machine: Machine, precision: PrecisionRequest, explicit: bool) -> Choice:
    if "torch" not in machine.backends:
        raise SharpError("The torch backend needs PyTorch", hint="pip install 'sharp-rt[torch]'")
    asked = "torch requested" if explicit else "a checkpoint and no export"
    if precision != "auto":
        return Choice("torch", precision, None, f"{asked}, {precision} requested")
    if machine.nvidia_gpu or machine.bf16_unit is None:
        return Choice("torch", "fp32", None, f"{asked}: fp32 (no CPU bf16 units, or a GPU)")
    return Choice("torch", "bf16", None, f"{asked}; this CPU has {machine.bf16_unit}: bf16")


def _explicit_artifact_choice(
    machine: Machine, artifacts: list[ArtifactOption], backend: Backend, precision: PrecisionRequest
) -> Choice:
    if not artifacts:
        raise SharpError(f"The {backend} backend needs an exported engine", hint="pass --engine DIR")
    if backend == "openvino":
        if precision == "fp16":
            raise SharpError(
                "OpenVINO on the CPU computes in fp32 or bf16", hint="use --precision auto, fp32 or bf16"
            )
        artifact = _pick(artifacts, "fp32") or artifacts[0]
        resolved = precision if precision != "auto" else ("bf16" if machine.bf16_unit else "fp32")
        return Choice("openvino", resolved, artifact.directory, f"openvino requested, {resolved}")
    if precision in ("bf16", "int8"):
        raise SharpError(
            f"{backend} runs the export's own precision (fp32 or fp16), not {precision}",
            hint="use --backend openvino for bf16 on a CPU",
        )
    artifact = (_pick(artifacts, precision) if precision != "auto" else None) or artifacts[0]
    return Choice(backend, artifact.precision, artifact.directory, f"{backend} requested")


def _complete_artifact(directory: Path) -> ArtifactOption:
    """An export whose manifest reads and whose files are all there at their recorded sizes.

    Raises EngineError (a SharpError) naming what is missing or truncated.
    """
    return ArtifactOption.of(read_manifest(directory, verify="size", allow_failed_validation=True))


DEFAULT_EXPORT_NAMES = ("sharp-fp16", "sharp-fp32")  # what `sharp-rt export` writes for the official model


def default_artifacts(engines_dir: str | Path = "engines") -> list[ArtifactOption]:
    """The exports ``predict`` chooses among when given no ``--engine`` (``sharp-rt info`` shows the same).

    The rule: ``engines_dir/sharp-fp16`` and ``engines_dir/sharp-fp32`` where they hold a
    complete export (the official model's exports; :func:`choose_engine` picks between
    them); if neither does, the one complete export under ``engines_dir/*/``.  Complete:
    a readable manifest and every file it lists, at its recorded size (cheap: no hashing).
    A broken ``sharp-*`` export (e.g. ``model.onnx.data`` missing) is skipped with a logged
    warning while a complete one is there, and is the error when none is.
    Raises SharpError when there is none (naming where it looked), or when there are
    several other exports and no ``sharp-*`` one (which model to run is the user's call).
    """
    engines_dir = Path(engines_dir)
    named = [engines_dir / name for name in DEFAULT_EXPORT_NAMES]
    preferred: list[ArtifactOption] = []
    broken: list[SharpError] = []
    for directory in named:
        if (directory / "manifest.json").is_file():
            try:
                preferred.append(_complete_artifact(directory))
            except SharpError as error:
                broken.append(error)
    if preferred:
        for error in broken:
            logger.warning("skipping a broken export: %s", error.message)
        return preferred
    if broken:
        error = broken[0]
        raise SharpError(f"The default export is broken: {error.message}", hint=error.hint)
    others = []
    for manifest_path in sorted(engines_dir.glob("*/manifest.json")):
        try:
            others.append(_complete_artifact(manifest_path.parent))
        except SharpError:
            continue  # a broken or foreign directory is not a candidate (`sharp-rt info` lists it)
    if len(others) == 1:
        return others
    if others:
        listed = ", ".join(str(a.directory) for a in others)
        raise SharpError(
            f"Several exported engines in {engines_dir}/, none of them {' or '.join(map(str, named))}: "
            + listed,
            hint=f"pick one with --engine, e.g. --engine {others[0].directory}",
        )
    raise SharpError(
        f"No exported engine found (looked in {', '.join(map(str, named))}, then {engines_dir}/*/)",
        hint="create one with `sharp-rt export --precision fp16` (GPU) or `sharp-rt export --precision fp32` "
        "(CPU), pass --engine DIR, or run the PyTorch reference with `--backend torch`",
    )


def check_precision(
    directory: str | Path,
    artifact_precision: ArtifactPrecision,
    backend: BackendRequest,
    precision: PrecisionRequest,
) -> None:
    """Refuse an explicit ``precision`` that ``backend`` cannot compute from the export at ``directory``.

    artifact_precision: what the export holds (its manifest's precision).
    What each backend computes: openvino fp32 or bf16, from an fp32 export; onnxruntime,
    tensorrt and aoti the export's own precision; ``precision="auto"`` (and backends auto,
    torch) are never refused.  Raises EngineError naming what the export holds and what to do
    (docs/engine-contract.md, section 7).
    """
    if precision == "auto" or backend in ("auto", "torch"):
        return
    holds = f"{directory} holds a {artifact_precision} engine, but {precision} was requested"
    if backend == "openvino":
        if precision == "fp16":
            raise EngineError(
                "OpenVINO on the CPU computes in fp32 or bf16", hint="use --precision auto, fp32 or bf16"
            )
        if artifact_precision != "fp32":
            raise EngineError(
                f"{holds}: OpenVINO computes fp32 or bf16 from an fp32 export",
                hint="pass an fp32 export (`sharp-rt export --precision fp32`), or use --precision auto",
            )
        return
    if artifact_precision != precision:
        other = (
            "--backend openvino for bf16 (from an fp32 export)"
            if precision == "bf16" and backend != "aoti"
            else f"an export made with `sharp-rt export --precision {precision}`"
        )
        raise EngineError(
            f"{holds}: {backend} computes in the export's own precision",
            hint=f"use --precision auto or {artifact_precision}, or {other}",
        )
