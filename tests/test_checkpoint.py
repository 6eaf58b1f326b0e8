"""Checkpoint loading: formats, preset detection, cache/download, and clear errors."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from sharp_rt.core.errors import CheckpointError  # noqa: E402
from sharp_rt.sharp_ref import (  # noqa: E402
    build_predictor,
    default_checkpoint_path,
    detect_config,
    get_config,
    load_checkpoint,
    save_checkpoint,
)
from sharp_rt.sharp_ref.checkpoint import OFFICIAL_FILENAME, download_checkpoint  # noqa: E402


def _same_weights(model, state) -> bool:
    loaded = model.state_dict()
    return all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_checkpoint_reads_pt_and_safetensors(tmp_path, tiny_state, suffix):
    path = save_checkpoint(tiny_state, tmp_path / f"weights{suffix}")
    model = load_checkpoint(path)
    assert model.config.name == "tiny"
    assert not model.training
    assert _same_weights(model, tiny_state)


def test_preset_is_detected_from_shapes_for_all_presets():
    for name in ("sharp", "tiny", "tiny1536"):
        meta_state = build_predictor(get_config(name), "meta").state_dict()
        assert detect_config(meta_state).name == name


def test_missing_keys_are_named_in_the_error(tiny_state):
    partial = dict(tiny_state)
    partial.pop("prediction_head.geometry_prediction_head.weight")
    partial["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as error:
        detect_config(partial)
    text = str(error.value)
    assert "closest: 'tiny'" in text
    assert "missing: prediction_head.geometry_prediction_head.weight" in text
    assert "unexpected: extra.weight" in text


def test_wrong_shape_is_named_in_the_error(tiny_state):
    bad = dict(tiny_state)
    bad["prediction_head.texture_prediction_head.bias"] = torch.zeros(5)
    with pytest.raises(
        CheckpointError, match=r"wrong shape: prediction_head.texture_prediction_head.bias \(5,\)"
    ):
        detect_config(bad)


def test_truncated_file_gives_a_clear_error(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)


def test_non_checkpoint_file_gives_a_clear_error(tmp_path):
    junk = tmp_path / "photo.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a checkpoint: it is a text file"):
        load_checkpoint(junk)


def test_missing_file_gives_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="Checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_default_path_is_the_torch_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert default_checkpoint_path() == tmp_path / "hub" / "checkpoints" / OFFICIAL_FILENAME


def test_cached_checkpoint_is_used_without_download(monkeypatch, tmp_path, tiny_checkpoint):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = default_checkpoint_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_checkpoint.read_bytes())
    assert load_checkpoint(None, download=False).config.name == "tiny"


def test_missing_cache_without_download_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(None, download=False)
    assert str(default_checkpoint_path()) in str(error.value)
    assert "ml-site.cdn-apple.com" in str(error.value)


def test_offline_download_fails_cleanly_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "ckpt" / OFFICIAL_FILENAME
    with pytest.raises(CheckpointError) as error:
        download_checkpoint(target, url="http://127.0.0.1:9/sharp.pt", progress=False)
    assert "curl -L -o" in str(error.value)
    assert list(target.parent.iterdir()) == []


@pytest.fixture()
def local_server(tmp_path, tiny_checkpoint):
    """An HTTP server on loopback serving the tiny checkpoint."""
    root = tmp_path / "www"
    root.mkdir()
    (root / OFFICIAL_FILENAME).write_bytes(tiny_checkpoint.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{OFFICIAL_FILENAME}"
    server.shutdown()
    server.server_close()


def test_download_writes_the_file_atomically(tmp_path, local_server, tiny_checkpoint):
    target = tmp_path / "cache" / OFFICIAL_FILENAME
    download_checkpoint(target, url=local_server, progress=False)
    assert target.read_bytes() == Path(tiny_checkpoint).read_bytes()
    assert [p.name for p in target.parent.iterdir()] == [OFFICIAL_FILENAME]


@pytest.mark.parametrize("variable", ["TORCH_HOME", "XDG_CACHE_HOME", None])
def test_torch_free_hub_path_agrees_with_torch_hub(tmp_path, monkeypatch, variable):
    import torch

    from sharp_rt.core.paths import torch_hub_dir

    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if variable:
        monkeypatch.setenv(variable, str(tmp_path))
    assert torch_hub_dir() == Path(torch.hub.get_dir())


def test_sharp_rt_cache_follows_xdg_cache_home_unless_sharp_rt_cache_is_set(tmp_path, monkeypatch):
    from sharp_rt.core.paths import cache_root

    monkeypatch.delenv("SHARP_RT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "sharp-rt"
    monkeypatch.setenv("SHARP_RT_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("SHARP_RT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "sharp-rt"
