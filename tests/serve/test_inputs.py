"""What ``POST /api/predict`` says about a body it refuses, without HTTP: the messages speak the
API's language (JSON's ``null`` and ``array``, the Content-Type header, NaN and Infinity with
their index, the format a content type names), never Python's (``NoneType``, ``nan``,
``sys.set_int_max_str_digits``, ``.npy``)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from stablecnn.serve import RequestError, read_request

SIZE = (28, 28)
EXPECTED = (
    'expected a JSON object with "image" (a data URL such as "data:image/png;base64,...") or '
    '"pixels" (28 rows of 28 values 0-255), got '
)


def refusal(body: bytes, content_type: str = "application/json", channels: int = 1, size=SIZE):
    """``(status, message)`` of the :class:`RequestError` that ``body`` raises."""
    with pytest.raises(RequestError) as info:
        read_request(body, content_type, "", channels, size)
    return info.value.status, str(info.value)


def pixels_body(values) -> bytes:
    """``{"pixels": values}`` as JSON, Python's ``nan`` and ``inf`` written as JSON's ``NaN``,
    ``Infinity`` and ``-Infinity`` (which Python's json reads back)."""
    return json.dumps({"pixels": np.asarray(values).tolist()}).encode()


def data_url(data: bytes, media: str) -> bytes:
    return json.dumps({"image": f"data:{media};base64," + base64.b64encode(data).decode()}).encode()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"null", EXPECTED + "null"),
        (b"true", EXPECTED + "true"),
        (b"3.5", EXPECTED + "a number"),
        (b'"pixels"', EXPECTED + "a string"),
        (b"[1, 2]", EXPECTED + "an array of 2 items"),
        (b'{"image": null}', '"image" must be a data URL string, got null'),
        (b'{"image": [1]}', '"image" must be a data URL string, got an array of 1 item'),
        (
            b'{"pixels": "0"}',
            '"pixels" must be 28 rows of 28 values 0-255; got a string, not a rectangular '
            "array of numbers",
        ),
        (
            b'{"pixels": {"0": 1}}',
            '"pixels" must be 28 rows of 28 values 0-255; got an object, not a rectangular '
            "array of numbers",
        ),
        (
            b'{"pixels": [[1]], "feature_maps": null}',
            '"feature_maps" must be true or false, got null',
        ),
        (
            b'{"pixels": [[1]], "feature_maps": "yes"}',
            '"feature_maps" must be true or false, got "yes"',
        ),
        (
            b'{"image": "data:,", "framing": null}',
            '"framing" must be one of "mnist", "none", got null',
        ),
    ],
    ids=[
        "null",
        "true",
        "a number",
        "a string",
        "an array",
        "image null",
        "image an array",
        "pixels a string",
        "pixels an object",
        "feature_maps null",
        "feature_maps a string",
        "framing null",
    ],
)
def test_a_json_value_of_the_wrong_kind_is_named_in_json_words(body, message):
    assert refusal(body) == (422, message)


def test_no_content_type_says_the_header_is_missing_and_what_is_accepted():
    accepted = (
        'send application/json ({"image": a data URL} or {"pixels": rows of values}) or the '
        "picture's bytes as image/png, image/jpeg, ... (any image/ type) or "
        "application/octet-stream"
    )
    assert refusal(b"{}", "") == (415, f"the request has no Content-Type header; {accepted}")
    assert refusal(b"1", "text/plain") == (
        415,
        f"unsupported content type 'text/plain': {accepted}",
    )


def test_one_nan_is_named_with_its_index():
    values = np.zeros(SIZE)
    values[3, 5] = np.nan
    assert refusal(pixels_body(values)) == (422, '"pixels"[3][5] is NaN; expected numbers 0-255')
    values[3, 5] = -np.inf
    assert refusal(pixels_body(values)) == (
        422,
        '"pixels"[3][5] is -Infinity; expected numbers 0-255',
    )


def test_many_nans_and_infinities_are_counted_and_the_first_named():
    values = np.zeros((3, 2, 2))  # a colour model's channels, rows, values
    values[1, 0, 1] = np.inf
    values[2, 1, 0] = np.nan
    values[2, 1, 1] = np.nan
    assert refusal(pixels_body(values), channels=3, size=(2, 2)) == (
        422,
        '"pixels" holds 3 values that are NaN or Infinity, the first at "pixels"[1][0][1] '
        "(Infinity); expected numbers 0-255",
    )


