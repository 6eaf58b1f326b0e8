"""The default engine is a pure function of the machine and the artifacts: each rule, checked alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharp_rt.core.errors import SharpError
from sharp_rt.engines.choice import ArtifactOption, Choice, Machine, check_precision, choose_engine
from sharp_rt.runtime.cpu import parse_cpuinfo, peak_rates

FP32 = ArtifactOption(Path("engines/sharp-fp32"), "fp32", has_plan=False)
FP16 = ArtifactOption(Path("engines/sharp-fp16"), "fp16", has_plan=False)
FP16_PLAN = ArtifactOption(Path("engines/sharp-fp16"), "fp16", has_plan=True)
EVERYTHING = frozenset({"tensorrt", "openvino", "onnxruntime", "torch"})


def machine(*backends: str, gpu: bool = False, bf16: str | None = "AVX512-BF16") -> Machine:
    return Machine(frozenset(backends) if backends else EVERYTHING, gpu, bf16, "test CPU")


def test_cpu_with_bf16_units_and_openvino_runs_openvino_bf16_on_the_fp32_export():
    choice = choose_engine(machine(), [FP16, FP32])
    assert (choice.backend, choice.precision, choice.artifact) == ("openvino", "bf16", FP32.directory)
    assert "AVX512-BF16" in choice.reason and "no NVIDIA GPU" in choice.reason


def test_fp32_request_keeps_openvino_but_in_fp32():
    choice = choose_engine(machine(), [FP32], precision="fp32")
    assert (choice.backend, choice.precision) == ("openvino", "fp32")


def test_cpu_without_bf16_units_never_picks_bf16():
    choice = choose_engine(machine(bf16=None), [FP32])
    assert (choice.backend, choice.precision) == ("openvino", "fp32")
    assert "no bf16 units" in choice.reason
    with pytest.raises(SharpError, match="no bf16 units"):
        choose_engine(machine(bf16=None), [FP32], precision="bf16")


def test_without_openvino_torch_bf16_beats_onnxruntime_when_a_checkpoint_is_given():
    with_checkpoint = choose_engine(machine("onnxruntime", "torch"), [FP32], checkpoint=True)
    assert (with_checkpoint.backend, with_checkpoint.precision, with_checkpoint.artifact) == (
        "torch",
        "bf16",
        None,
    )
    without = choose_engine(machine("onnxruntime", "torch"), [FP32])
    assert (without.backend, without.artifact) == ("onnxruntime", FP32.directory)
    assert "sharp-rt[openvino]" in without.reason


def test_without_openvino_or_bf16_units_torch_fp32_ranks_before_onnxruntime_fp32():
    """Ranks 4 and 5 (choice.py's table): torch fp32 from a checkpoint, else ONNX Runtime fp32."""
    for bf16 in (None, "AVX512-BF16"):  # no bf16 units, or fp32 asked for
        precision = "auto" if bf16 is None else "fp32"
        checkpoint = choose_engine(
            machine("onnxruntime", "torch", bf16=bf16), [FP32], precision=precision, checkpoint=True
        )
        assert (checkpoint.backend, checkpoint.precision, checkpoint.artifact) == ("torch", "fp32", None)
        export_only = choose_engine(machine("onnxruntime", "torch", bf16=bf16), [FP32], precision=precision)
        assert (export_only.backend, export_only.precision) == ("onnxruntime", "fp32")


def test_nvidia_gpu_prefers_a_tensorrt_plan_then_onnxruntime_on_fp16():
    assert choose_engine(machine(gpu=True), [FP32, FP16_PLAN]) == Choice(
        "tensorrt", "fp16", FP16_PLAN.directory, "NVIDIA GPU and a TensorRT plan"
    )
    no_trt = choose_engine(machine("onnxruntime", "openvino", gpu=True), [FP32, FP16_PLAN])
    assert (no_trt.backend, no_trt.artifact) == ("onnxruntime", FP16_PLAN.directory)


def test_checkpoint_without_export_runs_torch_in_the_cpus_best_precision():
    assert choose_engine(machine(), [], checkpoint=True).precision == "bf16"
    assert choose_engine(machine(bf16=None), [], checkpoint=True).precision == "fp32"
    assert choose_engine(machine(gpu=True), [], checkpoint=True).precision == "fp32"
    assert choose_engine(machine(), [], backend="torch", precision="fp32").precision == "fp32"


def test_nothing_to_run_is_a_clear_error():
    with pytest.raises(SharpError, match="No exported engine and no checkpoint"):
        choose_engine(machine(), [])
    with pytest.raises(SharpError, match="needs PyTorch"):
        choose_engine(machine("openvino"), [], backend="torch")
    with pytest.raises(SharpError, match="No inference backend"):
        choose_engine(machine("torch"), [FP32])


def test_explicit_backend_is_kept_and_bf16_refused_where_it_cannot_run():
    assert choose_engine(machine(), [FP32], backend="onnxruntime").backend == "onnxruntime"
    with pytest.raises(SharpError, match="not bf16"):
        choose_engine(machine(), [FP32], backend="onnxruntime", precision="bf16")
    with pytest.raises(SharpError, match="fp32 or bf16"):
        choose_engine(machine(), [FP32], backend="openvino", precision="fp16")


@pytest.mark.parametrize(
    ("backend", "holds", "asked", "expected"),
    [
        ("onnxruntime", "fp32", "bf16", "holds a fp32 engine, but bf16 was requested: onnxruntime computes"),
        ("onnxruntime", "fp32", "fp16", "holds a fp32 engine, but fp16 was requested"),
        ("tensorrt", "fp16", "fp32", "holds a fp16 engine, but fp32 was requested: tensorrt computes"),
        ("aoti", "bf16", "fp32", "holds a bf16 engine, but fp32 was requested: aoti computes"),
        ("openvino", "fp16", "bf16", "holds a fp16 engine, but bf16 was requested: OpenVINO computes"),
        ("openvino", "fp32", "fp16", "OpenVINO on the CPU computes in fp32 or bf16"),
    ],
)
def test_explicit_precision_the_backend_cannot_compute_is_refused_naming_what_the_export_holds(
    backend, holds, asked, expected
):
    with pytest.raises(SharpError, match=expected) as error:
        check_precision(Path("engines/x"), holds, backend, asked)
    assert "--precision auto" in error.value.hint


@pytest.mark.parametrize(
    ("backend", "holds", "asked"),
    [
        ("onnxruntime", "fp32", "fp32"),
        ("tensorrt", "fp16", "fp16"),
        ("aoti", "bf16", "bf16"),
        ("openvino", "fp32", "fp32"),
        ("openvino", "fp32", "bf16"),
        ("onnxruntime", "fp16", "auto"),
        ("openvino", "fp16", "auto"),
        ("auto", "fp32", "fp16"),  # auto: the choice resolves the backend, then checks
    ],
)
def test_precision_the_backend_computes_from_the_export_is_accepted(backend, holds, asked):
    check_precision(Path("engines/x"), holds, backend, asked)


ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: 2596.134
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw avx512_bf16 avx512_vnni
"""
SAPPHIRE_RAPIDS = ZEN4.replace("AuthenticAMD", "GenuineIntel").replace(
    "avx512_vnni", "avx512_vnni amx_bf16 amx_int8"
)
HASWELL = "vendor_id\t: GenuineIntel\nmodel name\t: Xeon E5\nflags\t\t: sse2 avx fma avx2\n"


def rates(cpu) -> tuple[int, int, int]:
    peak = peak_rates(cpu)
    return peak.fp32, peak.bf16, peak.int8


def test_cpuinfo_flags_give_the_matrix_units_and_peak_rates():
    zen4 = parse_cpuinfo(ZEN4)
    assert (zen4.model_name, zen4.logical_cpus, zen4.mhz) == ("AMD EPYC", 2, 2596.134)
    assert (zen4.bf16_unit, zen4.int8_unit, zen4.vector_isa) == ("AVX512-BF16", "AVX512-VNNI", "AVX-512")
    assert rates(zen4) == (32, 64, 128)
    spr = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert (spr.bf16_unit, spr.int8_unit) == ("AMX-BF16", "AMX-INT8")
    assert rates(spr) == (64, 1024, 2048)
    haswell = parse_cpuinfo(HASWELL)
    assert (haswell.bf16_unit, haswell.vector_isa) == (None, "AVX2+FMA")
    assert rates(haswell) == (32, 32, 64)
