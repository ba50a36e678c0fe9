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
message that says what was expected, in the API's words (JSON's ``null``, ``array``, ...; the
format the content type names): 400 for what cannot be read at all (malformed JSON or JSON
nested too deeply to read, base64, or a picture that is not one or is damaged or truncated), 415
for another content type or none, 422 for a readable request that does not fit (unknown keys, a
wrong shape, values out of range, NaN or Infinity, an integer too long to read, a blank picture).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import parse_qs

import numpy as np

from stablecnn.data.framing import FRAMINGS
from stablecnn.data.pictures import picture_from_bytes
from stablecnn.errors import ImageError, NoInkError

MAX_BODY_BYTES = 2 * 1024 * 1024  # 2 MiB: a phone photo's JPEG as a data URL, with room to spare
JSON_KEYS = ("image", "pixels", "feature_maps", "framing")
RAW_TYPES = ("application/octet-stream",)  # besides every image/... type
ACCEPTED_TYPES = (
    'application/json ({"image": a data URL} or {"pixels": rows of values}) or the picture\'s '
    "bytes as image/png, image/jpeg, ... (any image/ type) or application/octet-stream"
)
# what a picture sent as one of these types is said to be when Pillow cannot identify it
IMAGE_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/webp": "WebP",
    "image/tiff": "TIFF",
}
TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")
_JSON_NESTING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # a string, or a bracket


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
        image = _picture(body, channels, size, framing, "the picture sent", kind)
        return image, _flag(options.get("feature_maps", ["0"])[-1])
    if not kind:
        raise RequestError(415, f"the request has no Content-Type header; send {ACCEPTED_TYPES}")
    raise RequestError(415, f"unsupported content type {kind!r}: send {ACCEPTED_TYPES}")


def _from_json(body: bytes, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    except RecursionError:  # Python's reader goes about 1,000 levels deep, then gives up
        raise RequestError(400, _too_deep(body)) from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        payload = json.loads(body, parse_int=_json_int)  # raises the API's message for it
    expected = (
        'a JSON object with "image" (a data URL such as "data:image/png;base64,...") or '
        f'"pixels" ({_pixels_shape_text(channels, size)})'
    )
    if not isinstance(payload, dict):
        raise RequestError(422, f"expected {expected}, got {_json_kind(payload)}")
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
        raise RequestError(
            422, f'"feature_maps" must be true or false, got {_json_text(feature_maps)}'
        )
    if "pixels" in payload:
        if "framing" in payload:
            raise RequestError(422, '"framing" applies to "image" only; "pixels" are not framed')
        return pixels_image(payload["pixels"], channels, size), feature_maps
    framing = _framing(payload.get("framing", "mnist"))
    url = payload["image"]
    data = data_url_bytes(url)  # checked: "data:<type>;...;base64," then the data
    media = url[5 : url.find(",")].split(";")[0].strip().lower()  # no copy of the data
    return _picture(data, channels, size, framing, 'the picture in "image"', media), feature_maps


def _too_deep(body: bytes) -> str:
    """The message for JSON nested deeper than Python's reader goes (about 1,000 levels, its
    recursion limit): the depth ``body`` reaches, counted with its strings skipped."""
    level = deepest = 0
    for token in _JSON_NESTING.finditer(body):
        level += 1 if token[0] in (b"[", b"{") else -1 if token[0] in (b"]", b"}") else 0
        deepest = max(deepest, level)
    return (
        f"JSON nested {deepest:,} levels deep, deeper than the server reads (a request nests 4 "
        f"at most)"
    )


def _json_int(text: str) -> int:
    """An integer of the JSON body; one longer than Python converts is refused in the API's
    words (Python's own advice would be to raise its digit limit)."""
    try:
        return int(text)
    except ValueError:
        digits = len(text.lstrip("-"))
        raise RequestError(
            422,
            f"a number of {digits:,} digits ({text[:12]}...) is too large: the API takes "
            f'"pixels" values 0-255',
        ) from None


def data_url_bytes(url) -> bytes:
    """The bytes of a base64 data URL ``data:[<type>][;...];base64,<data>``.

    Raises:
        RequestError: 422 when ``url`` is not a string; 400 when it is not a base64 data URL or
            its data is not valid base64.
    """
    if not isinstance(url, str):
        raise RequestError(422, f'"image" must be a data URL string, got {_json_kind(url)}')
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
            numbers in [0, 255] (NaN or Infinity named with its index, or their count), or a
            grey image that is uniform (a blank canvas).
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
            f'"pixels" must be {expected}; got {_json_kind(value)}, not a rectangular '
            f"array of numbers",
        )
    if array.shape != shape:
        raise RequestError(
            422, f'"pixels" has shape {array.shape}; expected {expected}, shape {shape}'
        )
    finite = np.isfinite(array)
    if not finite.all():
        raise RequestError(422, _not_finite(array, finite))
    lo, hi = float(array.min()), float(array.max())
    if lo < 0 or hi > 255:
        raise RequestError(422, f'"pixels" values lie in [{lo:g}, {hi:g}]; expected 0-255')
    if channels == 1 and lo == hi:
        raise RequestError(
            422,
            f'"pixels" are all {lo:g}: nothing is drawn (expected a light digit on a '
            f"black background, MNIST's convention)",
        )
    return np.rint(array).astype(np.uint8)


def _not_finite(array: np.ndarray, finite: np.ndarray) -> str:
    """What the NaN and Infinity values of ``"pixels"`` are, and where (JSON indices)."""
    where = np.argwhere(~finite)
    first = tuple(where[0])
    value = array[first]
    name = "NaN" if np.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    at = '"pixels"' + "".join(f"[{i}]" for i in first)
    if len(where) == 1:
        return f"{at} is {name}; expected numbers 0-255"
    return (
        f'"pixels" holds {len(where):,} values that are NaN or Infinity, the first at {at} '
        f"({name}); expected numbers 0-255"
    )


def _picture(data: bytes, channels: int, size, framing: str, name: str, media: str) -> np.ndarray:
    """The picture in ``data`` (said to be of type ``media``), framed (see the module doc)."""
    fmt = IMAGE_FORMATS.get(media)
    expected = f"a {fmt} image" if fmt else "a PNG, JPEG, GIF, BMP, WebP or other image"
    try:
        return picture_from_bytes(data, size, framing, channels, name, expected)[0]
    except NoInkError as exc:  # a blank canvas: readable, but nothing to predict
        raise RequestError(422, f"{exc}; draw something or send a picture with ink on it") from None
    except ImageError as exc:
        raise RequestError(400, str(exc)) from None


def _framing(value) -> str:
    if value not in FRAMINGS:
        raise RequestError(
            422,
            f'"framing" must be one of {", ".join(map(_json_text, FRAMINGS))}, '
            f"got {_json_text(value)}",
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


def _json_kind(value) -> str:
    """What a JSON value is, in JSON's words: null, true, false, a number, a string, an array
    (of how many items), an object."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return f"an array of {len(value)} item{'' if len(value) == 1 else 's'}"
    return "an object"


def _json_text(value) -> str:
    """``value`` as JSON (``null``, ``"yes"``, ``1``), cut to 40 characters."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
