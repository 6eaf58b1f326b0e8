"""Triton: the exported model repository, the client's requests and responses, real servers."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from conftest import DATA, read_png
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("tritonclient.http")

import tritonclient.grpc as tritonclient_grpc
import tritonclient.http as tritonclient_http
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2, service_pb2

from sharp_rt.cli import app
from sharp_rt.core.contract import INPUT_NAMES, OUTPUT_NAMES, read_manifest
from sharp_rt.core.errors import EngineError
from sharp_rt.engines.onnxruntime_engine import OnnxRuntimeEngine
from sharp_rt.predict.predictor import Predictor
from sharp_rt.runtime.ply import write_ply
from sharp_rt.scaleout.triton_client import (
    TritonEngine,
    check_model_config,
    make_inputs,
    outputs_from_result,
    parse_url,
)
from sharp_rt.scaleout.triton_repository import export_triton

runner = CliRunner()
SIZE, COUNT = 384, 73_728  # the tiny preset


def parse_config(path) -> model_config_pb2.ModelConfig:
    """config.pbtxt through protobuf's own text-format parser, with Triton's schema."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def as_json(config: model_config_pb2.ModelConfig) -> dict:
    """The JSON form a server returns (gRPC as_json / HTTP)."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


@pytest.fixture(scope="module")
def batched_repo(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint as a Triton repository, max_batch_size 4, two CPU instances, validated."""
    repository = tmp_path_factory.mktemp("triton") / "model_repository"
    result = export_triton(tiny_checkpoint, out_dir=repository, instances=2, instance_kind="cpu")
    assert result.export.passed
    return repository


@pytest.fixture(scope="module")
def static_repo(tmp_path_factory, tiny_checkpoint):
    """The same through the CLI as a static batch-1 model named sharp_static (no validation)."""
    repository = tmp_path_factory.mktemp("triton") / "static_repository"
    args = ["export", "-c", str(tiny_checkpoint), "--target", "triton", "-o", str(repository)]
    result = runner.invoke(
        app, [*args, "--max-batch-size", "0", "--model-name", "sharp_static", "--no-validate"]
    )
    assert result.exit_code == 0, result.output
    assert f"tritonserver --model-repository={repository.resolve()}" in result.output  # one line
    return repository


@pytest.fixture(scope="module")
def local_engine(batched_repo):
    """ONNX Runtime on the repository's version directory: the outputs a server must reproduce."""
    with OnnxRuntimeEngine(batched_repo / "sharp" / "1", threads=2) as engine:
        yield engine


