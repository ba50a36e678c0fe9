"""Fixtures for the tests of ``stablecnn serve``: a run trained by ``stablecnn train`` (on toy data,
in this process), a server on 127.0.0.1 and a free port in a thread of this process, and a small
HTTP client that shows every status and header as sent.
"""

from __future__ import annotations

import http.client
import json
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from support.fakes import make_data, toy_loader


@pytest.fixture(scope="package")
def toy_run(tmp_path_factory) -> Path:
    """A run directory written by ``stablecnn train`` (md1, 1 epoch of 3 steps of 10 toy images,
    evaluated on 10), so its checkpoint holds a test accuracy as every real run's does."""
    from stablecnn import cli

    run = tmp_path_factory.mktemp("serve") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            "stablecnn.cli.train.load_data", toy_loader(make_data(30, 0), make_data(10, 1))
        )
        code = cli.main(
            ["train", "--epochs", "1", "--batch-size", "10", "--out", str(run), "--no-plots"]
        )
    assert code == 0 and (run / "checkpoint.npz").is_file()
    return run


@pytest.fixture(scope="package")
def toy_predictor(toy_run):
    from stablecnn.serve import Predictor

    return Predictor.load(toy_run)


@contextmanager
def running(predictor, **options):
    """A :class:`~stablecnn.serve.ModelServer` of ``predictor`` serving on 127.0.0.1 and a free
    port in a thread; shut down and closed at the end."""
    from stablecnn.serve import make_server

    server = make_server(predictor, "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="package")
def toy_server(toy_predictor):
    with running(toy_predictor) as server:
        yield server


class Client:
    """Requests to one server, each on its own connection, with a timeout so no test hangs."""

    def __init__(self, server, timeout: float = 30.0):
        self.host, self.port = server.server_address[:2]
        self.timeout = timeout

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        """``(status, headers, body bytes)`` of one request."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def get(self, path: str):
        """``(status, JSON or the body's bytes)``."""
        status, headers, body = self.request("GET", path)
        return status, _decoded(headers, body)

    def post(self, payload, path: str = "/api/predict", content_type="application/json"):
        """``(status, decoded answer)`` of a POST of ``payload`` (an object sent as JSON, or
        bytes sent as they are with ``content_type``)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, headers, answer = self.request("POST", path, body, {"Content-Type": content_type})
        return status, _decoded(headers, answer)

    def raw(self, data: bytes) -> bytes:
        """Send ``data`` on a socket as it is (a request no client library would send) and
        return everything the server answers until it closes or goes quiet."""
        import socket

        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(1 << 16):
                chunks.append(chunk)
        return b"".join(chunks)


def _decoded(headers, body: bytes):
    if headers.get("Content-Type", "").startswith("application/json"):
        return json.loads(body)
    return body


@pytest.fixture
def client(toy_server) -> Client:
    """A :class:`Client` of the toy run's server (shared by the package's tests)."""
    return Client(toy_server)


@pytest.fixture
def serving():
    """``serving(predictor, **options)``: a context manager running a server of its own."""
    return running


@pytest.fixture
def client_of():
    """``client_of(server)``: a :class:`Client` of that server."""
    return Client


@pytest.fixture(scope="package")
def digit_pixels() -> np.ndarray:
    """A 28 x 28 uint8 image in MNIST's convention: a bright '1'-like stroke on black."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 13:16] = 255
    image[4:7, 10:14] = 200
    return image
