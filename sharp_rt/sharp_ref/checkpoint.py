"""Loading SHARP checkpoints: local files, the torch-hub cache, or the official download.

```
load_checkpoint(path | None)
  path None ──> ~/.cache/torch/hub/checkpoints/sharp_2572gikvuh.pt ──(missing)──> download
  read_state_dict(.pt via torch.load | .safetensors)
  detect_config(state)       # preset from tensor shapes: sharp / tiny / tiny1536
  build on the meta device, load_state_dict(strict=True, assign=True)
```

Building on the meta device and assigning the loaded tensors skips the random
initialization of two ViT-L encoders and keeps peak memory at one copy of the
weights.  The file is read into ordinary memory rather than memory-mapped:
the forward pass on ``torch.load(mmap=True)`` weights measured 2x the CPU time
of the same ViT-L blocks on copied weights (docs/benchmarks.md, "Export").
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import torch

from sharp_rt.core.errors import CheckpointError
from sharp_rt.core.paths import OFFICIAL_FILENAME, official_checkpoint_path
from sharp_rt.sharp_ref.config import PRESETS, SharpConfig
from sharp_rt.sharp_ref.predictor import SharpPredictor, build_predictor

OFFICIAL_URL = "https://ml-site.cdn-apple.com/models/sharp/sharp_2572gikvuh.pt"


def default_checkpoint_path() -> Path:
    """Where torch hub (and ml-sharp) cache the official checkpoint (``sharp_rt.core.paths``)."""
    return official_checkpoint_path()


def file_sha256(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_checkpoint(destination: Path, url: str = OFFICIAL_URL, progress: bool = True) -> Path:
    """Download ``url`` to ``destination`` atomically (temp file + rename), with a progress bar."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + f".part-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            _copy_with_progress(response, handle, total, f"Downloading {destination.name}", progress)
            handle.flush()
            os.fsync(handle.fileno())
        if total is not None and partial.stat().st_size != total:
            raise OSError(f"connection closed after {partial.stat().st_size} of {total} bytes")
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"Could not download the SHARP checkpoint from {url}: {error}",
            hint=f"on a machine with internet access run `curl -L -o {OFFICIAL_FILENAME} {url}`, "
            f"then copy the file to {destination} or pass its path with --checkpoint/-c",
        ) from None
    return destination


def _copy_with_progress(source, target, total: int | None, label: str, progress: bool) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task(label, total=total)
        while chunk := source.read(1 << 20):
            target.write(chunk)
            bar.advance(task, len(chunk))


_CHECKPOINT_HINT = (
    "-c/--checkpoint takes a SHARP checkpoint (.pt or .safetensors, e.g. sharp_2572gikvuh.pt); "
    "an export folder goes to --engine, photos are the inputs"
)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file", hint=_CHECKPOINT_HINT)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint not found: {path}", hint="check the path passed with -c/--checkpoint"
        )
    return path


# First bytes of files people pass to -c by mistake (their own format specifications).
_NOT_CHECKPOINTS = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"ply\n", "a .ply file (Gaussians: `sharp-rt view` or `render` take it)"),
    (b"\x7fELF", "a program"),
    (b"\x93NUMPY", "a NumPy array file"),
)
# Suffixes of sharp-rt's other files, for content without a signature.
_NOT_CHECKPOINT_SUFFIXES = {
    ".onnx": "an ONNX model (--engine takes the export's folder)",
    ".plan": "a TensorRT plan (--engine takes the export's folder)",
    ".splat": "a .splat file (Gaussians: `sharp-rt view` or `render` take it)",
    ".spz": "a .spz file (Gaussians)",
    ".sog": "a .sog file (Gaussians)",
}


