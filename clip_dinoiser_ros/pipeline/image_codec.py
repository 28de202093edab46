"""Conversions between sensor_msgs images and numpy arrays.

Kept free of rclpy so it can be tested without a ROS graph. Every reason an incoming image cannot be
used raises ``ImageDecodeError`` with a readable message, so the node can log it and keep running
instead of dying on one bad frame from a misconfigured driver.
"""
from __future__ import annotations

import array
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into RGB; the message says exactly why."""


@dataclass(frozen=True)
class _RawLayout:
    """How one encoding lays out a pixel in ``msg.data`` and how to turn the pixels into RGB."""

    channels: int
    itemsize: int
    to_rgb: Callable[[np.ndarray], np.ndarray]


def _cvt(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: cv2.cvtColor(pixels, code)


def _contiguous(pixels: np.ndarray) -> np.ndarray:
    # Without row padding this is the zero-copy view on msg.data itself.
    return np.ascontiguousarray(pixels)


def _mono16_to_rgb(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((pixels >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)


_RAW_LAYOUTS: dict[str, _RawLayout] = {
    "rgb8": _RawLayout(3, 1, _contiguous),
    "bgr8": _RawLayout(3, 1, _cvt(cv2.COLOR_BGR2RGB)),
    "8UC3": _RawLayout(3, 1, _cvt(cv2.COLOR_BGR2RGB)),
    "rgba8": _RawLayout(4, 1, _cvt(cv2.COLOR_RGBA2RGB)),
    "bgra8": _RawLayout(4, 1, _cvt(cv2.COLOR_BGRA2RGB)),
    "mono8": _RawLayout(1, 1, _cvt(cv2.COLOR_GRAY2RGB)),
    "8UC1": _RawLayout(1, 1, _cvt(cv2.COLOR_GRAY2RGB)),
    "mono16": _RawLayout(1, 2, _mono16_to_rgb),
    "yuv422": _RawLayout(2, 1, _cvt(cv2.COLOR_YUV2RGB_UYVY)),
    "uyvy": _RawLayout(2, 1, _cvt(cv2.COLOR_YUV2RGB_UYVY)),
    "yuv422_yuy2": _RawLayout(2, 1, _cvt(cv2.COLOR_YUV2RGB_YUY2)),
    "yuyv": _RawLayout(2, 1, _cvt(cv2.COLOR_YUV2RGB_YUY2)),
}
_YUV422 = frozenset({"yuv422", "uyvy", "yuv422_yuy2", "yuyv"})

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_RAW_LAYOUTS)

# A JPEG or PNG of an image within max_pixels is far smaller than this many bytes per pixel (even a
# 16-bit RGBA PNG of noise stays under 8), so larger payloads are refused before any decoding.
_MAX_COMPRESSED_BYTES_PER_PIXEL = 8

# Ignore EXIF orientation so compressed frames keep the pixel layout of the raw frames (and of the
# camera calibration) that image_transport compressed them from.
# cv2.IMREAD_COLOR_RGB exists from OpenCV 4.11 on; older OpenCV (4.6 on Ubuntu 24.04 / Jazzy) decodes
# to BGR, which is converted after decoding.
_IMREAD_COLOR_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
_IMDECODE_FLAGS = (
    (cv2.IMREAD_COLOR if _IMREAD_COLOR_RGB is None else _IMREAD_COLOR_RGB) | cv2.IMREAD_IGNORE_ORIENTATION
)


def _unsupported(encoding: str) -> ImageDecodeError:
    return ImageDecodeError(
        f"unsupported encoding {encoding!r}: expected one of {', '.join(SUPPORTED_ENCODINGS)}"
    )


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image is empty: width {width}, height {height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image {width}x{height} has {width * height} pixels, more than max_pixels={max_pixels}"
        )


def _raw_pixels(msg: Image, channels: int, itemsize: int, kind: str, max_pixels: int) -> np.ndarray:
    """(H, W[, C]) view on ``msg.data`` in native values; every check runs before any allocation."""
    width, height, step = msg.width, msg.height, msg.step
    _check_size(width, height, max_pixels)
    pixel_bytes = channels * itemsize
    row_bytes = width * pixel_bytes
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width*{pixel_bytes}={row_bytes} for {msg.encoding}"
        )
    needed = height * step
    if len(msg.data) < needed:
        raise ImageDecodeError(
            f"data holds {len(msg.data)} bytes but height*step needs {needed} for {msg.encoding}"
        )
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=needed).reshape(height, step)
    rows = rows[:, :row_bytes]
    if itemsize > 1 or kind != "u":
        byteorder = ">" if msg.is_bigendian else "<"
        rows = rows.view(np.dtype(f"{byteorder}{kind}{itemsize}"))
    pixels = rows.reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def image_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` into an HxWx3 uint8 RGB, C-contiguous array.

    Every check runs before any allocation, so a huge or malformed frame costs nothing. For rgb8
    without row padding the result is a zero-copy view on ``msg.data`` (read-only if that is bytes).
    """
    layout = _RAW_LAYOUTS.get(msg.encoding)
    if layout is None:
        raise _unsupported(msg.encoding)
    if msg.encoding in _YUV422 and msg.width % 2:
        raise ImageDecodeError(f"width {msg.width} is odd, but {msg.encoding} packs pixels in pairs")
    return layout.to_rgb(_raw_pixels(msg, layout.channels, layout.itemsize, "u", max_pixels))


