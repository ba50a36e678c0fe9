"""The JSON API of ``stablecnn serve`` over real HTTP on 127.0.0.1: the answers (the same as
``stablecnn predict``'s for the same picture), every status, the static files, and that no request
stops the server (each bad request is followed by a good one on a new connection)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import struct

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stablecnn.cli.predict import predict_files
from stablecnn.data import Normalizer
from stablecnn.data.pictures import load_image
from stablecnn.serve import MAX_BODY_BYTES, static_files
from stablecnn.serve.server import Handler
from stablecnn.training.checkpoint import load, load_model


def drawing(kind: str = "one", size: int = 280) -> Image.Image:
    """What the page sends: black strokes on a white canvas."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    if kind == "one":
        draw.line([(size * 0.5, size * 0.15), (size * 0.47, size * 0.85)], fill=0, width=20)
    else:  # a zero
        draw.ellipse([size * 0.3, size * 0.15, size * 0.7, size * 0.85], outline=0, width=20)
    return img


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


def assert_serving(client, digit_pixels) -> None:
    """The server still answers a good request, on a new connection."""
    status, answer = client.post({"pixels": digit_pixels.tolist()})
    assert status == 200 and len(answer["probabilities"]) == 10, answer


# -- the answers ----------------------------------------------------------------------------------
def test_model_card(client, toy_run):
    status, card = client.get("/api/model")
    history = load(toy_run).history
    assert status == 200
    assert (card["name"], card["dataset"], card["classes"]) == ("md1", "mnist", list("0123456789"))
    assert card["test_accuracy"] == float(history["epoch_test_acc"][-1])
    assert card["test_loss"] == float(history["epoch_test_loss"][-1])
    assert (card["epochs"], card["parameters"], card["input_shape"]) == (1, 2_796_218, [1, 28, 28])
    assert [row["layer"] for row in card["layers"]][:2] == [
        "Conv2d(1, 32, kernel_size=(10, 10))",
        "ReLU()",
    ]
    assert card["feature_maps"] == {
        "layer": 0,
        "description": "Conv2d(1, 32, kernel_size=(10, 10))",
        "shape": [32, 19, 19],
        "input_shape": [1, 28, 28],
    }
    assert card["summary"].splitlines()[-1] == "total parameters: 2,796,218 (float32)"
    assert card["max_body_bytes"] == MAX_BODY_BYTES == 2 * 1024 * 1024
    assert card["checkpoint"] == "run/checkpoint.npz"  # not the full path
    assert card["preprocessing"] == "mnist-framing"


def test_pixels_are_used_as_they_are(client, toy_run, digit_pixels):
    model, ckpt = load_model(toy_run)
    normalizer = Normalizer.from_dict(ckpt.meta["normalizer"])
    expected = model.predict_proba(digit_pixels[None], 1, normalizer)[0].astype(np.float64)
    status, answer = client.post({"pixels": digit_pixels.tolist()})
    assert status == 200
    assert answer["probabilities"] == expected.tolist()
    assert answer["class"] == int(expected.argmax()) and answer["name"] == str(answer["class"])
    assert answer["input"] == digit_pixels.tolist()
    assert "feature_maps" not in answer
    # floats are rounded to the nearest integer pixel
    status, rounded = client.post({"pixels": (digit_pixels - 0.4).clip(0).tolist()})
    assert status == 200 and rounded["input"] == digit_pixels.tolist()


@pytest.mark.parametrize("kind", ["one", "zero"])
def test_a_picture_is_framed_and_predicted_as_predict_does(client, toy_run, tmp_path, kind):
    """The data URL, the raw bytes and ``stablecnn predict``'s file give one answer."""
    path = tmp_path / f"{kind}.png"
    drawing(kind).save(path)
    model, ckpt = load_model(toy_run)
    normalizer = Normalizer.from_dict(ckpt.meta["normalizer"])
    ((_, [expected]),) = predict_files(model, normalizer, [path])
    status, by_url = client.post({"image": data_url(path.read_bytes())})
    assert status == 200
    assert by_url["input"] == load_image(path).tolist()  # the MNIST framing of predict
    assert by_url["probabilities"] == expected.probabilities.tolist()
    assert by_url["class"] == expected.label
    status, by_bytes = client.post(path.read_bytes(), content_type="image/png")
    assert status == 200 and by_bytes == by_url


