"""The engine of a command's options, decided once: ``engine_spec`` -> :class:`EngineSpec`.

```
--engine DIR / -c CKPT / --backend / --precision / --device / --compile / --no-cache / --calibration
  ─> refuse combinations that cannot run together (SharpError: which option to drop)
  ─> an export directory, the default export (engines/, engines.choice.default_artifacts),
     torch on a checkpoint, or the engine cache built on first use (export.first_run)
  ─> EngineSpec with its choice (backend, precision, reason; the manifest read once)
```

Shared by ``sharp-rt predict`` and ``sharp-rt view PHOTO``.
"""

from __future__ import annotations

from pathlib import Path

from sharp_rt.core.contract import BackendRequest, PrecisionRequest
from sharp_rt.core.errors import SharpError
from sharp_rt.engines.choice import Machine, check_precision, choose_engine, default_artifacts
from sharp_rt.predict.predictor import EngineSpec

FIRST_RUN_HINT = (
    "; or put the official checkpoint in the torch-hub cache (`sharp-rt predict --backend torch` downloads "
    "it), and predict builds its engine on first use"
)


def check_engine_options(
    engine: Path | None,
    backend: BackendRequest,
    checkpoint: Path | None,
    precision: PrecisionRequest,
    compile: bool,
    calibration: Path | None,
) -> None:
    """Raise :class:`SharpError` for engine options that cannot run together, naming which to drop."""
    if compile and backend != "torch":
        raise SharpError(
            "--compile applies to the torch backend", hint="add --backend torch, or drop --compile"
        )
    if engine is not None and backend == "torch":
        raise SharpError(
            "--backend torch runs a checkpoint (-c), not an export: --engine does not apply",
            hint="drop --backend torch to run the export (--engine takes an export for onnxruntime, "
            "openvino, tensorrt or aoti), or drop --engine and pass -c CHECKPOINT",
        )
    if engine is not None and checkpoint is not None:
        raise SharpError(
            "-c and --engine were both given: -c runs the torch backend on a checkpoint, "
            "--engine runs an export",
            hint="pass one of them (an export already holds its weights)",
        )
    if checkpoint is not None and backend not in ("auto", "torch"):
        raise SharpError(
            f"--backend {backend} runs an export, not a checkpoint: -c applies to --backend torch only",
            hint=f"export first (`sharp-rt export -c {checkpoint}`), then pass --engine DIR --backend "
            f"{backend}; or use --backend torch",
        )
    if backend == "aoti" and engine is None:
        raise SharpError(
            "--backend aoti needs --engine DIR", hint="export one with `sharp-rt export --target aoti`"
        )
    if calibration is not None and precision != "int8":
        raise SharpError("--calibration applies to --precision int8", hint="add --precision int8")


def engine_spec(
    engine: Path | None,
    backend: BackendRequest,
    checkpoint: Path | None,
    device: str,
    precision: PrecisionRequest,
    threads: int | None,
    compile: bool = False,
    no_cache: bool = False,
    calibration: Path | None = None,
) -> EngineSpec:
    """Pick the engine: an export directory, the default export, or torch from a checkpoint.

    No export found, no -c and backend auto: the official checkpoint, when it is in the torch-hub
    cache, runs as the engine this machine runs fastest, built into ``<sharp-rt cache>/engines/``
    on first use (:mod:`sharp_rt.export.first_run`); ``no_cache`` turns that off.

    Without --engine (and without -c or --backend torch) the export comes from
    ``engines/`` by :func:`sharp_rt.engines.choice.default_artifacts`, the rule
    `sharp-rt info` shows.  The engine is decided here, once (the returned spec's ``choice``:
    backend, precision, reason, the manifest read once); an explicit --precision the backend
    cannot compute from the export is refused here, before any image is read.  Raises
    :class:`SharpError` (or ``EngineError``) for options that cannot run together or an engine
    that cannot run here.
    """
    check_engine_options(engine, backend, checkpoint, precision, compile, calibration)
    calibrate = calibration.resolve() if calibration is not None else None
    if engine is None and backend != "torch" and checkpoint is None:
        try:
            options = default_artifacts(Path("engines"))
        except SharpError as error:
            if no_cache or backend != "auto":
                raise
            from sharp_rt.export.first_run import first_run_possible

            if not first_run_possible():
                raise SharpError(error.message, hint=(error.hint or "") + FIRST_RUN_HINT) from None
            return EngineSpec(backend="auto", precision=precision, threads=threads, engine_cache=True)
        choice = choose_engine(Machine.detect(), options, backend=backend, precision=precision)
        if choice.manifest is not None:
            check_precision(choice.manifest.directory, choice.manifest.precision, backend, precision)
        if choice.artifact is not None:
            return EngineSpec(
                artifact=choice.artifact.resolve(),
                backend=backend,
                precision=precision,
                threads=threads,
                calibration=calibrate,
                choice=choice,
            )
    if engine is not None and backend != "torch":
        return EngineSpec(
            artifact=engine.resolve(),
            backend=backend,
            precision=precision,
            threads=threads,
            calibration=calibrate,
        ).decided()
    return EngineSpec(
        checkpoint=checkpoint.resolve() if checkpoint else None,
        backend="torch",
        device=device,
        precision=precision,
        threads=threads,
        compile=compile,
    ).decided()