# depth_image_proc's conventions: 16UC1 in millimetres (REP 118), 32FC1 in metres; 0, NaN and inf mean no depth.
# Cameras and data sets with other 16-bit units (TUM RGB-D: 5000 per metre) give their scale instead.
DEPTH_ENCODINGS = ("16UC1", "32FC1")
REP118_DEPTH_SCALE = 0.001  # metres per 16UC1 unit


def image_to_depth(msg: Image, max_pixels: int, depth_scale: float = REP118_DEPTH_SCALE) -> np.ndarray:
    """Decode a depth image into (H, W) float32 metres with NaN where there is no depth; ``depth_scale`` is
    the metres of one 16UC1 unit (32FC1 is metres already)."""
    if msg.encoding == "16UC1":
        units = _raw_pixels(msg, 1, 2, "u", max_pixels)
        metres = units.astype(np.float32) * np.float32(depth_scale)
        metres[units == 0] = np.nan
        return metres
    if msg.encoding == "32FC1":
        metres = _raw_pixels(msg, 1, 4, "f", max_pixels).astype(np.float32)  # a native copy
        metres[~np.isfinite(metres) | (metres <= 0.0)] = np.nan
        return metres
    raise ImageDecodeError(f"depth encoding {msg.encoding!r} is not supported: expected 16UC1 (millimetres, or "
                           f"units of depth_scale) or 32FC1 (metres), as depth_image_proc publishes")