def not_a_checkpoint(path: Path) -> str | None:
    """What the file at ``path`` is when its content cannot be a checkpoint; None when it could be one.

    A checkpoint is a PyTorch file (a ZIP archive holding ``data.pkl``, or a legacy pickle:
    protocol byte 0x80) or a safetensors file (an 8-byte little-endian header length, then
    JSON: https://github.com/huggingface/safetensors, "Format").  Anything else is named
    (a photo, JSON, an ONNX model, text) so that a wrong ``-c`` is not taken for a corrupt
    download.
    """
    import zipfile

    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return None  # a truncated checkpoint: its central directory is missing
        return None if any(name.endswith("data.pkl") for name in names) else "a ZIP archive of other files"
    if head[:1] == b"\x80" or head[8:10] == b'{"':
        return None
    kind = next((kind for magic, kind in _NOT_CHECKPOINTS if head.startswith(magic)), None)
    if kind is None and head[4:8] == b"ftyp":
        kind = "an ISO media file (a HEIC photo or an MP4 video)"
    if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "a WebP image"
    if kind is None and head.lstrip()[:1] in (b"{", b"["):
        kind = "a JSON file"
    if kind is None and head[:1] == b"\x08" and head[2:3] == b"\x12":  # ONNX: ir_version, producer_name
        kind = "an ONNX model (--engine takes the export's folder)"
    if kind is None and path.name.lower().endswith(".onnx.data"):
        kind = "the weights of an ONNX export (--engine takes the export's folder)"
    if kind is None:
        kind = _NOT_CHECKPOINT_SUFFIXES.get(path.suffix.lower())
    if kind is None and head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        kind = "a text file"
    return kind


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    kind = not_a_checkpoint(path)
    if kind is not None:
        return CheckpointError(f"{path} is not a checkpoint: it is {kind}", hint=_CHECKPOINT_HINT)
    return CheckpointError(
        f"Cannot read checkpoint {path}: {type(error).__name__}: {str(error).splitlines()[0]}",
        hint="the file is corrupt or truncated (an interrupted download?): delete it and download it again",
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pt`` / ``.pth`` state dict or a ``.safetensors`` file into CPU memory."""
    path = _existing(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for bad files
        raise _unreadable(path, error) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict (a mapping of names to tensors)",
            hint="pass the SHARP predictor's state dict, e.g. sharp_2572gikvuh.pt",
        )
    return dict(state)


def checkpoint_config(path: str | Path) -> SharpConfig:
    """The preset of a checkpoint file from its tensor shapes, without reading its weights."""
    path = _existing(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
            state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch and safetensors raise many types for bad files
        raise _unreadable(path, error) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return detect_config(state)


def _layout(config: SharpConfig) -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in build_predictor(config, "meta").state_dict().items()}


def detect_config(state: Mapping[str, torch.Tensor]) -> SharpConfig:
    """The preset whose state-dict layout (keys and shapes) equals ``state``'s.

    Raises :class:`CheckpointError` naming the missing, unexpected and
    mis-shaped keys relative to the closest preset otherwise.
    """
    shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
    best: tuple[int, str, dict[str, tuple[int, ...]]] | None = None
    for name, make in PRESETS.items():
        layout = _layout(make())
        if layout == shapes:
            return make()
        score = sum(shapes.get(key) == shape for key, shape in layout.items())
        if best is None or score > best[0]:
            best = (score, name, layout)
    assert best is not None
    _, name, layout = best
    missing = [k for k in layout if k not in shapes]
    unexpected = [k for k in shapes if k not in layout]
    mismatched = [f"{k} {shapes[k]} != {layout[k]}" for k in layout if k in shapes and shapes[k] != layout[k]]
    details = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if keys:
            shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
            details.append(f"{label}: {shown}")
    raise CheckpointError(
        f"The checkpoint matches no known SHARP layout (closest: {name!r}); " + "; ".join(details),
        hint="use the official sharp_2572gikvuh.pt or a checkpoint written by sharp-rt",
    )


def checkpoint_file(path: str | Path | None = None, *, download: bool = True, progress: bool = True) -> Path:
    """``path``, or (``None``) the official checkpoint in the torch-hub cache, downloaded first if missing.

    With ``download=False`` a missing cached checkpoint is a :class:`CheckpointError`.
    """
    if path is not None:
        return Path(path)
    path = default_checkpoint_path()
    if not path.is_file():
        if not download:
            raise CheckpointError(
                f"The SHARP checkpoint is not in the cache ({path})",
                hint=f"download it from {OFFICIAL_URL} to that path, or pass -c/--checkpoint",
            )
        download_checkpoint(path, progress=progress)
    return path


def load_checkpoint(
    path: str | Path | None = None, *, download: bool = True, progress: bool = True
) -> SharpPredictor:
    """Build the SHARP predictor (eval mode, CPU, float32) from a checkpoint.

    ``path=None`` uses the torch-hub cache, downloading the official weights
    there first if they are missing and ``download`` is true.  The preset is
    detected from the tensor shapes.
    """
    state = read_state_dict(checkpoint_file(path, download=download, progress=progress))
    config = detect_config(state)
    return predictor_from_state_dict(state, config)


def predictor_from_state_dict(state: Mapping[str, torch.Tensor], config: SharpConfig) -> SharpPredictor:
    """Build on the meta device and assign ``state``'s tensors (strict)."""
    model = build_predictor(config, "meta")
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().eval()


def save_checkpoint(state: Mapping[str, torch.Tensor], path: str | Path, *, overwrite: bool = True) -> Path:
    """Write a state dict atomically: ``.safetensors`` with safetensors, else ``torch.save``."""
    from sharp_rt.core.atomic import atomic_write

    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as handle:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            handle.write(save({key: value.contiguous() for key, value in state.items()}))
        else:
            torch.save(dict(state), handle)
    return path