def test_framing_none_and_other_formats(client, tmp_path):
    img = drawing("one")
    path = tmp_path / "one.png"
    img.save(path)
    status, unframed = client.post({"image": data_url(png_bytes(img)), "framing": "none"})
    assert status == 200 and unframed["input"] == load_image(path, framing="none").tolist()
    # a JPEG, sent as raw bytes with options in the query string
    jpeg = png_bytes(img.convert("RGB"), "JPEG")
    status, answer = client.post(jpeg, "/api/predict?framing=none", "image/jpeg")
    assert status == 200 and np.array(answer["input"]).shape == (28, 28)
    # an upload whose type the browser did not know
    status, answer = client.post(png_bytes(img), content_type="application/octet-stream")
    assert status == 200


def test_feature_maps_are_the_first_convolution_output(client, toy_run, digit_pixels):
    model, ckpt = load_model(toy_run)
    normalizer = Normalizer.from_dict(ckpt.meta["normalizer"])
    conv = model.layers[0].forward(normalizer(digit_pixels[None]), training=False)[0]
    status, answer = client.post({"pixels": digit_pixels.tolist(), "feature_maps": True})
    assert status == 200
    maps = answer["feature_maps"]
    assert maps["layer"] == 0 and maps["shape"] == [32, 19, 19]
    assert maps["values"] == np.round(conv.astype(np.float64), 4).tolist()
    png = png_bytes(drawing("zero"))
    status, raw = client.post(png, "/api/predict?feature_maps=1", "image/png")
    status_url, by_url = client.post({"image": data_url(png), "feature_maps": True})
    assert status == status_url == 200 and raw["feature_maps"] == by_url["feature_maps"]


# -- every status, and the server goes on ---------------------------------------------------------
BLANK = png_bytes(Image.new("L", (280, 280), 255))
ZEROS = np.zeros((28, 28), int).tolist()


def ones(rows, cols, value=255):
    return np.full((rows, cols), value).tolist()


