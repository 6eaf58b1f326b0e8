"""Triton Inference Server backend: the network runs on a server, the rest of the pipeline here.

```
engine = TritonEngine("grpc://gpu-box:8001")      # or http://gpu-box:8000, or gpu-box:8001 (gRPC)
Predictor(engine).predict("photo.jpg")            # load, preprocess, unproject, write: local
```

On construction the engine checks that the server is live and the model ready,
reads the model configuration and checks it against the engine contract
(``sharp_rt.core.contract``; the config ``sharp-rt export --target triton``
writes, see ``sharp_rt.scaleout.triton_repository``): names, ``TYPE_FP32``, dims.  Requests
carry binary tensors (gRPC raw contents, HTTP binary extension).  Needs
``tritonclient[grpc]`` or ``tritonclient[http]`` (the ``[triton]`` extra),
imported lazily.  Request building and response parsing are module functions
so they can be checked without a server.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from sharp_rt.core.contract import OUTPUT_WIDTHS
from sharp_rt.core.errors import EngineError
from sharp_rt.engines.base import INPUT_NAMES, OUTPUT_NAMES, Engine, EngineInfo
from sharp_rt.scaleout.triton_config import PARAMETER_PREFIX, tensor_dims

DEFAULT_TIMEOUT_S = 300.0
SERVER_HINT = (
    "is tritonserver running and serving the repository of `sharp-rt export --target triton`? "
    "Check the URL (grpc://host:8001 or http://host:8000) and `curl host:8000/v2/health/ready`; "
    "see docs/serving.md"
)
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What a served model's configuration says, checked against the engine contract."""

    max_batch_size: int  # 0: a static batch-1 model
    resolution: int  # S
    num_gaussians: int  # N
    precision: str  # from the sharp_rt.precision parameter, "unknown" without it
    parameters: dict[str, str]  # the config's string parameters
    backend: str  # Triton backend or platform

    @property
    def batched(self) -> bool:
        """True when requests carry a batch dimension the config leaves out."""
        return self.max_batch_size > 0


def parse_url(url: str) -> tuple[str, str, bool]:
    """``grpc://h:p``, ``grpcs://``, ``http://``, ``https://`` or ``h:p`` (gRPC): (protocol, address, ssl)."""
    scheme, separator, address = url.partition("://")
    if not separator:
        scheme, address = "grpc", url
    schemes = {
        "grpc": ("grpc", False),
        "grpcs": ("grpc", True),
        "http": ("http", False),
        "https": ("http", True),
    }
    address = address.rstrip("/")
    if scheme not in schemes or not address or "/" in address:
        raise EngineError(
            f"Cannot use the Triton server URL {url!r}",
            hint="write grpc://host:8001, http://host:8000 or host:port (gRPC)",
        )
    protocol, ssl = schemes[scheme]
    return protocol, address, ssl


def client_module(protocol: str):
    """``tritonclient.grpc`` or ``tritonclient.http``, with an install hint when missing."""
    try:
        return importlib.import_module(f"tritonclient.{protocol}")
    except ImportError:
        raise EngineError(
            f"tritonclient[{protocol}] is not installed",
            hint="pip install 'sharp-rt[triton]' (or pip install 'tritonclient[grpc,http]')",
        ) from None


def _dims(tensor: Mapping[str, Any]) -> list[int]:
    return [int(d) for d in tensor.get("dims", [])]  # gRPC's JSON writes int64 dims as strings


