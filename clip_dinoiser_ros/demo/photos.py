"""The demo's pictures: real photos in, PNGs out (input, palette mask of class ids, overlay)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clip_dinoiser_ros.demo.results import Frame
from clip_dinoiser_ros.visualization import RANDOM_STAMP

FRAME_SIZE = (640, 480)  # width, height
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "camera")
Photos = list[tuple[str, np.ndarray]]  # (name, 480x640x3 uint8 RGB)


def load_photos() -> Photos:
    """scikit-image's sample photos, as 640x480 RGB: real scenes with no download."""
    import skimage.data
    from PIL import Image

    photos = []
    for name in PHOTOS:
        if name == "motorcycle_left":
            array = skimage.data.stereo_motorcycle()[0]
        else:
            array = getattr(skimage.data, name)()
        image = Image.fromarray(np.asarray(array)).convert("RGB").resize(FRAME_SIZE, Image.Resampling.BILINEAR)
        photos.append((name, np.asarray(image)))
    return photos


def image_array(message: Any) -> np.ndarray:
    """A sensor_msgs/Image as an array: class ids (mono8/mono16) as they are, colour images as RGB."""
    from clip_dinoiser_ros.pipeline.image_codec import image_to_rgb

    if message.encoding in ("mono8", "mono16"):
        dtype = np.dtype(np.uint8) if message.encoding == "mono8" else np.dtype(">u2" if message.is_bigendian else "<u2")
        rows = np.frombuffer(message.data, dtype=np.uint8).reshape(message.height, message.step)
        pixels = rows[:, : message.width * dtype.itemsize].copy().view(dtype)
        return pixels.reshape(message.height, message.width)
    return image_to_rgb(message, max_pixels=1 << 30)


def save_frame(frame: Frame, out: Path, names: Sequence[str], random_weights: bool) -> list[Path]:
    """<n>_input.png, <n>_mask.png and (when it came) <n>_overlay.png of one answered frame; the paths written."""
    from PIL import Image

    from clip_dinoiser_ros.visualization import class_palette, draw_stamp

    written = []
    path = out / f"{frame.index}_input.png"
    Image.fromarray(frame.rgb).save(path)
    written.append(path)
    labels = image_array(frame.mask)
    path = out / f"{frame.index}_mask.png"
    if labels.dtype == np.uint8:
        palette = np.zeros((256, 3), np.uint8)  # unlabelled (255) stays black
        palette[: len(names)] = class_palette(len(names))[:256]
        mask = Image.fromarray(labels, mode="L")
        mask.putpalette(palette.tobytes())  # viewers show colours, pixel values stay class ids
    else:
        mask = Image.fromarray(labels.astype(np.uint16))  # more than 255 classes: 16-bit class ids
    mask.save(path)
    written.append(path)
    if frame.overlay is not None:
        picture = image_array(frame.overlay)
        if random_weights:
            picture = draw_stamp(picture, RANDOM_STAMP)
        path = out / f"{frame.index}_overlay.png"
        Image.fromarray(picture).save(path)
        written.append(path)
    return written