BAD_REQUESTS = [
    # (id, content type, body, status, what the message says)
    ("malformed JSON", "application/json", b'{"pixels": [', 400, "malformed JSON"),
    ("not UTF-8", "application/json", b"\xff\xfe{}", 400, "malformed JSON"),
    ("nested too deep", "application/json", b"[" * 100_000, 400, "JSON nested 100,000 levels deep"),
    (
        "a 5000-digit number",
        "application/json",
        b"1" * 5000,
        422,
        "a number of 5,000 digits (111111111111...) is too large",
    ),
    ("a JSON array", "application/json", b"[1, 2]", 422, "got an array of 2 items"),
    ("JSON null", "application/json", b"null", 422, "got null"),
    ("no image or pixels", "application/json", b"{}", 422, 'expected a JSON object with "image"'),
    (
        "both image and pixels",
        "application/json",
        json.dumps({"image": data_url(BLANK), "pixels": ZEROS}).encode(),
        422,
        "got both",
    ),
    ("unknown key", "application/json", b'{"pixel": []}', 422, "unknown key 'pixel'"),
    (
        "27 rows",
        "application/json",
        json.dumps({"pixels": ones(27, 28)}).encode(),
        422,
        '"pixels" has shape (27, 28); expected 28 rows of 28 values 0-255',
    ),
    (
        "a flat list",
        "application/json",
        json.dumps({"pixels": [0] * 784}).encode(),
        422,
        "has shape (784,); expected 28 rows of 28 values 0-255",
    ),
    (
        "ragged rows",
        "application/json",
        json.dumps({"pixels": [[1] * 28] * 27 + [[1] * 27]}).encode(),
        422,
        "not a rectangular array of numbers",
    ),
    (
        "strings",
        "application/json",
        json.dumps({"pixels": [["12"] * 28] * 28}).encode(),
        422,
        "not a rectangular array of numbers",
    ),
    (
        "a value of 256",
        "application/json",
        json.dumps({"pixels": ones(28, 28, 256)}).encode(),
        422,
        "values lie in [256, 256]; expected 0-255",
    ),
    (
        "a negative value",
        "application/json",
        json.dumps({"pixels": [[-1] + [0] * 27] + ZEROS[1:]}).encode(),
        422,
        "expected 0-255",
    ),
    ("blank pixels", "application/json", json.dumps({"pixels": ZEROS}).encode(), 422, "all 0"),
    (
        "blank canvas",
        "application/json",
        json.dumps({"image": data_url(BLANK)}).encode(),
        422,
        "no ink found: the picture is uniform",
    ),
    ("blank raw picture", "image/png", BLANK, 422, "the picture sent: no ink found"),
    (
        "not a data URL",
        "application/json",
        b'{"image": "hello"}',
        400,
        'is not a base64 data URL: expected "data:image/png;base64,..."',
    ),
    (
        "bad base64",
        "application/json",
        b'{"image": "data:image/png;base64,@@@@"}',
        400,
        "invalid base64",
    ),
    (
        "not a picture",
        "application/json",
        json.dumps({"image": data_url(b"hello, world", "text/plain")}).encode(),
        400,
        'the picture in "image": not a PNG, JPEG, GIF, BMP, WebP or other image (Pillow cannot '
        "identify it)",
    ),
    ("a bad PNG", "image/png", b"hello", 400, "the picture sent: not a PNG image (Pillow cannot"),
    (
        "a truncated PNG",
        "image/png",
        png_bytes(drawing())[:200],
        400,
        "the picture sent: a damaged or truncated PNG (",
    ),
    ("an empty picture", "image/png", b"", 400, "Pillow cannot identify it"),
    ("image is a number", "application/json", b'{"image": 5}', 422, "must be a data URL string"),
    (
        "feature_maps as text",
        "application/json",
        json.dumps({"pixels": ones(28, 28), "feature_maps": "yes"}).encode(),
        422,
        '"feature_maps" must be true or false',
    ),
    (
        "an unknown framing",
        "application/json",
        json.dumps({"image": data_url(BLANK), "framing": "centre"}).encode(),
        422,
        '"framing" must be one of "mnist", "none", got "centre"',
    ),
    (
        "framing with pixels",
        "application/json",
        json.dumps({"pixels": ones(28, 28), "framing": "none"}).encode(),
        422,
        '"framing" applies to "image" only',
    ),
    ("plain text", "text/plain", b"1", 415, "unsupported content type 'text/plain'"),
    ("form data", "application/x-www-form-urlencoded", b"a=1", 415, "unsupported content type"),
]


@pytest.mark.parametrize(
    "content_type, body, status, message",
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_their_status_and_a_message(
    client, digit_pixels, content_type, body, status, message
):
    got, answer = client.post(body, content_type=content_type)
    assert (got, answer["status"]) == (status, status), answer
    assert message in answer["error"]
    assert_serving(client, digit_pixels)


def test_a_json_nan_is_refused(client, digit_pixels):
    body = json.dumps({"pixels": ones(28, 28, 0)}).replace("0", "NaN", 1).encode()
    status, answer = client.post(body)
    assert status == 422 and answer["error"] == '"pixels"[0][0] is NaN; expected numbers 0-255'
    assert_serving(client, digit_pixels)


def test_no_content_type_is_a_415_naming_the_missing_header(client, digit_pixels):
    status, headers, body = client.request("POST", "/api/predict", b"{}")  # no Content-Type
    answer = json.loads(body)
    assert status == answer["status"] == 415
    assert answer["error"].startswith("the request has no Content-Type header; send application/")
    assert_serving(client, digit_pixels)


@pytest.mark.parametrize(
    "method, path, status, allow",
    [
        ("GET", "/api/predict", 405, "POST"),
        ("PUT", "/api/predict", 405, "POST"),
        ("POST", "/api/model", 405, "GET"),
        ("DELETE", "/", 405, "GET"),
        ("POST", "/static/app.js", 405, "GET"),
        ("GET", "/api/nothing", 404, None),
        ("POST", "/api/predicts", 404, None),
        ("GET", "/favicon.ico", 404, None),
    ],
)
def test_methods_and_unknown_paths(client, digit_pixels, method, path, status, allow):
    got, headers, body = client.request(method, path, b"{}" if method != "GET" else None)
    answer = json.loads(body)
    assert (got, answer["status"], headers.get("Allow")) == (status, status, allow)
    assert_serving(client, digit_pixels)


def test_a_body_over_the_limit_is_refused_from_its_header(client, digit_pixels):
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    ).encode()
    reply = client.raw(head)  # the body is never sent: the headers are enough
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 ")  # its phrase differs between Pythons
    assert b"Connection: close" in rest
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert answer["error"] == (
        "the body is 2,097,153 bytes, more than the limit of 2,097,152 bytes (2 MiB)"
    )
    assert_serving(client, digit_pixels)


