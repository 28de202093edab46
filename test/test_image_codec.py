"""Tests of the sensor_msgs <-> numpy conversions against known arrays and the real Spot bags."""
from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

import frame_sources
from clip_dinoiser_ros.pipeline.image_codec import (
    ImageDecodeError,
    array_to_image,
    compressed_to_rgb,
    image_to_rgb,
)

MAX_PIXELS = 4_000_000
H, W = 6, 8


@pytest.fixture
def rgb() -> np.ndarray:
    """A random RGB image whose first pixel is pure red, so swapped channels cannot pass."""
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 0)
    return image


@pytest.fixture
def header() -> Header:
    return Header(stamp=Time(sec=1_700_000_000, nanosec=123_456_789), frame_id="camera_optical")


def raw_image(
    encoding: str,
    pixels: np.ndarray,
    step: int | None = None,
    is_bigendian: int = 0,
    pad: int = 0xEE,
) -> Image:
    """An Image whose rows are pixels' bytes, padded with `pad` bytes up to `step`."""
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    step = rows.shape[1] if step is None else step
    padded = np.full((height, step), pad, dtype=np.uint8)
    padded[:, : rows.shape[1]] = rows
    return Image(
        height=height, width=width, encoding=encoding, step=step, is_bigendian=is_bigendian,
        data=padded.tobytes(),
    )


def gray3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def assert_rgb(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.dtype == np.uint8
    assert result.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(result, expected)


# --- raw Image -> RGB ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "8UC3", "rgba8", "bgra8"])
@pytest.mark.parametrize("padding", [0, 5])
def test_colour_encodings_decode_to_rgb(rgb: np.ndarray, encoding: str, padding: int) -> None:
    alpha = np.full((H, W, 1), 77, dtype=np.uint8)
    layouts = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "8UC3": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }
    pixels = layouts[encoding]
    msg = raw_image(encoding, pixels, step=W * pixels.shape[2] + padding)
    result = image_to_rgb(msg, MAX_PIXELS)
    assert tuple(result[0, 0]) == (255, 0, 0)
    assert_rgb(result, rgb)


def test_rgb8_without_padding_is_a_zero_copy_view(rgb: np.ndarray) -> None:
    msg = raw_image("rgb8", rgb)
    result = image_to_rgb(msg, MAX_PIXELS)
    assert np.shares_memory(result, np.frombuffer(msg.data, dtype=np.uint8))


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
@pytest.mark.parametrize("padding", [0, 3])
def test_mono8_expands_to_three_equal_channels(encoding: str, padding: int) -> None:
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W) * 3
    result = image_to_rgb(raw_image(encoding, gray, step=W + padding), MAX_PIXELS)
    assert_rgb(result, gray3(gray))


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("padding", [0, 3])
def test_mono16_keeps_the_high_byte(big_endian: bool, padding: int) -> None:
    high = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 5
    mono16 = (high << 8) | 0xAB
    pixels = mono16.astype(">u2" if big_endian else "<u2")
    msg = raw_image("mono16", pixels, step=2 * W + padding, is_bigendian=int(big_endian))
    assert_rgb(image_to_rgb(msg, MAX_PIXELS), gray3(high.astype(np.uint8)))


def test_mono16_byte_order_matters() -> None:
    pixels = np.full((H, W), 0x1234, dtype="<u2")
    as_little = image_to_rgb(raw_image("mono16", pixels, is_bigendian=0), MAX_PIXELS)
    as_big = image_to_rgb(raw_image("mono16", pixels, is_bigendian=1), MAX_PIXELS)
    assert as_little[0, 0, 0] == 0x12
    assert as_big[0, 0, 0] == 0x34


# BT.601 studio-range YUV of pure red and of mid grey.
RED_YUV, GREY_YUV = (81, 90, 240), (128, 128, 128)