@pytest.fixture(scope="module")
def probe():
    """A batch of two images and disparity factors."""
    rng = np.random.default_rng(0)
    return rng.random((2, 3, SIZE, SIZE), dtype=np.float32), np.array([0.8, 1.1], np.float32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_triton_export_writes_a_repository_whose_config_matches_the_manifest(batched_repo):
    model_dir = batched_repo / "sharp"
    manifest = read_manifest(model_dir / "1")
    assert manifest.dynamic_batch and (model_dir / "1" / "model.onnx.data").is_file()
    config = parse_config(model_dir / "config.pbtxt")
    assert (config.name, config.backend, config.max_batch_size) == ("sharp", "onnxruntime", 4)
    assert [t.name for t in config.input] == [s.name for s in manifest.inputs] == list(INPUT_NAMES)
    assert [t.name for t in config.output] == [s.name for s in manifest.outputs] == list(OUTPUT_NAMES)
    for tensor, spec in zip(
        [*config.input, *config.output], [*manifest.inputs, *manifest.outputs], strict=True
    ):
        assert tensor.data_type == model_config_pb2.TYPE_FP32 and spec.dtype == "float32"
        assert spec.shape[0] == "batch"
        assert list(tensor.dims) == (list(spec.shape[1:]) or [1])
    assert config.input[1].HasField("reshape") and list(config.input[1].reshape.shape) == []
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    [group] = config.instance_group
    assert (group.count, group.kind) == (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters["sharp_rt.precision"] == manifest.precision == "fp32"
    assert parameters["sharp_rt.config"] == manifest.config == "tiny"
    assert parameters["sharp_rt.internal_resolution"] == str(SIZE)
    assert parameters["sharp_rt.num_gaussians"] == str(COUNT)
    [warmup] = config.model_warmup
    assert warmup.inputs["image"].zero_data and list(warmup.inputs["image"].dims) == [3, SIZE, SIZE]
    warmup_file = model_dir / "warmup" / warmup.inputs["disparity_factor"].input_data_file
    assert struct.unpack("<f", warmup_file.read_bytes()) == (1.0,)


def test_static_triton_export_declares_batch_one_without_dynamic_batching(static_repo):
    model_dir = static_repo / "sharp_static"
    manifest = read_manifest(model_dir / "1")
    config = parse_config(model_dir / "config.pbtxt")
    assert config.name == "sharp_static" and config.max_batch_size == 0 and not manifest.dynamic_batch
    assert not config.HasField("dynamic_batching")
    for tensor, spec in zip(
        [*config.input, *config.output], [*manifest.inputs, *manifest.outputs], strict=True
    ):
        assert list(tensor.dims) == list(spec.shape) and spec.shape[0] == 1
        assert not tensor.HasField("reshape")
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert manifest.validation_status == "skipped"


def test_triton_export_into_an_existing_model_needs_overwrite(static_repo, tiny_checkpoint):
    args = ["export", "-c", str(tiny_checkpoint), "--target", "triton", "-o", str(static_repo)]
    result = runner.invoke(app, [*args, "--model-name", "sharp_static"])
    assert result.exit_code == 2
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "already holds a Triton model 'sharp_static'" in output and "hint: pass --overwrite" in output


def test_triton_tensorrt_backend_without_tensorrt_fails_in_one_line(tmp_path, tiny_checkpoint):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    args = ["export", "-c", str(tiny_checkpoint), "--target", "triton", "-o", str(tmp_path / "repo")]
    result = runner.invoke(app, [*args, "--triton-backend", "tensorrt"])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        "error: TensorRT is not installed"
    ]
    assert not (tmp_path / "repo").exists()


def test_exported_configs_pass_the_client_contract_check(batched_repo, static_repo):
    batched = check_model_config(as_json(parse_config(batched_repo / "sharp" / "config.pbtxt")), "sharp")
    assert (batched.max_batch_size, batched.resolution, batched.num_gaussians) == (4, SIZE, COUNT)
    assert (batched.precision, batched.backend, batched.batched) == ("fp32", "onnxruntime", True)
    static = check_model_config(as_json(parse_config(static_repo / "sharp_static" / "config.pbtxt")), "s")
    assert (static.max_batch_size, static.batched, static.num_gaussians) == (0, False, COUNT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["output"][3].update(name="rgb"), "no output 'colors'"),
        (lambda c: c["input"][0].update(dims=["3", "512", "512"]), r"image has dims \[3, 512, 512\]"),
        (lambda c: c["output"][4].update(dims=["1", "73728"]), r"opacities has dims \[1, 73728\]"),
        (lambda c: c["input"][1].update(data_type="TYPE_FP16"), "disparity_factor is TYPE_FP16"),
        (lambda c: c.pop("max_batch_size"), r"image has dims \[3, 384, 384\], the contract needs \[1, 3"),
    ],
)
def test_model_config_that_breaks_the_contract_is_refused(batched_repo, change, message):
    config = as_json(parse_config(batched_repo / "sharp" / "config.pbtxt"))
    change(config)
    with pytest.raises(EngineError, match=f"does not follow the sharp-rt engine contract: .*{message}"):
        check_model_config(config, "'sharp' on grpc://server:8001")


@pytest.mark.parametrize("client", [tritonclient_grpc, tritonclient_http], ids=["grpc", "http"])
def test_request_inputs_carry_contract_names_shapes_and_exact_bytes(client, probe):
    image, factor = probe
    for batched, factor_shape in ((True, [2, 1]), (False, [2])):
        inputs = make_inputs(client, image, factor, batched)
        assert [(i.name(), i.datatype(), i.shape()) for i in inputs] == [
            ("image", "FP32", [2, 3, SIZE, SIZE]),
            ("disparity_factor", "FP32", factor_shape),
        ]
        carried = [i._get_content() if client is tritonclient_grpc else i._get_binary_data() for i in inputs]
        assert carried == [image.tobytes(), factor.tobytes()]