def check_model_config(config: Mapping[str, Any], where: str) -> ServedModel:
    """Check a model configuration in JSON form against the engine contract.

    config: as the HTTP API returns it, or a gRPC ``ModelConfig`` through
    ``MessageToDict(..., preserving_proto_field_name=True)``.
    Raises :class:`EngineError` that names every difference.
    """
    max_batch_size = int(config.get("max_batch_size", 0))
    inputs = {t.get("name"): t for t in config.get("input", [])}
    outputs = {t.get("name"): t for t in config.get("output", [])}
    parameters = {
        key: str(value.get("string_value", "")) for key, value in dict(config.get("parameters", {})).items()
    }
    problems = [f"no input {name!r}" for name in INPUT_NAMES if name not in inputs]
    problems += [f"an extra input {name!r}" for name in inputs if name not in INPUT_NAMES]
    problems += [f"no output {name!r}" for name in OUTPUT_NAMES if name not in outputs]
    tensors = {**inputs, **outputs}
    for name in (*INPUT_NAMES, *OUTPUT_NAMES):
        if name in tensors and tensors[name].get("data_type") != "TYPE_FP32":
            problems.append(f"{name} is {tensors[name].get('data_type')}, not TYPE_FP32")
    image_dims = _dims(inputs.get("image", {}))
    size = parameters.get(PARAMETER_PREFIX + "internal_resolution")
    resolution = int(size) if size else (image_dims[-1] if image_dims else 0)
    count = parameters.get(PARAMETER_PREFIX + "num_gaussians")
    num_gaussians = int(count) if count else 2 * (resolution // 2) ** 2  # N of the contract
    expected = tensor_dims(resolution, num_gaussians, max_batch_size > 0)
    for name, dims in expected.items():
        if name in tensors and _dims(tensors[name]) != dims:
            problems.append(f"{name} has dims {_dims(tensors[name])}, the contract needs {dims}")
    if problems:
        raise EngineError(
            f"The model {where} does not follow the sharp-rt engine contract: {'; '.join(problems)}",
            hint="serve the model repository written by `sharp-rt export --target triton` "
            "(see docs/engine-contract.md)",
        )
    return ServedModel(
        max_batch_size=max_batch_size,
        resolution=resolution,
        num_gaussians=num_gaussians,
        precision=parameters.get(PARAMETER_PREFIX + "precision", "unknown"),
        parameters=parameters,
        backend=str(config.get("backend") or config.get("platform") or "unknown"),
    )


def make_inputs(
    client,
    image: np.ndarray,  # [B, 3, S, S] float32
    disparity_factor: np.ndarray,  # [B] float32
    batched: bool,
) -> list:
    """The two ``InferInput`` of a request (``client`` is ``tritonclient.grpc`` or ``.http``), binary data.

    A batched model's config declares ``disparity_factor`` as dims ``[1]``: it travels as ``[B, 1]``.
    """
    factor = np.ascontiguousarray(disparity_factor, np.float32)
    arrays = {
        "image": np.ascontiguousarray(image, np.float32),
        "disparity_factor": factor.reshape(-1, 1) if batched else factor.reshape(-1),
    }
    inputs = []
    for name in INPUT_NAMES:
        item = client.InferInput(name, list(arrays[name].shape), "FP32")
        item.set_data_from_numpy(arrays[name])
        inputs.append(item)
    return inputs


def requested_outputs(client) -> list:
    """``InferRequestedOutput`` for the five contract outputs (binary data on HTTP, its default)."""
    return [client.InferRequestedOutput(name) for name in OUTPUT_NAMES]


def outputs_from_result(result, batch: int, num_gaussians: int) -> dict[str, np.ndarray]:
    """A gRPC or HTTP ``InferResult`` -> the contract's writable float32 arrays ([B, N, 3], ..., [B, N])."""
    outputs = {}
    for name, width in OUTPUT_WIDTHS.items():
        array = result.as_numpy(name)
        shape = (batch, num_gaussians) if width is None else (batch, num_gaussians, width)
        if array is None or array.dtype != np.float32 or array.size != int(np.prod(shape)):
            got = "nothing" if array is None else f"{array.dtype} {list(array.shape)}"
            raise EngineError(
                f"The Triton server returned {got} for {name}, expected float32 {list(shape)}",
                hint="the served model does not match its configuration: re-export the repository",
            )
        outputs[name] = np.require(array.reshape(shape), np.float32, ["C", "W"])
    return outputs


class TritonEngine(Engine):
    """A client of a Triton server that serves a sharp-rt model repository."""

    def __init__(
        self,
        url: str,
        model_name: str = "sharp",
        model_version: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.protocol, address, ssl = parse_url(url)
        self.client_module = client_module(self.protocol)
        if self.protocol == "grpc":
            self.client = self.client_module.InferenceServerClient(address, ssl=ssl)
            self._timeout: dict[str, float] = {"client_timeout": timeout_s}
        else:
            self.client = self.client_module.InferenceServerClient(
                address, ssl=ssl, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            self._timeout = {}
        where = f"{model_name!r} on {url}"
        if not self._call("liveness check", lambda: self.client.is_server_live(**self._timeout)):
            raise EngineError(f"The Triton server at {url} is not live", hint=SERVER_HINT)
        ready = self._call(
            "readiness check", lambda: self.client.is_model_ready(model_name, model_version, **self._timeout)
        )
        if not ready:
            raise EngineError(
                f"The model {where} is not ready",
                hint="check the tritonserver log (the model failed to load, or has another name: "
                "--model-name at export)",
            )
        self.model = check_model_config(self._model_config(), where)
        self.info = EngineInfo(
            backend="triton",
            device=f"{self.protocol}://{address}",
            precision=self.model.precision,
            resolution=self.model.resolution,
            num_gaussians=self.model.num_gaussians,
            max_batch=self.model.max_batch_size if self.model.batched else 1,
            details={
                "server": url,
                "model": model_name,
                "model_version": model_version or "latest",
                "triton_backend": self.model.backend,
                "preset": self.model.parameters.get(PARAMETER_PREFIX + "config"),
                "exported_by": self.model.parameters.get(PARAMETER_PREFIX + "version"),
            },
        )

    def _call(self, what: str, function: Callable[[], _T]) -> _T:
        """Run one client call; connection and server errors become :class:`EngineError`."""
        from tritonclient.utils import InferenceServerException

        try:
            return function()
        except InferenceServerException as error:
            detail = error.message() or str(error)
        except OSError as error:  # the HTTP client's refused connections, DNS errors, timeouts
            detail = f"{type(error).__name__}: {error}"
        raise EngineError(f"Triton {what} at {self.url} failed: {detail}", hint=SERVER_HINT)

    def _model_config(self) -> dict[str, Any]:
        name, version = self.model_name, self.model_version
        if self.protocol == "grpc":
            response = self._call(
                "model config",
                lambda: self.client.get_model_config(name, version, as_json=True, **self._timeout),
            )
            return response.get("config", {})
        return self._call("model config", lambda: self.client.get_model_config(name, version))

    def _run(self, image: np.ndarray, disparity_factor: np.ndarray) -> dict[str, np.ndarray]:
        """image: float32 [B, 3, S, S]; disparity_factor: float32 [B] -> NDC outputs (from the server)."""
        inputs = make_inputs(self.client_module, image, disparity_factor, self.model.batched)
        result = self._call(
            "inference",
            lambda: self.client.infer(
                self.model_name,
                inputs,
                model_version=self.model_version,
                outputs=requested_outputs(self.client_module),
                **self._timeout,
            ),
        )
        return outputs_from_result(result, image.shape[0], self.model.num_gaussians)

    def close(self) -> None:
        """Close the connection to the server."""
        if self.client is not None:
            self.client.close()
            self.client = None