def pack_yuv422(encoding: str, yuv: tuple[int, int, int], padding: int = 0) -> Image:
    y, u, v = yuv
    pair = [u, y, v, y] if encoding in ("yuv422", "uyvy") else [y, u, y, v]
    pixels = np.tile(np.array(pair, dtype=np.uint8), (H, W // 2)).reshape(H, W, 2)
    return raw_image(encoding, pixels, step=2 * W + padding)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
@pytest.mark.parametrize("padding", [0, 4])
def test_yuv422_decodes_to_rgb(encoding: str, padding: int) -> None:
    red = image_to_rgb(pack_yuv422(encoding, RED_YUV, padding), MAX_PIXELS)
    assert red.shape == (H, W, 3) and red.flags["C_CONTIGUOUS"]
    assert red[..., 0].min() > 230 and red[..., 1:].max() < 25
    grey = image_to_rgb(pack_yuv422(encoding, GREY_YUV, padding), MAX_PIXELS)
    assert np.abs(grey.astype(int) - 130).max() <= 3


def test_uyvy_and_yuyv_byte_orders_differ() -> None:
    msg = pack_yuv422("uyvy", RED_YUV)
    msg.encoding = "yuyv"
    assert image_to_rgb(msg, MAX_PIXELS)[0, 0, 0] < 200


# --- raw Image errors ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "bayer_rggb8", "RGB8", ""])
def test_unsupported_encodings_are_rejected(encoding: str) -> None:
    msg = Image(height=H, width=W, encoding=encoding, step=W * 4, data=bytes(H * W * 4))
    with pytest.raises(ImageDecodeError, match=f"unsupported encoding '{encoding}'.*rgb8, bgr8"):
        image_to_rgb(msg, MAX_PIXELS)


def test_step_smaller_than_a_row_is_rejected() -> None:
    msg = Image(height=480, width=640, encoding="rgb8", step=1900, data=bytes(480 * 1920))
    with pytest.raises(ImageDecodeError, match=r"step 1900 is smaller than width\*3=1920 for rgb8"):
        image_to_rgb(msg, MAX_PIXELS)


def test_mono16_step_counts_bytes() -> None:
    msg = Image(height=2, width=10, encoding="mono16", step=10, data=bytes(40))
    with pytest.raises(ImageDecodeError, match=r"step 10 is smaller than width\*2=20 for mono16"):
        image_to_rgb(msg, MAX_PIXELS)


def test_short_data_is_rejected() -> None:
    msg = Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(1000))
    reason = r"data holds 1000 bytes but height\*step needs 921600"
    with pytest.raises(ImageDecodeError, match=reason):
        image_to_rgb(msg, MAX_PIXELS)


def test_longer_data_is_accepted(rgb: np.ndarray) -> None:
    msg = raw_image("rgb8", rgb)
    msg.data.extend(bytes(7))
    assert_rgb(image_to_rgb(msg, MAX_PIXELS), rgb)


@pytest.mark.parametrize(("width", "height"), [(0, 480), (640, 0), (0, 0)])
def test_empty_images_are_rejected(width: int, height: int) -> None:
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    with pytest.raises(ImageDecodeError, match=f"empty: width {width}, height {height}"):
        image_to_rgb(msg, MAX_PIXELS)


def test_odd_width_yuv422_is_rejected() -> None:
    msg = Image(height=2, width=3, encoding="yuyv", step=6, data=bytes(12))
    with pytest.raises(ImageDecodeError, match="width 3 is odd"):
        image_to_rgb(msg, MAX_PIXELS)


def test_huge_image_is_rejected_before_reading_data() -> None:
    # Claims 8000x8000 but carries no data: the size check must come first, without allocating.
    msg = Image(height=8000, width=8000, encoding="rgb8", step=24000)
    start = time.perf_counter()
    reason = "8000x8000 has 64000000 pixels, more than max_pixels"
    with pytest.raises(ImageDecodeError, match=reason):
        image_to_rgb(msg, MAX_PIXELS)
    assert time.perf_counter() - start < 0.01


def test_max_pixels_is_inclusive(rgb: np.ndarray) -> None:
    assert_rgb(image_to_rgb(raw_image("rgb8", rgb), H * W), rgb)
    with pytest.raises(ImageDecodeError, match="max_pixels=47"):
        image_to_rgb(raw_image("rgb8", rgb), H * W - 1)


# --- arrays -> Image -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "pixels", "step"),
    [
        ("rgb8", np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3), W * 3),
        ("mono8", np.arange(H * W, dtype=np.uint8).reshape(H, W), W),
        ("mono16", np.arange(H * W, dtype=np.uint16).reshape(H, W) * 1000, W * 2),
        ("32FC1", np.linspace(-1, 1, H * W, dtype=np.float32).reshape(H, W), W * 4),
    ],
)
def test_array_to_image_layout(
    encoding: str, pixels: np.ndarray, step: int, header: Header
) -> None:
    msg = array_to_image(pixels, encoding, header)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (H, W, step, encoding)
    assert msg.is_bigendian == 0
    assert msg.header is header
    assert msg.header.stamp.nanosec == 123_456_789 and msg.header.frame_id == "camera_optical"
    assert len(msg.data) == H * step
    restored = np.frombuffer(msg.data, dtype=pixels.dtype).reshape(pixels.shape)
    np.testing.assert_array_equal(restored, pixels)