def test_grpc_response_of_real_outputs_parses_to_the_engine_outputs(local_engine, probe):
    expected = local_engine.run(*probe)
    response = service_pb2.ModelInferResponse(model_name="sharp", model_version="1")
    for name in OUTPUT_NAMES:
        response.outputs.add(name=name, datatype="FP32", shape=expected[name].shape)
        response.raw_output_contents.append(expected[name].tobytes())
    outputs = outputs_from_result(tritonclient_grpc.InferResult(response), 2, COUNT)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(outputs[name], expected[name])
        assert outputs[name].flags.writeable and outputs[name].dtype == np.float32


def test_http_response_of_real_outputs_parses_to_the_engine_outputs(local_engine, probe):
    expected = local_engine.run(*probe)
    header = {
        "model_name": "sharp",
        "model_version": "1",
        "outputs": [
            {
                "name": name,
                "datatype": "FP32",
                "shape": list(expected[name].shape),
                "parameters": {"binary_data_size": expected[name].nbytes},
            }
            for name in OUTPUT_NAMES
        ],
    }
    head = json.dumps(header).encode()
    body = head + b"".join(expected[name].tobytes() for name in OUTPUT_NAMES)
    result = tritonclient_http.InferResult.from_response_body(body, header_length=len(head))
    outputs = outputs_from_result(result, 2, COUNT)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(outputs[name], expected[name])


def test_response_with_a_truncated_output_is_refused():
    response = service_pb2.ModelInferResponse(model_name="sharp")
    for name in OUTPUT_NAMES:
        response.outputs.add(name=name, datatype="FP32", shape=[1, 10])
        response.raw_output_contents.append(np.zeros(10, np.float32).tobytes())
    with pytest.raises(EngineError, match=r"returned float32 \[1, 10\] for mean_vectors, expected float32"):
        outputs_from_result(tritonclient_grpc.InferResult(response), 1, COUNT)


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("grpc://gpu-box:8001", ("grpc", "gpu-box:8001", False)),
        ("http://gpu-box:8000/", ("http", "gpu-box:8000", False)),
        ("https://gpu-box:443", ("http", "gpu-box:443", True)),
        ("grpcs://gpu-box:443", ("grpc", "gpu-box:443", True)),
        ("gpu-box:8001", ("grpc", "gpu-box:8001", False)),
    ],
)
def test_server_url_forms_select_protocol_and_address(url, parsed):
    assert parse_url(url) == parsed


def test_unusable_server_url_is_refused():
    with pytest.raises(EngineError, match="Cannot use the Triton server URL 'ftp://x:1'"):
        parse_url("ftp://x:1")


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_unreachable_server_gives_an_engine_error_with_a_hint(scheme):
    with pytest.raises(EngineError, match=f"liveness check at {scheme}://127.0.0.1:.* failed") as caught:
        TritonEngine(f"{scheme}://127.0.0.1:{free_port()}", timeout_s=10)
    assert "is tritonserver running" in caught.value.hint and "docs/serving.md" in caught.value.hint


def _pytriton_skip_reason() -> str | None:
    try:
        import pytriton  # noqa: F401
    except ImportError:
        return "pytriton is not installed (pip install nvidia-pytriton: a real tritonserver, Python backend)"
    if int(np.__version__.split(".")[0]) >= 2:
        return "pytriton 0.7 needs numpy < 2 (with numpy 2 its Python backend returns empty outputs)"
    return None


