"""``sharp-rt info``: what is installed and usable (backends, providers, GPU), exported engines, caches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sharp_rt._version import __version__
from sharp_rt.core.errors import SharpError


def _probe(module: str) -> tuple[str, str]:
    """(status, details) of an optional package: version and what it can run on."""
    import importlib
    import importlib.metadata

    try:
        mod = importlib.import_module(module)
    except Exception as error:  # not installed, or broken (e.g. a CUDA-only wheel)
        return "missing" if isinstance(error, ModuleNotFoundError) else "broken", str(error).splitlines()[0][
            :90
        ]
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    if module == "torch":
        gpus = [mod.cuda.get_device_name(i) for i in range(mod.cuda.device_count())]
        extra = f"CUDA: {', '.join(gpus)}" if gpus else "CUDA: none"
        extra += ", MPS: yes" if mod.backends.mps.is_available() else ""
        return version, extra
    if module == "onnxruntime":
        return version, "providers: " + ", ".join(mod.get_available_providers())
    if module == "openvino":
        from sharp_rt.engines.openvino_engine import cpu_capabilities

        return version.split("-")[0], "CPU capabilities: " + ", ".join(cpu_capabilities(mod.Core()))
    return version, ""


def info_command(
    engines_dir: Annotated[Path, typer.Option(help="Where to look for exported engines.")] = Path("engines"),
) -> None:
    """Show what is installed and usable: backends, providers, GPU, engines, cache paths."""
    import platform

    from sharp_rt.cli.console import plain, results, show

    title = f"sharp-rt {__version__} (Python {platform.python_version()}, {platform.machine()})"
    table = Table(title=plain(title))
    table.add_column("component")
    table.add_column("version / status")
    table.add_column("details")
    for label, module in [
        ("numpy", "numpy"),
        ("torch backend", "torch"),
        ("OpenVINO backend (CPU)", "openvino"),
        ("ONNX Runtime backend", "onnxruntime"),
        ("TensorRT backend", "tensorrt"),
        ("onnx (export)", "onnx"),
        ("gsplat (GPU rendering)", "gsplat"),
        ("pillow-heif (HEIC)", "pillow_heif"),
        ("imageio (render videos)", "imageio"),
        ("viser (view, predict --view)", "viser"),
        ("Ray (predict --ray)", "ray"),
        ("Triton client (predict --server)", "tritonclient"),
    ]:
        table.add_row(label, *map(plain, _probe(module)))
    results.print()
    results.print(table)

    artifacts = Table(title=plain(f"Exported engines in {engines_dir}/"))
    for column in ("directory", "config", "precision", "validation", "TensorRT plan", "status"):
        artifacts.add_column(column)
    from sharp_rt.core.contract import MANIFEST_NAME, read_manifest

    for manifest_path in sorted(engines_dir.glob(f"*/{MANIFEST_NAME}")):
        try:
            manifest = read_manifest(manifest_path.parent, allow_failed_validation=True)
        except SharpError as error:
            unreadable = (manifest_path.parent, "?", "?", "?", "?")
            artifacts.add_row(*map(plain, unreadable), plain(error.message, style="red"))
            continue
        plan = manifest.tensorrt.get("gpu_name", "yes") if manifest.plan_path else "no"
        if manifest.aoti is not None:
            plan = f"no (AOTInductor package, {manifest.aoti.get('device')})"
        row = (manifest.directory, manifest.config, manifest.precision, manifest.validation_status, plan)
        artifacts.add_row(*map(plain, (*row, "ok")))
    none = plain(f"No exported engines in {engines_dir}/ (sharp-rt export)")
    results.print(artifacts if artifacts.row_count else none)
    _print_default_engine(engines_dir)

    from sharp_rt.core.paths import cache_root, official_checkpoint_path

    checkpoint = official_checkpoint_path()
    state = "present" if checkpoint.is_file() else "not downloaded"
    show("official checkpoint: {} ({})", checkpoint, state, out=results)
    show(
        "sharp-rt cache:      {} (engines built on first use, TensorRT timing caches, read-only exports' "
        "OpenVINO caches)",
        cache_root(),
        out=results,
    )


def _print_default_engine(engines_dir: Path) -> None:
    """The CPU and the engine `sharp-rt predict` would pick here, with the reason.

    The same rule as predict (engines.choice.default_artifacts, then choose_engine); predict
    reads ./engines, so with another --engines-dir this is what `predict` run there would pick.
    """
    from sharp_rt.cli.console import results, show
    from sharp_rt.engines.choice import Machine, choose_engine, default_artifacts
    from sharp_rt.runtime.cpu import read_cpu_info

    cpu = read_cpu_info()
    bf16, int8 = cpu.bf16_unit or "no native unit", cpu.int8_unit or "no VNNI/AMX"
    show(
        "CPU:                 {}, {} CPUs, {}, bf16: {}, int8: {}",
        cpu.model_name, cpu.logical_cpus, cpu.vector_isa, bf16, int8, out=results,
    )  # fmt: skip
    try:
        choice = choose_engine(Machine.detect(), default_artifacts(engines_dir))
    except SharpError as error:
        from sharp_rt.export.first_run import first_run_possible

        if first_run_possible():  # predict builds the engine from the official checkpoint on first use
            cached = _cached_default_engine()
            if cached is not None:
                show("default engine:      cached: {} (`sharp-rt cache list`)", cached, out=results)
                return
            show(
                "default engine:      built on first use into the engine cache (`sharp-rt cache list`)",
                out=results,
            )
            return
        show("default engine:      none ({})", error.message, out=results)
        return
    where = choice.artifact or "checkpoint"
    show(
        "default engine:      {} {} on {}: {}",
        choice.backend, choice.precision, where, choice.reason, out=results,
    )  # fmt: skip


def _cached_default_engine() -> Path | None:
    """The engine cache's usable entry for the official checkpoint on this machine (None: none yet)."""
    from sharp_rt.export.first_run import engines_root, locate

    if not engines_root().is_dir():  # nothing built yet: no need to hash the checkpoint
        return None
    try:
        target = locate(None, "auto", None, None, {})  # the checkpoint's hash is cached beside the entries
        return target.directory if target.problem(True) is None else None
    except (SharpError, OSError):
        return None