def test_array_to_image_copies_the_array() -> None:
    pixels = np.zeros((H, W), dtype=np.uint8)
    msg = array_to_image(pixels, "mono8", Header())
    pixels[:] = 9
    assert not any(msg.data)


def test_array_to_image_accepts_strided_and_byte_swapped_arrays(rgb: np.ndarray) -> None:
    msg = array_to_image(rgb[:, ::-1], "rgb8", Header())
    assert_rgb(image_to_rgb(msg, MAX_PIXELS), rgb[:, ::-1])
    swapped = np.full((H, W), 0x1234, dtype=">u2")
    msg = array_to_image(swapped, "mono16", Header())
    np.testing.assert_array_equal(np.frombuffer(msg.data, dtype=np.uint16), 0x1234)


def test_rgb8_and_mono_round_trip(rgb: np.ndarray, header: Header) -> None:
    assert_rgb(image_to_rgb(array_to_image(rgb, "rgb8", header), MAX_PIXELS), rgb)
    gray = rgb[:, :, 1].copy()
    assert_rgb(image_to_rgb(array_to_image(gray, "mono8", header), MAX_PIXELS), gray3(gray))
    deep = gray.astype(np.uint16) << 8 | 0x7F
    assert_rgb(image_to_rgb(array_to_image(deep, "mono16", header), MAX_PIXELS), gray3(gray))


@pytest.mark.parametrize(
    ("pixels", "encoding", "reason"),
    [
        (np.zeros((H, W), np.float64), "32FC1", "32FC1 needs dtype float32, got float64"),
        (np.zeros((H, W, 3), np.uint16), "rgb8", "rgb8 needs dtype uint8, got uint16"),
        (np.zeros((H, W), np.uint8), "rgb8", r"rgb8 needs a HxWx3 array, got shape \(6, 8\)"),
        (np.zeros((H, W, 4), np.uint8), "rgb8", r"HxWx3 array, got shape \(6, 8, 4\)"),
        (np.zeros((H, W, 1), np.uint8), "mono8", r"mono8 needs a HxW array"),
        (np.zeros((H, W), np.uint8), "bgr8", "cannot encode 'bgr8'"),
    ],
)
def test_array_to_image_rejects_mismatches(pixels: np.ndarray, encoding: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        array_to_image(pixels, encoding, Header())


# --- CompressedImage -> RGB ------------------------------------------------------------------


def compressed(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    return CompressedImage(format=fmt, data=data)


def encode(rgb: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buffer.tobytes()


@pytest.fixture
def photo() -> np.ndarray:
    """A smooth 96x128 gradient with a pure red square: JPEG keeps it close, swaps do not."""
    y, x = np.mgrid[0:96, 0:128]
    image = np.stack([x * 2, y * 2, np.full_like(x, 60)], axis=2).astype(np.uint8)
    image[10:40, 10:40] = (255, 0, 0)
    return image


def test_png_decodes_exactly(photo: np.ndarray) -> None:
    assert_rgb(compressed_to_rgb(compressed(encode(photo, ".png"), "png"), MAX_PIXELS), photo)


def test_jpeg_decodes_close_in_rgb_order(photo: np.ndarray) -> None:
    result = compressed_to_rgb(compressed(encode(photo, ".jpg")), MAX_PIXELS)
    assert result.shape == photo.shape and result.flags["C_CONTIGUOUS"]
    assert np.abs(result.astype(int) - photo).mean() < 2
    assert result[25, 25, 0] > 240 and result[25, 25, 1:].max() < 15


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_grayscale_expands_to_three_channels(ext: str) -> None:
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))
    result = compressed_to_rgb(compressed(cv2.imencode(ext, gray)[1].tobytes()), MAX_PIXELS)
    assert result.shape == (32, 64, 3)
    assert (result == result[..., :1]).all()
    assert np.abs(result[..., 0].astype(int) - gray).max() <= 3


def test_16bit_png_keeps_the_high_byte() -> None:
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) << 8) | 0xFF
    png = cv2.imencode(".png", deep)[1].tobytes()
    result = compressed_to_rgb(compressed(png, "png"), MAX_PIXELS)
    assert_rgb(result, gray3(np.arange(64, dtype=np.uint8).reshape(8, 8)))


