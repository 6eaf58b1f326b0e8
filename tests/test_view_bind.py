"""``sharp-rt view`` says at once, in one line, when it cannot listen; and Ctrl+C stops it.

Every address used here is on this machine (127.0.0.1, ::1), one that binding refuses
locally (10.1.2.3 is not this machine's: the kernel says so without sending a packet),
or a name the resolver rejects before any lookup (a 64-character label).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
from conftest import DATA
from typer.testing import CliRunner

from sharp_rt.cli import app
from sharp_rt.core.errors import SharpError
from sharp_rt.runtime.gaussians import Gaussians
from sharp_rt.runtime.ply import read_ply, write_ply
from sharp_rt.view.listen import ListenError, listen_port, resolve

pytest.importorskip("viser")
runner = CliRunner()
SCENE = DATA / "tiny_coffee_seed0.ply"
NOT_THIS_MACHINE = "10.1.2.3"
BAD_NAME = "a" * 64 + ".invalid"  # a DNS label is at most 63 characters: refused before any lookup


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture()
def busy_port():
    """A port that a listening socket holds on 127.0.0.1 for the test."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_view_on_an_address_of_another_machine_fails_in_seconds_with_one_line():
    command = [
        sys.executable,
        "-m",
        "sharp_rt",
        "view",
        str(SCENE),
        "--no-browser",
        "--host",
        NOT_THIS_MACHINE,
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "not an address of this machine" in result.stderr and "Traceback" not in result.stderr
    assert seconds < 60  # it hung forever before; the check itself takes milliseconds


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", BAD_NAME], "no such host"),
        (["--host", NOT_THIS_MACHINE, "--port", "0"], "not an address of this machine"),
    ],
)
def test_view_on_an_address_it_cannot_use_exits_2(args, message):
    result = runner.invoke(app, ["view", str(SCENE), "--no-browser", *args])
    assert result.exit_code == 2, result.output
    assert message in flat(result.output) and "Traceback" not in result.output
    assert "hint:" in result.output


def test_view_on_a_busy_port_given_by_the_user_exits_2(busy_port):
    result = runner.invoke(app, ["view", str(SCENE), "--no-browser", "--port", str(busy_port)])
    assert result.exit_code == 2, result.output
    assert f"127.0.0.1:{busy_port}: the port is in use" in flat(result.output)
    assert "--port 0" in result.output and "Traceback" not in result.output


def test_a_busy_port_moves_on_only_when_it_was_not_chosen(busy_port):
    assert listen_port("127.0.0.1", busy_port, next_free=True) > busy_port
    with pytest.raises(ListenError, match="in use"):
        listen_port("127.0.0.1", busy_port, next_free=False)
    assert listen_port("127.0.0.1", 0) == 0  # any free port: the server picks it


def test_a_busy_port_on_ipv6_is_an_error_too():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6) as sock:
        try:
            sock.bind(("::1", 0))
        except OSError as exc:
            pytest.skip(f"::1 cannot be bound here: {exc}")
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ListenError, match=r"\[::1\]:\d+: the port is in use"):
            listen_port("::1", port)


def test_a_name_lookup_that_never_answers_is_cut_off(monkeypatch):
    release = threading.Event()

    def stuck(*args, **kwargs):
        release.wait(30)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", stuck)  # a resolver that does not answer
    started = time.monotonic()
    try:
        with pytest.raises(ListenError, match="looking up the name took over"):
            resolve("photos.example", 8080, timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 5


def test_a_server_that_never_starts_is_an_error_not_a_hang(monkeypatch):
    from sharp_rt.view import server

    class NeverListens:  # what viser does when every bind fails: its constructor waits forever
        def __init__(self, **kwargs):
            threading.Event().wait()

    monkeypatch.setattr(server, "START_SECONDS", 0.5)
    with pytest.raises(ListenError, match="did not start"):
        server._start_server(types.SimpleNamespace(ViserServer=NeverListens), "127.0.0.1", 0, "t")


def test_view_refuses_a_scene_with_a_broken_camera_or_no_gaussians(tmp_path):
    scene = read_ply(SCENE)
    broken = tmp_path / "broken.ply"
    write_ply(Gaussians(*_arrays(scene), f_px=0.0, image_size=scene.image_size), broken)
    result = runner.invoke(app, ["view", str(broken), "--no-browser", "--port", "0"])
    assert result.exit_code == 2 and "broken.ply holds an invalid camera" in flat(result.output)
    empty = tmp_path / "empty.ply"
    write_ply(Gaussians(*(a[:0] for a in _arrays(scene)), f_px=500.0, image_size=(600, 400)), empty)
    result = runner.invoke(app, ["view", str(empty), "--no-browser", "--port", "0"])
    assert result.exit_code == 2 and "holds no Gaussians" in flat(result.output)
    from sharp_rt.view import SceneViewer

    with pytest.raises(SharpError, match="invalid camera"):  # Gaussians made in Python: the same check
        SceneViewer(Gaussians(*_arrays(scene), f_px=float("nan"), image_size=(600, 400)), port=0)


def _arrays(scene: Gaussians) -> list[np.ndarray]:
    return [scene.mean_vectors, scene.singular_values, scene.quaternions, scene.colors, scene.opacities]


def test_ctrl_c_stops_the_viewer():
    command = [sys.executable, "-m", "sharp_rt", "view", str(SCENE), "--no-browser", "--port", "0"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # background shells ignore it
    )
    try:
        deadline, lines = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "Viewer: http://" in line or (not line and process.poll() is not None):
                break
        assert any("Viewer: http://" in line for line in lines), "".join(lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