@pytest.fixture(scope="module")
def pytriton_server(local_engine):
    """A real tritonserver (pytriton's, Python backend) serving ONNX Runtime under the contract's names."""
    reason = _pytriton_skip_reason()
    if reason:
        pytest.skip(reason)
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    @batch
    def infer(image, disparity_factor):
        return local_engine.run(image, disparity_factor.reshape(-1))

    dims = {"image": (3, SIZE, SIZE), "disparity_factor": (1,)}
    dims.update(
        {n: (COUNT,) if n == "opacities" else (COUNT, 4 if n == "quaternions" else 3) for n in OUTPUT_NAMES}
    )
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    config = TritonConfig(http_address="127.0.0.1", grpc_address="127.0.0.1", **ports)
    with pytest.MonkeyPatch.context() as patch:
        if sysconfig.get_config_var("Py_ENABLE_SHARED"):  # the backend stub must embed this interpreter
            library = sysconfig.get_config_var("LIBDIR")
            patch.setenv(
                "LD_LIBRARY_PATH", os.pathsep.join(filter(None, [library, os.environ.get("LD_LIBRARY_PATH")]))
            )
        with Triton(config=config) as triton:
            triton.bind(
                model_name="sharp",
                infer_func=infer,
                inputs=[Tensor(name=n, dtype=np.float32, shape=dims[n]) for n in INPUT_NAMES],
                outputs=[Tensor(name=n, dtype=np.float32, shape=dims[n]) for n in OUTPUT_NAMES],
                config=ModelConfig(max_batch_size=4),
            )
            triton.run()
            yield ports


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_triton_engine_against_a_real_server_equals_the_local_engine(
    pytriton_server, local_engine, probe, scheme
):
    port = pytriton_server[f"{scheme}_port"]
    with TritonEngine(f"{scheme}://127.0.0.1:{port}") as engine:
        assert (engine.info.backend, engine.info.resolution, engine.info.max_batch) == ("triton", SIZE, 4)
        outputs = engine.run(*probe)
    expected = local_engine.run(*probe)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(outputs[name], expected[name])


def test_predictor_over_a_real_triton_server_equals_the_local_predictor(pytriton_server, local_engine):
    image = read_png("coffee.png")
    with Predictor(TritonEngine(f"grpc://127.0.0.1:{pytriton_server['grpc_port']}")) as remote:
        served = remote.predict(image, f_px=500.0)
    local = Predictor(local_engine).predict(image, f_px=500.0)
    np.testing.assert_array_equal(served.mean_vectors, local.mean_vectors)
    np.testing.assert_array_equal(served.colors, local.colors)


@pytest.mark.skipif(
    not os.environ.get("SHARP_RT_TRITON_URL"),
    reason="set SHARP_RT_TRITON_URL (e.g. grpc://host:8001) to a tritonserver serving `sharp-rt export "
    "--target triton`",
)
def test_external_triton_server_returns_contract_outputs():
    with TritonEngine(os.environ["SHARP_RT_TRITON_URL"]) as engine:
        size, count = engine.info.resolution, engine.info.num_gaussians
        assert engine.info.precision in ("fp32", "fp16")
        image = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        outputs = engine.run(image, np.array([1.0], np.float32))
    assert [outputs[n].shape for n in OUTPUT_NAMES] == [
        (1, count, 3),
        (1, count, 3),
        (1, count, 4),
        (1, count, 3),
        (1, count),
    ]
    assert all(np.isfinite(outputs[n]).all() for n in OUTPUT_NAMES)
    assert ((outputs["opacities"] > 0) & (outputs["opacities"] < 1)).all()


def test_predict_with_an_unreachable_server_is_a_one_line_error(tmp_path):
    out = tmp_path / "out"
    url = f"grpc://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["predict", str(DATA / "coffee.png"), "--server", url, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "liveness check" in result.output and "hint:" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_cli_predict_through_a_real_triton_server_writes_the_local_bytes(
    pytriton_server, local_engine, tmp_path, scheme
):
    out = tmp_path / "out"
    url = f"{scheme}://127.0.0.1:{pytriton_server[f'{scheme}_port']}"
    result = runner.invoke(app, ["predict", str(DATA / "coffee.png"), "--server", url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Engine: triton" in result.output
    from sharp_rt.core.naming import SourceRecord

    record = [SourceRecord.of(DATA / "coffee.png").comment()]  # predict records the photo in the header
    gaussians = Predictor(local_engine).predict(DATA / "coffee.png")
    expected = write_ply(gaussians, tmp_path / "local.ply", comments=record)
    assert (out / "coffee.ply").read_bytes() == expected.read_bytes()


def test_triton_client_path_never_imports_torch_or_onnxruntime():
    code = (
        "import sys\n"
        "import sharp_rt.cli, sharp_rt.cli.predict, sharp_rt.scaleout.triton_client\n"
        "import sharp_rt.predict.predictor\n"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_server_with_a_local_engine_option_is_a_clear_error(tmp_path):
    args = ["predict", str(DATA / "coffee.png"), "--server", "grpc://127.0.0.1:1", "--backend", "torch"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "do not apply" in result.output