def test_empty_compressed_image_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="holds no bytes"):
        compressed_to_rgb(compressed(b""), MAX_PIXELS)


def test_garbage_bytes_are_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="no readable image header"):
        compressed_to_rgb(compressed(b"definitely not a jpeg" * 10), MAX_PIXELS)


def test_corrupt_jpeg_is_rejected(photo: np.ndarray) -> None:
    jpeg = bytearray(encode(photo, ".jpg"))
    start_of_scan = jpeg.index(b"\xff\xda")
    jpeg[start_of_scan + 20 :] = bytes(range(256)) * ((len(jpeg) - start_of_scan) // 256 + 1)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        compressed_to_rgb(compressed(bytes(jpeg)), MAX_PIXELS)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_files_are_rejected(photo: np.ndarray, ext: str, keep: float) -> None:
    data = encode(photo, ext)
    with pytest.raises(ImageDecodeError, match="truncated"):
        compressed_to_rgb(compressed(data[: int(len(data) * keep)], ext[1:]), MAX_PIXELS)


def test_truncated_header_is_rejected(photo: np.ndarray) -> None:
    with pytest.raises(ImageDecodeError, match="no readable image header"):
        compressed_to_rgb(compressed(encode(photo, ".png")[:20], "png"), MAX_PIXELS)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's first bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_huge_compressed_image_is_rejected_from_its_header() -> None:
    start = time.perf_counter()
    reason = "8000x8000 has 64000000 pixels, more than max_pixels"
    with pytest.raises(ImageDecodeError, match=reason):
        compressed_to_rgb(compressed(png_declaring(8000, 8000), "png"), MAX_PIXELS)
    assert time.perf_counter() - start < 0.05


def test_header_past_pillows_bomb_limit_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="header declares a huge image"):
        compressed_to_rgb(compressed(png_declaring(30000, 30000), "png"), MAX_PIXELS)


def test_oversized_payload_is_rejected_before_decoding() -> None:
    with pytest.raises(ImageDecodeError, match="holds 801 bytes, more than any JPEG/PNG"):
        compressed_to_rgb(compressed(bytes(801)), 100)


@pytest.mark.parametrize(
    "fmt", ["16UC1; png compressed ", "16UC1; compressedDepth png", "32FC1; compressedDepth"]
)
def test_depth_formats_are_rejected(fmt: str) -> None:
    deep = cv2.imencode(".png", np.zeros((4, 4), np.uint16))[1].tobytes()
    with pytest.raises(ImageDecodeError, match="unsupported compressed format"):
        compressed_to_rgb(compressed(deep, fmt), MAX_PIXELS)


