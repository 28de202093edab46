"""``from-images``: a camera bag from an image sequence, with optional ground truth in step.

Frames are stamped ``start + i / rate`` in file-name order; header stamp and receive time are equal, as
for a driver with no latency. Ground truth, when given, is a mono8 topic with the same stamps.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header
from tqdm import tqdm

from ..evaluation.labels import LabelImageError, read_label_image
from ..pipeline.image_codec import array_to_image
from ..pipeline.topics import is_compressed
from .errors import BagError
from .writing import BagWriter

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ImageSequence:
    frames: list[Path]
    labels: Optional[list[Path]]


def image_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise BagError(f"{directory}: no such folder")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BagError(f"{directory} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def pair_labels(frames: Sequence[Path], labels_dir: Path) -> list[Path]:
    """Each frame's label file has the frame's stem; every frame needs one."""
    by_stem = {path.stem: path for path in image_files(labels_dir)}
    missing = [frame.name for frame in frames if frame.stem not in by_stem]
    if missing:
        raise BagError(f"label/frame mismatch: {len(missing)} frames have no label of the same name in {labels_dir} "
                       f"(first: {', '.join(missing[:3])})")
    return [by_stem[frame.stem] for frame in frames]


def stamp(start_ns: int, index: int, rate: float) -> tuple[Time, int]:
    nanoseconds = start_ns + round(index * 1e9 / rate)
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000), nanoseconds


def read_rgb(path: Path) -> np.ndarray:
    try:
        with PILImage.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise BagError(f"{path}: not a readable image: {error}") from error


def read_label(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        labels = read_label_image(path, ("L", "P"))  # the label topic is mono8
    except LabelImageError as error:
        raise BagError(str(error)) from error
    if labels.shape != size:
        raise BagError(f"label/frame mismatch: {path.name} is {labels.shape[1]}x{labels.shape[0]}, "
                       f"its frame {size[1]}x{size[0]}")
    return labels


def compressed(rgb: np.ndarray, header: Header) -> CompressedImage:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise BagError("JPEG encoding failed")
    return CompressedImage(header=header, format="rgb8; jpeg compressed bgr8", data=data.tobytes())


def write_sequence(sequence: ImageSequence, out: Path, topic: str, rate: float, start_ns: int, frame_id: str,
                   label_topic: Optional[str], storage: str, overwrite: bool) -> int:
    if rate <= 0:
        raise BagError(f"--rate {rate}: must be more than 0 Hz")
    with BagWriter(out, storage, overwrite) as writer:
        for index, path in enumerate(tqdm(sequence.frames, unit="frame", desc="from-images", dynamic_ncols=True)):
            rgb = read_rgb(path)
            time, nanoseconds = stamp(start_ns, index, rate)
            header = Header(stamp=time, frame_id=frame_id)
            message = compressed(rgb, header) if is_compressed(topic) else array_to_image(rgb, "rgb8", header)
            writer.write(topic, message, nanoseconds)
            if sequence.labels is not None and label_topic:
                labels = read_label(sequence.labels[index], rgb.shape[:2])
                writer.write(label_topic, array_to_image(labels, "mono8", header), nanoseconds)
    return len(sequence.frames)