def _check_compressed_format(fmt: str) -> None:
    # image_transport writes "<source encoding>; <codec> compressed [<target>]"; depth images
    # (plain 16UC1 PNGs or compressedDepth) must not be mistaken for colour frames.
    source = fmt.split(";", 1)[0].strip() if ";" in fmt else ""
    if "compresseddepth" in fmt.lower() or (source and source not in _RAW_LAYOUTS):
        raise ImageDecodeError(
            f"unsupported compressed format {fmt!r}: the source encoding must be one of "
            f"{', '.join(SUPPORTED_ENCODINGS)}"
        )


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """Decode a JPEG/PNG ``sensor_msgs/CompressedImage`` into an HxWx3 uint8 RGB array.

    The width and height are read from the file header (Pillow opens lazily) and checked against
    max_pixels before the full decode, so a small file that would inflate to a huge image is
    refused cheaply. Grayscale expands to three channels, 16-bit PNG is scaled to 8 bit.
    """
    _check_compressed_format(msg.format)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodeError(f"compressed image (format {msg.format!r}) holds no bytes")
    if data.size > _MAX_COMPRESSED_BYTES_PER_PIXEL * max_pixels:
        raise ImageDecodeError(
            f"compressed image holds {data.size} bytes, more than any JPEG/PNG within "
            f"max_pixels={max_pixels} needs"
        )
    try:
        with PILImage.open(io.BytesIO(data)) as header:
            width, height = header.size
            image_format = header.format
    except (OSError, SyntaxError, ValueError):
        # UnidentifiedImageError is an OSError; a header cut short raises a plain OSError.
        raise ImageDecodeError(
            f"{data.size} bytes of format {msg.format!r} have no readable image header: "
            "corrupt, truncated or not a JPEG/PNG"
        ) from None
    except PILImage.DecompressionBombError as error:
        raise ImageDecodeError(f"image header declares a huge image: {error}") from None
    _check_size(width, height, max_pixels)
    # OpenCV < 4.11 returns a partly grey image for a JPEG cut short; OpenCV >= 4.11 returns None.
    # A complete JPEG ends with the EOI marker (FF D9), possibly followed by zero padding.
    if image_format == "JPEG" and not bytes(data[-64:]).rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageDecodeError(
            f"cannot decode {data.size} bytes of format {msg.format!r} ({width}x{height}): "
            "corrupt or truncated (no JPEG end marker)"
        )
    rgb = cv2.imdecode(data, _IMDECODE_FLAGS)
    if rgb is None:
        raise ImageDecodeError(
            f"cannot decode {data.size} bytes of format {msg.format!r} ({width}x{height}): "
            "corrupt or truncated"
        )
    if _IMREAD_COLOR_RGB is None:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    return rgb


@dataclass(frozen=True)
class _ArrayLayout:
    dtype: np.dtype
    channels: int


_ARRAY_LAYOUTS: dict[str, _ArrayLayout] = {
    "rgb8": _ArrayLayout(np.dtype(np.uint8), 3),
    "mono8": _ArrayLayout(np.dtype(np.uint8), 1),
    "mono16": _ArrayLayout(np.dtype(np.uint16), 1),
    "32FC1": _ArrayLayout(np.dtype(np.float32), 1),
}


def array_to_image(pixels: np.ndarray, encoding: str, header: Header) -> Image:
    """Wrap an array as a ``sensor_msgs/Image`` in rgb8, mono8, mono16 or 32FC1, without padding.

    The header object is reused as is. The message is built with ``check_fields=True`` because only
    then does the generated ``data`` setter keep an ``array.array('B')`` as is: the default setter
    copies it again, and with field checks on, anything but ``array.array`` runs a per-byte Python
    validation loop. So callers that assign ``data`` later should assign an ``array.array('B')``.
    """
    layout = _ARRAY_LAYOUTS.get(encoding)
    if layout is None:
        raise ValueError(f"cannot encode {encoding!r}: expected one of {', '.join(_ARRAY_LAYOUTS)}")
    expected_ndim = 2 if layout.channels == 1 else 3
    if pixels.ndim != expected_ndim or (expected_ndim == 3 and pixels.shape[2] != layout.channels):
        raise ValueError(
            f"{encoding} needs a {'HxW' if expected_ndim == 2 else f'HxWx{layout.channels}'} "
            f"array, got shape {pixels.shape}"
        )
    if pixels.dtype.newbyteorder("=") != layout.dtype:
        raise ValueError(f"{encoding} needs dtype {layout.dtype}, got {pixels.dtype}")
    native = np.ascontiguousarray(pixels, dtype=layout.dtype)
    data = array.array("B")
    data.frombytes(native.reshape(-1).view(np.uint8))
    height, width = native.shape[:2]
    msg = Image(
        check_fields=True,
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(sys.byteorder == "big" and layout.dtype.itemsize > 1),
        step=width * layout.channels * layout.dtype.itemsize,
    )
    msg.data = data
    return msg
