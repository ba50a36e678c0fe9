"""What ``POST /api/predict`` accepts, read into the uint8 image a :class:`Predictor` takes.

Three kinds of body (the public contract of the API):

- JSON ``{"image": "data:image/png;base64,..."}``: a picture as a base64 data URL (any format
  Pillow reads), framed as ``stablecnn predict`` frames a picture file
  (:func:`stablecnn.data.pictures.picture_from_bytes`; ``"framing": "none"`` as ``--framing
  none``). A colour model's picture is kept in colour and resized as a whole.
- JSON ``{"pixels": [[...], ...]}``: an image already in the model's convention and framing, as
  ``stablecnn predict`` takes a ``.npy`` array: ``H`` rows of ``W`` values 0-255 (28 x 28 for
  MNIST, light ink on black) for a grey model, ``3`` channels of those for a colour one. Numbers
  are rounded to the nearest integer.
- the picture's own bytes, with an ``image/...`` content type (or
  ``application/octet-stream``); options in the query string (``?feature_maps=1&framing=none``).

Either JSON body may add ``"feature_maps": true`` (the first convolution's output) and, with
``"image"``, ``"framing"``. Any fault is a :class:`RequestError` carrying its HTTP status and a
message that says what was expected: 400 for what cannot be read at all (malformed JSON, base64
or picture), 415 for another content type, 422 for a readable request that does not fit (unknown
keys, a wrong shape, values out of range, a blank picture).
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import parse_qs

import numpy as np

from stablecnn.data.framing import FRAMINGS
from stablecnn.data.pictures import picture_from_bytes
from stablecnn.errors import ImageError, NoInkError

MAX_BODY_BYTES = 2 * 1024 * 1024  # 2 MiB: a phone photo's JPEG as a data URL, with room to spare
JSON_KEYS = ("image", "pixels", "feature_maps", "framing")
RAW_TYPES = ("application/octet-stream",)  # besides every image/... type
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


class RequestError(Exception):
    """A request the API refuses: ``status`` (400, 415, 422, ...) and what was expected."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_request(
    body: bytes, content_type: str, query: str, channels: int, size: tuple[int, int]
) -> tuple[np.ndarray, bool]:
    """The image a request holds and whether it asks for the feature maps.

    Args:
        body: the request's body.
        content_type: its ``Content-Type`` header (parameters such as ``charset`` ignored).
        query: the URL's query string (options of a raw picture).
        channels: the model's input channels, 1 (grey) or 3 (colour).
        size: ``(H, W)`` of the model's input.

    Returns:
        ``(image, feature_maps)``: uint8 ``(H, W)`` (grey) or ``(3, H, W)`` (colour).

    Raises:
        RequestError: see the module doc for each status.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        return _from_json(body, channels, size)
    if kind.startswith("image/") or kind in RAW_TYPES:
        options = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(options) - {"feature_maps", "framing"})
        if unknown:
            raise RequestError(
                422, f"unknown query option {unknown[0]!r}; expected feature_maps or framing"
            )
        framing = _framing(options.get("framing", ["mnist"])[-1])
        image = _picture(body, channels, size, framing, "the picture sent")
        return image, _flag(options.get("feature_maps", ["0"])[-1])
    shown = kind or "none"
    raise RequestError(
        415,
        f'unsupported content type {shown!r}: send application/json ({{"image": a data URL}} '
        f'or {{"pixels": rows of values}}) or the picture\'s bytes as image/png, image/jpeg, ...',
    )


def _from_json(body: bytes, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, 4300+ digit ints
        raise RequestError(400, f"malformed JSON: {exc}") from None
    expected = (
        'a JSON object with "image" (a data URL such as "data:image/png;base64,...") or '
        f'"pixels" ({_pixels_shape_text(channels, size)})'
    )
    if not isinstance(payload, dict):
        raise RequestError(422, f"expected {expected}, got a JSON {type(payload).__name__}")
    unknown = sorted(set(payload) - set(JSON_KEYS))
    if unknown:
        raise RequestError(
            422, f"unknown key {unknown[0]!r}; the keys are {', '.join(map(repr, JSON_KEYS))}"
        )
    if ("image" in payload) == ("pixels" in payload):
        which = "both" if "image" in payload else "neither"
        raise RequestError(422, f"expected {expected}; got {which}")
    feature_maps = payload.get("feature_maps", False)
    if not isinstance(feature_maps, bool):
        raise RequestError(422, f'"feature_maps" must be true or false, got {feature_maps!r}')
    if "pixels" in payload:
        if "framing" in payload:
            raise RequestError(422, '"framing" applies to "image" only; "pixels" are not framed')
        return pixels_image(payload["pixels"], channels, size), feature_maps
    framing = _framing(payload.get("framing", "mnist"))
    data = data_url_bytes(payload["image"])
    return _picture(data, channels, size, framing, 'the picture in "image"'), feature_maps


def data_url_bytes(url) -> bytes:
    """The bytes of a base64 data URL ``data:[<type>][;...];base64,<data>``.

    Raises:
        RequestError: 422 when ``url`` is not a string; 400 when it is not a base64 data URL or
            its data is not valid base64.
    """
    if not isinstance(url, str):
        raise RequestError(
            422, f'"image" must be a data URL string, got a JSON {type(url).__name__}'
        )
    head, comma, data = url.partition(",")
    if not (head[:5].lower() == "data:" and comma and head.lower().endswith(";base64")):
        raise RequestError(
            400,
            f'"image" is not a base64 data URL: expected "data:image/png;base64,...", '
            f"got {url[:40]!r}" + ("..." if len(url) > 40 else ""),
        )
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f'"image" holds invalid base64 ({exc})') from None


def pixels_image(value, channels: int, size: tuple[int, int]) -> np.ndarray:
    """``"pixels"`` as a uint8 image: ``(H, W)`` (grey) or ``(3, H, W)`` (colour).

    Raises:
        RequestError: 422 for anything but a rectangular array of that shape holding finite
            numbers in [0, 255], or a grey image that is uniform (a blank canvas).
    """
    expected = _pixels_shape_text(channels, size)
    shape = (3, *size) if channels == 3 else tuple(size)
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged rows
        array = None
    if array is None or array.dtype.kind not in "iuf" or array.ndim == 0:
        raise RequestError(
            422,
            f'"pixels" must be {expected}; got {_describe(value)}, not a rectangular '
            f"array of numbers",
        )
    if array.shape != shape:
        raise RequestError(
            422, f'"pixels" has shape {array.shape}; expected {expected}, shape {shape}'
        )
    lo, hi = float(array.min()), float(array.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255:
        raise RequestError(422, f'"pixels" values lie in [{lo:g}, {hi:g}]; expected 0-255')
    if channels == 1 and lo == hi:
        raise RequestError(
            422,
            f'"pixels" are all {lo:g}: nothing is drawn (expected a light digit on a '
            f"black background, MNIST's convention)",
        )
    return np.rint(array).astype(np.uint8)


def _picture(data: bytes, channels: int, size, framing: str, name: str) -> np.ndarray:
    try:
        return picture_from_bytes(data, size, framing, channels, name)[0]
    except NoInkError as exc:  # a blank canvas: readable, but nothing to predict
        raise RequestError(422, f"{exc}; draw something or send a picture with ink on it") from None
    except ImageError as exc:
        raise RequestError(400, str(exc)) from None


def _framing(value) -> str:
    if value not in FRAMINGS:
        raise RequestError(
            422, f'"framing" must be one of {", ".join(map(repr, FRAMINGS))}, got {value!r}'
        )
    return value


def _flag(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise RequestError(422, f"feature_maps must be 1 or 0 (true or false), got {text!r}")


def _pixels_shape_text(channels: int, size: tuple[int, int]) -> str:
    rows = f"{size[0]} rows of {size[1]} values 0-255"
    return f"3 channels of {rows}" if channels == 3 else rows


def _describe(value) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a JSON {type(value).__name__}"
