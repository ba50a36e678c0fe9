"""``stablecnn serve`` as a user starts it: in its own process on a run trained by ``stablecnn
train``, answering over HTTP, writing nothing to disk, stopped by Ctrl-C; its warning for an
address other machines reach; its errors."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from support.processes import default_sigint
from support.runs import snapshot

from stablecnn import cli
from stablecnn.serve import ModelServer

TIMEOUT = 60  # seconds: a hang guard for the child process


def post(url: str, body: bytes, content_type: str):
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_serve_in_its_own_process_writes_nothing(toy_run, tmp_path, digit_pixels):
    # the child's working folder, temporary folder and home are empty folders of their own
    home, work, temp = (tmp_path / name for name in ("home", "work", "tmp"))
    for folder in (home, work, temp):
        folder.mkdir()
    before = snapshot(toy_run)
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(temp),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MPLCONFIGDIR": str(home / ".matplotlib"),
        "PYTHONDONTWRITEBYTECODE": "1",  # the interpreter's own caches are not the server's
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "stablecnn", "serve", str(toy_run), "--port", "0"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # a test run in the background has SIGINT ignored
    )
    try:
        line = child.stdout.readline()
        assert (
            line.startswith("serving md1 (mnist, test accuracy ") and "(Ctrl-C to stop)" in line
        ), line + child.stderr.read() if not line else line
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/model", timeout=TIMEOUT) as response:
            assert json.load(response)["name"] == "md1"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            assert b'<canvas id="pad"' in response.read()
        picture = Image.new("L", (200, 200), 255)
        ImageDraw.Draw(picture).line([(100, 30), (95, 170)], fill=0, width=14)
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        png = buffer.getvalue()
        status, by_bytes = post(url + "api/predict?feature_maps=1", png, "image/png")
        assert status == 200 and by_bytes["feature_maps"]["shape"] == [32, 19, 19]
        image = {"image": "data:image/png;base64," + base64.b64encode(png).decode()}
        status, by_url = post(url + "api/predict", json.dumps(image).encode(), "application/json")
        assert status == 200 and by_url["probabilities"] == by_bytes["probabilities"]
        status, refused = post(url + "api/predict", b"{", "application/json")
        assert status == 400
        status, answer = post(
            url + "api/predict",
            json.dumps({"pixels": digit_pixels.tolist()}).encode(),
            "application/json",
        )
        assert status == 200
        child.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert "stablecnn serve: stopped" in err and "warning" not in err and "Traceback" not in err
    assert snapshot(toy_run) == before
    for folder in (home, work, temp):
        assert not any(folder.rglob("*")), f"{folder.name}: {sorted(folder.rglob('*'))}"


def test_an_address_other_machines_reach_is_warned_about(toy_run, monkeypatch, capsys):
    def ctrl_c(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelServer, "serve_forever", ctrl_c)
    assert cli.main(["serve", str(toy_run), "--host", "0.0.0.0", "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert "stablecnn serve: warning: listening on 0.0.0.0, not only this machine" in err
    assert "at http://0.0.0.0:" in out
    assert cli.main(["serve", str(toy_run), "--host", "127.0.0.1", "--port", "0"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_errors_of_the_command(toy_run, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", str(toy_run), "--port", str(port)]) == 2
        assert f"stablecnn: error: cannot listen on 127.0.0.1:{port}: Address already in use" in (
            capsys.readouterr().err
        )
    assert cli.main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", str(toy_run), "--port", "65536"])
    assert info.value.code == 2 and "expected a port 0-65535, got 65536" in capsys.readouterr().err
    assert Path(toy_run, "checkpoint.npz").is_file()
