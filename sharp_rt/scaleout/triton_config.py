"""The Triton model configuration of a sharp-rt artifact: ``config.pbtxt`` and the facts clients read back.

Shared by the repository writer (:mod:`sharp_rt.scaleout.triton_repository`) and the
client (:mod:`sharp_rt.scaleout.triton_client`), so the client never imports the
side that builds engines.  Standard library only.
"""

from __future__ import annotations

import json
from typing import Any

from sharp_rt.core.contract import Manifest, io_specs

TRITON_BACKENDS = ("onnxruntime", "tensorrt")
INSTANCE_KINDS = ("gpu", "cpu")
CONFIG_NAME = "config.pbtxt"
VERSION_DIR = "1"
WARMUP_DIR = "warmup"
WARMUP_DISPARITY_FILE = "disparity_factor_one"
PARAMETER_PREFIX = "sharp_rt."  # prefix of the string parameters that carry sharp-rt's facts


class Symbol(str):
    """A protobuf enum value: written without quotes (``TYPE_FP32``, ``KIND_GPU``)."""


def to_pbtxt(message: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of ``message``.

    A dict is a message, a list of dicts a repeated message field, a list of
    scalars a repeated scalar field, :class:`Symbol` an enum value.
    """
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        items = value if isinstance(value, list) and value and isinstance(value[0], dict) else [value]
        for item in items:
            if isinstance(item, dict):
                lines += [f"{pad}{key} {{", to_pbtxt(item, indent + 1), f"{pad}}}"]
            elif isinstance(item, list):
                joined = ", ".join(_scalar(v) for v in item)
                lines.append(f"{pad}{key}: [ {joined} ]" if joined else f"{pad}{key}: [ ]")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII with \" and \\ escapes: valid text-format strings
    return repr(value)


def tensor_dims(resolution: int, num_gaussians: int, batched: bool) -> dict[str, list[int]]:
    """Triton dims of each contract tensor: without the batch if ``batched``, else the static shape."""
    inputs, outputs = io_specs(resolution, num_gaussians, batch=1)
    if batched:
        return {spec.name: [int(d) for d in spec.shape[1:]] or [1] for spec in (*inputs, *outputs)}
    return {spec.name: [int(d) for d in spec.shape] for spec in (*inputs, *outputs)}


def model_config(
    manifest: Manifest,
    *,
    model_name: str,
    triton_backend: str,
    max_batch_size: int,
    instances: int,
    instance_kind: str,
    queue_delay_us: int,
) -> dict[str, Any]:
    """The model configuration (as :func:`to_pbtxt` input) of an exported artifact directory."""
    from sharp_rt._version import __version__

    batched = max_batch_size > 0
    dims = tensor_dims(manifest.internal_resolution, manifest.num_gaussians, batched)

    def tensor(name: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": name, "data_type": Symbol("TYPE_FP32"), "dims": dims[name]}
        if batched and name == "disparity_factor":
            spec["reshape"] = {"shape": []}  # clients send [B, 1]; the model takes [B]
        return spec

    facts = {
        "precision": manifest.precision,
        "config": manifest.config,
        "internal_resolution": str(manifest.internal_resolution),
        "num_gaussians": str(manifest.num_gaussians),
        "version": __version__,
    }
    config: dict[str, Any] = {
        "name": model_name,
        "backend": triton_backend,
        "max_batch_size": max_batch_size,
        "input": [tensor(spec.name) for spec in manifest.inputs],
        "output": [tensor(spec.name) for spec in manifest.outputs],
    }
    if batched:
        config["dynamic_batching"] = {
            "preferred_batch_size": [max_batch_size],
            "max_queue_delay_microseconds": queue_delay_us,
        }
    config["instance_group"] = [{"count": instances, "kind": Symbol(f"KIND_{instance_kind.upper()}")}]
    config["parameters"] = [
        {"key": PARAMETER_PREFIX + key, "value": {"string_value": value}} for key, value in facts.items()
    ]
    warmup_inputs = {
        "image": {"data_type": Symbol("TYPE_FP32"), "dims": dims["image"], "zero_data": True},
        "disparity_factor": {
            "data_type": Symbol("TYPE_FP32"),
            "dims": dims["disparity_factor"],
            "input_data_file": WARMUP_DISPARITY_FILE,
        },
    }
    config["model_warmup"] = [
        {
            "name": "zero_image",
            "batch_size": 1,
            "inputs": [{"key": key, "value": value} for key, value in warmup_inputs.items()],
        }
    ]
    return config