@pytest.mark.parametrize(
    "fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", ""]
)
def test_colour_formats_are_accepted(photo: np.ndarray, fmt: str) -> None:
    result = compressed_to_rgb(compressed(encode(photo, ".jpg"), fmt), MAX_PIXELS)
    assert result.shape == photo.shape


# --- real frames from the Spot bags ----------------------------------------------------------

HAND_COLOR = "/spot/camera/hand_color/image"
FRONT_LEFT = "/spot/camera/frontleft/image"
HAND_MONO = "/spot/camera/hand_mono/image"
DEPTH = "/spot/depth/frontleft/image"


@pytest.fixture(scope="module")
def spot_raw() -> dict:
    return frame_sources.spot_messages(compressed=False)


@pytest.fixture(scope="module")
def spot_compressed() -> dict:
    return frame_sources.spot_messages(compressed=True)


def test_spot_raw_frames_decode(spot_raw: dict) -> None:
    colour = image_to_rgb(spot_raw[HAND_COLOR], MAX_PIXELS)
    assert colour.shape == (480, 640, 3)
    raw_bytes = np.frombuffer(spot_raw[HAND_COLOR].data, np.uint8)
    np.testing.assert_array_equal(colour.reshape(-1), raw_bytes)
    assert image_to_rgb(spot_raw[FRONT_LEFT], MAX_PIXELS).shape == (480, 640, 3)
    assert image_to_rgb(spot_raw[HAND_MONO], MAX_PIXELS).shape == (171, 224, 3)


def test_spot_depth_is_unsupported(spot_raw: dict, spot_compressed: dict) -> None:
    with pytest.raises(ImageDecodeError, match="unsupported encoding '16UC1'"):
        image_to_rgb(spot_raw[DEPTH], MAX_PIXELS)
    with pytest.raises(ImageDecodeError, match="unsupported compressed format '16UC1; png"):
        compressed_to_rgb(spot_compressed[DEPTH + "/compressed"], MAX_PIXELS)


def test_spot_compressed_colour_matches_raw(spot_raw: dict, spot_compressed: dict) -> None:
    raw = image_to_rgb(spot_raw[HAND_COLOR], MAX_PIXELS).astype(int)
    decoded = compressed_to_rgb(spot_compressed[HAND_COLOR + "/compressed"], MAX_PIXELS).astype(int)
    assert decoded.shape == raw.shape
    # The bag's JPEGs are quality 80: re-encoding the raw frame at 80 gives the same size and error.
    error = np.abs(decoded - raw).mean()
    assert error < 6
    assert np.abs(decoded[..., ::-1] - raw).mean() > error + 2


@pytest.mark.parametrize("topic", [FRONT_LEFT, HAND_MONO])
def test_spot_compressed_mono_matches_raw(
    spot_raw: dict, spot_compressed: dict, topic: str
) -> None:
    raw = image_to_rgb(spot_raw[topic], MAX_PIXELS).astype(int)
    decoded = compressed_to_rgb(spot_compressed[topic + "/compressed"], MAX_PIXELS).astype(int)
    assert decoded.shape == raw.shape
    assert np.abs(decoded - raw).mean() < 5


def test_spot_messages_keep_headers(spot_raw: dict, spot_compressed: dict) -> None:
    colour = spot_raw[HAND_COLOR]
    assert colour.header.frame_id == "gripper_color_camera_z_forward"
    assert (colour.header.stamp.sec, colour.header.stamp.nanosec) == (1648052479, 616566426)
    assert spot_compressed[HAND_COLOR + "/compressed"].header == colour.header
    assert spot_compressed[HAND_COLOR + "/compressed"].format == "rgb8; jpeg compressed bgr8"


def test_camvid_frames_are_rgb_in_order() -> None:
    frames = frame_sources.camvid_frames(2)
    assert [frame.shape for frame in frames] == [(360, 480, 3)] * 2
    assert all(frame.dtype == np.uint8 for frame in frames)
    assert not np.array_equal(frames[0], frames[1])