@pytest.mark.parametrize("sign", ["", "-"])
@pytest.mark.parametrize("where", ["the body", "a pixel"])
def test_an_integer_too_long_to_read_is_too_large_not_python_advice(sign, where):
    number = sign + "7" * 5000
    body = number if where == "the body" else '{"pixels": [[0, ' + number + "]]}"
    assert refusal(body.encode()) == (
        422,
        f'a number of 5,000 digits ({number[:12]}...) is too large: the API takes "pixels" '
        "values 0-255",
    )


@pytest.mark.parametrize(
    "content_type, message",
    [
        ("image/png", "the picture sent: not a PNG image (Pillow cannot identify it)"),
        ("image/jpeg; q=1", "the picture sent: not a JPEG image (Pillow cannot identify it)"),
        (
            "application/octet-stream",
            "the picture sent: not a PNG, JPEG, GIF, BMP, WebP or other image (Pillow cannot "
            "identify it)",
        ),
        (
            "image/x-unknown",
            "the picture sent: not a PNG, JPEG, GIF, BMP, WebP or other image (Pillow cannot "
            "identify it)",
        ),
    ],
)
def test_a_body_that_is_no_picture_names_the_format_of_its_content_type(content_type, message):
    assert refusal(b"hello, world", content_type) == (400, message)


def test_a_data_url_that_is_no_picture_names_the_format_of_its_type():
    assert refusal(data_url(b"hello, world", "image/png")) == (
        400,
        'the picture in "image": not a PNG image (Pillow cannot identify it)',
    )
    assert refusal(data_url(b"hello, world", "text/plain")) == (
        400,
        'the picture in "image": not a PNG, JPEG, GIF, BMP, WebP or other image (Pillow cannot '
        "identify it)",
    )


def png_with_two_idat_chunks() -> tuple[bytes, int]:
    """A noisy 40 x 40 PNG whose image data is split into two IDAT chunks, and the offset of the
    second chunk's header (Pillow reads it mid-decoding: a fault there is a ``SyntaxError``)."""
    import io
    import struct
    import zlib

    from PIL import Image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    pixels = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    png = buffer.getvalue()
    (length,) = struct.unpack(">I", png[33:37])  # the one IDAT, right after the IHDR
    data = png[41 : 41 + length]
    head, first = png[:33], chunk(b"IDAT", data[:500])
    return head + first + chunk(b"IDAT", data[500:]) + chunk(b"IEND", b""), len(head + first)


@pytest.mark.parametrize(
    "damage", ["cut after 200 bytes", "cut in a chunk's header", "a chunk's type garbled"]
)
def test_a_damaged_picture_is_named_by_its_format_not_by_python_s_exception(damage):
    png, second = png_with_two_idat_chunks()
    assert read_request(png, "image/png", "framing=none", 1, SIZE)[0].shape == SIZE  # whole: read
    damaged = {
        "cut after 200 bytes": png[:200],
        "cut in a chunk's header": png[: second + 6],
        "a chunk's type garbled": png[: second + 4] + b"\0\1\2\3" + png[second + 8 :],
    }[damage]
    for body, content_type, name in (
        (damaged, "image/png", "the picture sent"),
        (data_url(damaged, "image/png"), "application/json", 'the picture in "image"'),
    ):
        status, message = refusal(body, content_type)
        assert status == 400 and message.startswith(f"{name}: a damaged or truncated PNG ("), (
            message
        )
        assert "Error" not in message, message  # not OSError, SyntaxError, ...


@pytest.mark.parametrize(
    "body, depth",
    [
        (b"[" * 100_000, "100,000"),
        (b'{"a": ' * 100_000, "100,000"),
        (b'["]]]]}}}", ' * 1000 + b"[" * 100_000, "101,000"),
        (b"[" * 1500 + b"]" * 1500, "1,500"),
    ],
    ids=["arrays", "objects", "brackets in strings before", "closed"],
)
def test_json_too_deep_to_read_says_how_deep_not_python_s_recursion(body, depth):
    assert refusal(body) == (
        400,
        f"JSON nested {depth} levels deep, deeper than the server reads (a request nests 4 at "
        f"most)",
    )


def test_json_nested_deeply_but_readable_is_judged_as_any_json():
    assert refusal(b"[" * 300 + b"]" * 300) == (422, EXPECTED + "an array of 1 item")
