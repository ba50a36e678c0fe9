"""Picture and ``.npy`` files as uint8 images in MNIST's convention, for predicting (and the
web page): every file becomes light digits on a dark background, framed as MNIST's were. For a
colour model (3 input channels, CIFAR-10's) pictures stay in colour instead: see "Colour" below.

Images (PNG, JPEG, GIF, BMP, TIFF, WebP, ... anything Pillow reads; the first frame only):

1. EXIF rotation applied; transparency composited on white (on black when what is drawn is
   light, so a white stroke on a transparent canvas stays visible); colour turned into grey with
   ITU-R 601 luma; 16-bit and 32-bit greys scaled by their range (see :func:`unit_range`).
2. Framed as MNIST's digits were (``framing="mnist"``, the default; ``--framing mnist``), by
   :func:`stablecnn.data.framing.frame_mnist`: made light on dark (inverted on light paper), the
   contrast stretched so the paper is black, cropped to the ink, resized so the ink's longer side
   is 20 of 28 (aspect kept), and placed so its centre of mass is at the centre. A picture with no
   ink (blank or uniform) is refused: "no ink found".
3. With ``framing="none"`` (``--framing none``), for pictures already framed like MNIST: only
   made light on dark and, when not already the model's size, resized as a whole so its longer
   side fits and padded with the background (:func:`stablecnn.data.framing.fit_unframed`).

``.npy`` arrays (read with ``allow_pickle=False``, so never unpickled) hold images already in
MNIST's convention and framing, which are not inverted, reframed or resized whatever the
framing: shapes ``(28, 28)``, ``(1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` (one
prediction per image). Their values:

- uint8: used as they are;
- other integers: must lie in [0, 255];
- floats: must be finite; the range is decided per file: largest value <= 1 means [0, 1] (scaled
  by 255), else it must lie in [0, 255]. Rounded to the nearest integer. Values below 0 (an array
  already normalised) are refused.

Colour (``channels=3``): an image is decoded as RGB (EXIF rotation applied, transparency composited
on white, grey and 16-bit pictures repeated into the three channels) and resized as a whole to the
model's input size (CIFAR-10's 32 x 32) with Pillow's Lanczos filter, its aspect ratio not kept: the
model sees the whole picture, as it saw whole 32 x 32 pictures in training. Nothing is inverted,
cropped or framed (MNIST's framing is for digits on paper). ``.npy`` arrays hold (3, H, W) or (N, 3,
H, W) channels first, as the dataset holds its images, with the values above.

Decompression bombs: an image declaring more than :data:`MAX_IMAGE_PIXELS` pixels (50 million,
about 7,000 x 7,000, above any phone camera's 48 MP) is refused from its header, before its pixels
are decoded, and so is anything Pillow itself flags (its ``DecompressionBombWarning`` is turned
into an error for the call, without changing Pillow's global settings).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from stablecnn.data.framing import FRAMINGS, NoInkError, to_mnist
from stablecnn.errors import ConfigError, DataError, ImageError

MAX_IMAGE_PIXELS = 50_000_000  # an image's width x height must not exceed this
IMAGE_SIZE = (28, 28)  # (H, W) of MNIST
NPY_MAGIC = b"\x93NUMPY"


def load_images(
    path, size: tuple[int, int] = IMAGE_SIZE, framing: str = "mnist", channels: int = 1
) -> np.ndarray:
    """The images in ``path`` as uint8 ``(N, H, W)`` in MNIST's convention (N = 1 for an image),
    or, with ``channels=3``, as colour ``(N, 3, H, W)``.

    Args:
        path: an image file Pillow reads, or a ``.npy`` array (recognised by its content).
        size: ``(H, W)`` of the result (the model's input size).
        framing: for an image, ``"mnist"`` frames it as MNIST's digits were (ink cropped, resized
            into a box of 20/28 of ``size``, centred by its centre of mass) and ``"none"`` only
            fits the whole picture to ``size`` (see :func:`stablecnn.data.framing.to_mnist`).
            A ``.npy`` array is never reframed. Colour images are never framed.
        channels: 1 (grey, MNIST's convention) or 3 (RGB, the picture resized as a whole to
            ``size``; see the module doc): the model's input channels.

    Raises:
        ImageError: the file is missing, a directory, unreadable, not an image or array, a
            damaged or truncated image ("a damaged or truncated PNG (...)"), too big,
            holds an array of the wrong shape or range, or (framing ``"mnist"``) a picture with no
            ink ("no ink found"). The message starts with the path.
        ValueError: ``framing`` is not one of :data:`FRAMINGS`, or ``channels`` not 1 or 3.
    """
    if framing not in FRAMINGS:
        raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image (pass the files inside it)")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if head == NPY_MAGIC:
        return _load_npy(path, size, channels)
    if channels == 3:
        return _decode(path, size, "RGB", lambda img: colour_pixels(img, size))[None]
    return _load_picture(path, size, framing)[None]  # (1, H, W)


def load_image(path, size: tuple[int, int] = IMAGE_SIZE, framing: str = "mnist") -> np.ndarray:
    """The one image in ``path`` as uint8 ``(H, W)`` (28 x 28), light digit on dark background.

    See :func:`load_images` (and the module's notes for the rules); a ``.npy`` stack holding more
    than one image is an error here.
    """
    images = load_images(path, size, framing)
    if len(images) != 1:
        raise ImageError(f"{path}: holds {len(images)} images, expected one (use load_images)")
    return images[0]


def picture_from_bytes(
    data: bytes,
    size: tuple[int, int] = IMAGE_SIZE,
    framing: str = "mnist",
    channels: int = 1,
    name: str = "the picture",
    expected: str = "an image",
) -> np.ndarray:
    """A picture held in memory (an upload to the web page; never written to disk) as
    :func:`load_images` reads a picture file: uint8 ``(1, H, W)``, or ``(1, 3, H, W)`` with
    ``channels=3``, under the same rules (decoding guards, framing, colour).

    Raises:
        ImageError: not a picture Pillow reads ("<name>: not <expected> (Pillow cannot identify
            it)"), a damaged one ("<name>: a damaged or truncated PNG (...)"), or too big; the
            message starts with ``name``.
        NoInkError: (framing ``"mnist"``) the picture is blank or uniform: "<name>: no ink
            found: ...".
        ValueError: ``framing`` is not one of :data:`FRAMINGS`, or ``channels`` not 1 or 3.
    """
    import io

    if framing not in FRAMINGS:
        raise ConfigError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")

    class Named(io.BytesIO):  # the messages name the picture as ``name``, not a BytesIO
        def __str__(self) -> str:
            return name

    source = Named(data)
    if channels == 3:
        return _decode(source, size, "RGB", lambda img: colour_pixels(img, size), expected)[None]
    grey = _decode(source, size, "L", grey_pixels, expected)  # (H, W) floats in [0, 1]
    try:
        return to_mnist(grey, size, framing)[None]  # (1, H, W)
    except NoInkError as exc:  # kept apart from ImageError: nothing drawn is not a broken file
        raise NoInkError(f"{name}: {exc}") from None


def _load_npy(path: Path, size: tuple[int, int], channels: int = 1) -> np.ndarray:
    try:
        # mmap: the header's shape is checked against the file's length before anything is read
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ImageError(f"{path}: not a plain numeric .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ImageError(f"{path}: not a readable .npy array ({exc})") from None
    h, w = size
    given = np.shape(array)  # the file's own shape, for the messages (array is reshaped below)
    if channels == 3:  # (3, H, W) or (N, 3, H, W), channels first as the dataset holds them
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[1:] != (3, h, w):
            raise ImageError(
                f"{path}: array of shape {given}; the model takes colour images: "
                f"expected (3, {h}, {w}) or (N, 3, {h}, {w}) (channels first)"
            )
    else:
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        elif array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[1:] != (h, w):
            raise ImageError(
                f"{path}: array of shape {given}; expected ({h}, {w}), "
                f"(1, {h}, {w}), (N, {h}, {w}) or (N, 1, {h}, {w})"
            )
    if len(array) == 0:
        raise ImageError(f"{path}: holds no images (shape {given})")
    if array.dtype.kind not in "uif":
        raise ImageError(
            f"{path}: array of dtype {array.dtype}; expected uint8, integers or floats"
        )
    try:
        if array.dtype == np.uint8:
            return np.array(array)  # read from the file into memory
        values = np.array(array, dtype=np.float64)
    except MemoryError:
        raise ImageError(f"{path}: array too large to read ({given})") from None
    lo, hi = float(values.min()), float(values.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageError(f"{path}: array holds NaN or infinite values")
    if array.dtype.kind == "f" and lo >= 0 and hi <= 1:
        values *= 255.0
    elif lo < 0 or hi > 255:
        raise ImageError(
            f"{path}: values lie in [{lo:.4g}, {hi:.4g}]; expected raw pixels in "
            f"[0, 1] or [0, 255] (not an array already normalised)"
        )
    return np.rint(values).astype(np.uint8)


def _load_picture(path: Path, size: tuple[int, int], framing: str) -> np.ndarray:
    """Decode with Pillow into grey floats in [0, 1], then :func:`to_mnist` in ``framing``."""
    gray = _decode(path, size, "L", grey_pixels)  # (H, W) floats in [0, 1]
    try:
        return to_mnist(gray, size, framing)
    except NoInkError as exc:
        raise ImageError(f"{path}: {exc}") from None


def _decode(
    path: Path, size: tuple[int, int], draft: str, convert, expected: str = "an image or .npy array"
):
    """Open ``path`` with Pillow (size limits, JPEG drafts in mode ``draft``, EXIF rotation) and
    return ``convert(image)``; every decoding fault becomes an :class:`ImageError` (one Pillow
    cannot identify says ``path`` is not ``expected``; one it identifies but cannot decode is
    named by its format, see :func:`_undecodable`)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    fmt = None  # the format Pillow identified, once it has
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                fmt = img.format
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ImageError(_too_big(path, width, height))
                if img.format == "JPEG" and img.mode in ("RGB", "L", "YCbCr"):
                    img.draft(draft, (4 * size[1], 4 * size[0]))  # decode at a reduced scale
                img = ImageOps.exif_transpose(img)
                return convert(img)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not {expected} (Pillow cannot identify it)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{path}: refused as a possible decompression bomb ({exc})") from None
        except MemoryError:
            raise ImageError(f"{path}: image too large to decode") from None
        except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many kinds on bad input
            raise ImageError(_undecodable(path, fmt, exc)) from None


def _undecodable(path, fmt: str | None, exc: Exception) -> str:
    """What a picture Pillow could not decode is, in words rather than Python's exception class:
    ``<path>: a damaged or truncated PNG (<Pillow's detail>)`` for the faults of bytes cut short
    or corrupt (``OSError``, ``SyntaxError``, ``EOFError``, ``struct.error``, ``zlib.error``),
    ``<path>: cannot decode this PNG (<detail>)`` for anything else."""
    what = fmt or "image"
    detail = f" ({exc})" if str(exc) else ""
    if isinstance(exc, (OSError, SyntaxError, EOFError, struct.error, zlib.error)):
        return f"{path}: a damaged or truncated {what}{detail}"
    return f"{path}: cannot decode this {what}{detail}"


def _too_big(path, width, height) -> str:
    return (
        f"{path}: refused, {width} x {height} = {width * height:,} pixels is more than the "
        f"limit of {MAX_IMAGE_PIXELS:,} (a possible decompression bomb)"
    )


def unit_range(values: np.ndarray, full_scale: float | None = None) -> np.ndarray:
    """High-depth grey values into [0, 1] floats.

    With ``full_scale`` (65535 for 16-bit images) divide by it. Otherwise by the range the values
    lie in: [0, 1] as they are, [0, 255] by 255, [0, 65535] by 65535, anything else stretched from
    its minimum to its maximum.
    """
    values = values.astype(np.float32)
    if full_scale is not None:
        return values / np.float32(full_scale)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError("the image holds NaN or infinite values")
    if lo >= 0:
        for scale in (1.0, 255.0, 65535.0):
            if hi <= scale:
                return values / np.float32(scale)
    return (values - np.float32(lo)) / np.float32(hi - lo)


def grey_pixels(img) -> np.ndarray:
    """A Pillow image as grey float32 ``(H, W)`` in [0, 1] (black 0, white 1).

    Transparency is composited on white, or on black when the visible pixels are mostly light.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        return unit_range(np.asarray(img), 65535)
    if mode in ("I", "F"):
        return unit_range(np.asarray(img))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255  # (H, W, 4)
        grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma
        alpha = rgba[..., 3]
        drawn = alpha.sum()
        light = drawn > 0 and float((grey * alpha).sum() / drawn) > 0.5
        background = np.float32(0.0 if light and alpha.min() < 1 else 1.0)
        return grey * alpha + background * (1 - alpha)
    if mode != "L":
        try:
            img = img.convert("L")
        except ValueError:  # modes without a direct route to grey (LAB, ...)
            img = img.convert("RGB").convert("L")
    return np.asarray(img, dtype=np.float32) / 255


def colour_pixels(img, size: tuple[int, int]) -> np.ndarray:
    """A Pillow image as uint8 RGB ``(3, H, W)`` of ``size``, resized as a whole (Lanczos).

    Transparency is composited on white; grey, palette and 16-bit images are repeated into the
    three channels (16-bit and float greys scaled by :func:`unit_range`).
    """
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = grey_pixels(img)  # (H, W) in [0, 1]
        img = Image.fromarray(np.rint(grey * 255).astype(np.uint8)).convert("RGB")
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")
    h, w = size
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()  # (H, W, 3) -> (3, H, W)