def test_a_body_over_the_limit_sent_in_full_still_gets_its_answer(client, digit_pixels):
    """The server reads and drops what the client sends after the refusal, so the client reads
    a 413, not a reset connection."""
    body = json.dumps({"image": "data:image/png;base64," + "A" * MAX_BODY_BYTES}).encode()
    status, answer = client.post(body)
    assert status == 413 and "more than the limit of 2,097,152 bytes" in answer["error"]
    assert_serving(client, digit_pixels)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n", 411),
        (
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            411,
        ),
        (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400),
        (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n", 400),
        (
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Content-Length: 20\r\n\r\n{}",
            400,
        ),
        # the body ends before its Content-Length: the client went away
        (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{}", 400),
        (b"GET / HTTP/x.y\r\n\r\n", 400),  # the standard library's refusals, as JSON too
        (b"FETCH / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    ],
    ids=[
        "no length",
        "chunked",
        "length not a number",
        "negative length",
        "length with an underscore",
        "two lengths",
        "short body",
        "bad version",
        "unknown method",
        "long URL",
    ],
)
def test_malformed_http_requests(client, digit_pixels, request_bytes, status):
    reply = client.raw(request_bytes)
    assert reply.split(b" ", 2)[1] == str(status).encode(), reply[:200]
    answer = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert answer["status"] == status and answer["error"]
    assert_serving(client, digit_pixels)


def test_a_body_left_unread_is_never_read_as_the_next_request(client):
    """A refused request's body (a POST to a GET path) would be the start of the next request on
    a kept-alive connection: the server closes the connection instead."""
    body = b"GET /api/model HTTP/1.1\r\nHost: x\r\n\r\n"  # a body that reads as a request
    reply = client.raw(
        b"POST /api/model HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert reply.startswith(b"HTTP/1.1 405 ") and reply.count(b"HTTP/1.1 ") == 1, reply
    assert b"Connection: close" in reply


def test_a_bug_is_a_500_and_the_server_goes_on(
    client, toy_predictor, digit_pixels, monkeypatch, capsys
):
    def broken(image, feature_maps=False):
        raise RuntimeError("a bug in the model")

    monkeypatch.setattr(toy_predictor, "predict", broken)
    status, answer = client.post({"pixels": digit_pixels.tolist()})
    assert status == 500 and answer["error"].startswith("internal error in stablecnn serve")
    assert "RuntimeError: a bug in the model" in capsys.readouterr().err  # the traceback
    monkeypatch.undo()
    assert_serving(client, digit_pixels)


# -- clients that go away: one line on stderr each, no traceback ----------------------------------
HEAD_OF_100 = (
    b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)


def server_log(serving, predictor, capsys, client_of, digit_pixels, act) -> str:
    """What a server of its own writes on stderr around ``act(host, port)`` and a good request
    after it, read once every connection's thread has ended."""
    capsys.readouterr()
    with serving(predictor) as server:
        server.daemon_threads = False  # so that closing the server joins its connections' threads
        act(*server.server_address[:2])
        assert_serving(client_of(server), digit_pixels)
    return capsys.readouterr().err


def test_a_client_gone_mid_body_is_one_line(
    serving, toy_predictor, capsys, client_of, digit_pixels
):
    """Content-Length 100, 1 byte, then the socket closed: said in one line, and the 400 the
    server still tries (for a client that only closed its sending half) fails quietly."""

    def act(host, port):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(HEAD_OF_100 + b"{")

    err = server_log(serving, toy_predictor, capsys, client_of, digit_pixels, act)
    assert "Traceback" not in err
    assert err.splitlines() == [
        "127.0.0.1 - POST /api/predict: the client went away while reading the request (the "
        "body ended after 1 of 100 bytes)"
    ]


@pytest.mark.parametrize(
    "sent",
    [b"POST /api/predict HTTP/1.1\r\nHost: x\r\n", HEAD_OF_100 + b"{"],
    ids=["mid-headers", "mid-body"],
)
def test_a_connection_reset_is_one_line(
    serving, toy_predictor, capsys, client_of, digit_pixels, sent
):
    """A reset reaches the standard library (reading the headers) or our handler (reading the
    body), whichever reads first: either way one line naming the client and the reset."""

    def act(host, port):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(sent)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # closed with a zero linger: a reset, not a FIN

    err = server_log(serving, toy_predictor, capsys, client_of, digit_pixels, act)
    assert "Traceback" not in err
    (line,) = err.splitlines()
    assert line.startswith("127.0.0.1 - ") and "the client went away" in line
    assert "(ConnectionResetError: " in line and line.endswith(")"), line


def test_a_client_stalled_mid_body_is_one_line(
    serving, toy_predictor, capsys, client_of, digit_pixels, monkeypatch
):
    monkeypatch.setattr(Handler, "timeout", 0.2)  # seconds a body may take (30 s in use)

    def act(host, port):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(HEAD_OF_100 + b"{")
            assert sock.recv(1024) == b""  # the server closes the connection, answering nothing

    err = server_log(serving, toy_predictor, capsys, client_of, digit_pixels, act)
    assert err.splitlines() == [
        "127.0.0.1 - POST /api/predict: the client went away while reading the request "
        "(TimeoutError: timed out)"
    ]


def test_a_kept_alive_connection_serves_many_requests(toy_server, digit_pixels):
    host, port = toy_server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        for payload in ({"pixels": digit_pixels.tolist()}, {"pixels": ZEROS}) * 3:
            conn.request(
                "POST", "/api/predict", json.dumps(payload), {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            response.read()
            assert response.status in (200, 422) and not response.will_close
    finally:
        conn.close()


# -- the static files -----------------------------------------------------------------------------
def test_the_page_and_its_files(client):
    files = static_files()
    assert sorted(files) == [
        "/",
        "/index.html",
        "/static/app.js",
        "/static/icon.svg",
        "/static/style.css",
    ]
    status, headers, page = client.request("GET", "/")
    assert status == 200 and page == files["/"][0]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"].startswith("default-src 'self';")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b'<canvas id="pad"' in page and b'src="static/app.js"' in page
    for path, content_type in [
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "text/css; charset=utf-8"),
        ("/static/icon.svg", "image/svg+xml"),
    ]:
        status, headers, body = client.request("GET", path)
        assert (status, headers["Content-Type"], body) == (200, content_type, files[path][0])
    status, headers, body = client.request("HEAD", "/static/app.js")
    assert (
        status == 200
        and body == b""
        and int(headers["Content-Length"]) == len(files["/static/app.js"][0])
    )


def test_the_page_loads_nothing_from_elsewhere():
    """No CDN, no web font, no remote script: every URL in the page's files is the server's own
    (the Content-Security-Policy would block any other in the browser)."""
    import re

    for path, (body, _) in static_files().items():
        text = body.decode()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I) or path.endswith(
            ".svg"
        ), path
        assert "@import" not in text and "url(" not in text, path


TRAVERSALS = [
    "/../pyproject.toml",
    "/static/../server.py",
    "/static/../../stablecnn/serve/server.py",
    "/static/..%2fserver.py",
    "/static/..%2F..%2Fserve%2Fserver.py",
    "/static/%2e%2e/server.py",
    "/static/%2e%2e%2f%2e%2e%2fpredictor.py",
    "/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
    "/static//etc/passwd",
    "/static/%252e%252e/server.py",
    "/static/..\\server.py",
    "/static/app.js/../server.py",
    "/static/app.js%00.png",
    "/static/server.py",
    "/static/__init__.py",
    "/static/",
    "/static",
    "/etc/passwd",
    "/index.html/..",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_reaches_a_file_outside_the_page(client, digit_pixels, path):
    reply = client.raw(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 404 "), reply[:100]
    body = reply.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["status"] == 404
    assert b"import" not in body and b"root:" not in body
    assert_serving(client, digit_pixels)
