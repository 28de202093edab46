"""Label images to colours, overlays and legends (numpy + PIL only, fast enough for a live topic).

PIL does the per-pixel work (palette look-up and blending run in C); numpy only computes indices.
"""
from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Well-separated colours for the first classes: after Sasha Trubetskoy's 20 distinct colours, without
# black (it marks unlabelled pixels) and white, and with lavender and apricot, too close to pink and
# beige, replaced by a light blue and a dark green.
BASE_COLOURS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (90, 140, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (0, 90, 30), (0, 0, 128), (128, 128, 128),
)
GOLDEN_RATIO_CONJUGATE = 0.618033988749895
UNLABELLED = (0, 0, 0)
RANDOM_STAMP = "RANDOM WEIGHTS - NOT A RESULT"  # stamped on every picture made with random weights
# The same warning in words, for every log line and console banner about random weights.
RANDOM_NOTICE = "RANDOM WEIGHTS: plumbing and timing only, outputs are NOT segmentation results"
LEGEND_BACKDROP = 0.35  # the image under the legend box keeps this fraction of its brightness
MORE_ROWS_TEXT = "+{} more"


def class_palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours, the same for the same K, so a class keeps its colour between frames."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    colours = list(BASE_COLOURS[:num_classes])
    for index in range(len(BASE_COLOURS), num_classes):
        # Golden-ratio hue steps never repeat; cycling saturation/value separates close hues.
        hue = (index * GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = (0.95, 0.6)[index % 2]
        value = (0.95, 0.75, 0.55)[index % 3]
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)))
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 colours; ids outside the palette (e.g. 255, -1) become black."""
    return np.asarray(_colour_image(labels, palette))


def blend(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(1 - alpha) * image + alpha * colours, both HxWx3 uint8."""
    return np.asarray(_blend_images(_rgb_image(image), _rgb_image(colours), alpha))


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    palette: Optional[np.ndarray] = None,
    alpha: float = 0.5,
    legend: bool = True,
) -> np.ndarray:
    """The image with class colours blended in and, optionally, a legend of ``names``."""
    palette = class_palette(len(names)) if palette is None else palette
    if len(palette) < len(names):
        raise ValueError(f"palette has {len(palette)} colours for {len(names)} classes")
    blended = np.asarray(_blend_images(_rgb_image(image), _colour_image(labels, palette), alpha))
    if not legend:
        return blended
    counts = np.bincount(_palette_index(labels, len(names)).ravel(), minlength=len(names) + 1)
    return draw_legend(blended, names, palette, present=np.flatnonzero(counts[: len(names)]))


def draw_legend(
    image: np.ndarray,
    names: Sequence[str],
    palette: np.ndarray,
    present: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """A copy of ``image`` with a swatch + name per class in the top-left corner.

    When all classes do not fit, only the ``present`` ones are listed (if given); rows that still do
    not fit are summarised as "+N more". Text scales with the image so it stays legible.
    """
    result = np.array(image, dtype=np.uint8, copy=True)
    height, width = result.shape[:2]
    font_size = _font_size(height, width)
    font = _font(font_size)
    pad, row_height = max(2, font_size // 3), font_size + max(2, font_size // 3)
    capacity = (height - 2 * pad) // row_height
    classes = list(range(len(names)))
    if len(classes) > capacity and present is not None:
        classes = [int(c) for c in present]
    if capacity < 1 or not classes:
        return result
    hidden = 0
    if len(classes) > capacity:
        hidden = len(classes) - (capacity - 1)
        classes = classes[: capacity - 1]
    texts = [_fit_text(names[c], font, width - 3 * pad - font_size) for c in classes]
    if hidden:
        texts.append(MORE_ROWS_TEXT.format(hidden))
    box_width = min(width, 3 * pad + font_size + max(int(np.ceil(font.getlength(t))) for t in texts))
    box_height = min(height, 2 * pad + len(texts) * row_height - (row_height - font_size))
    box = (result[:box_height, :box_width] * LEGEND_BACKDROP).astype(np.uint8)
    canvas = Image.fromarray(box)
    draw = ImageDraw.Draw(canvas)
    for row, text in enumerate(texts):
        top = pad + row * row_height
        if row < len(classes):
            colour = tuple(int(v) for v in palette[classes[row]])
            draw.rectangle((pad, top, pad + font_size - 1, top + font_size - 1), fill=colour, outline=(255, 255, 255))
        draw.text((2 * pad + font_size, top + font_size / 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    result[:box_height, :box_width] = np.asarray(canvas)
    return result


def draw_stamp(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` with ``text`` in white on a red band across the bottom, impossible to miss."""
    result = np.array(image, dtype=np.uint8, copy=True)
    height, width = result.shape[:2]
    size = max(8, min(height // 8, _font_size(height, width) * 2))
    font = _font(size)
    while size > 8 and font.getlength(text) > 0.95 * width:
        size -= 1
        font = _font(size)
    band = min(height, size + max(2, size // 2))
    canvas = Image.fromarray(result[height - band:])
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, band), fill=(200, 0, 0))
    draw.text((width / 2, band / 2), text, fill=(255, 255, 255), font=font, anchor="mm")
    result[height - band:] = np.asarray(canvas)
    return result


def _palette_index(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids as palette indices; anything outside [0, num_classes) maps to num_classes."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an HxW integer array, got {labels.dtype} {labels.shape}")
    # As unsigned, negative ids become huge, so one minimum() handles both ends.
    unsigned = labels.view(labels.dtype.str.replace("i", "u")) if labels.dtype.kind == "i" else labels
    return np.minimum(unsigned, min(num_classes, np.iinfo(unsigned.dtype).max))


def _colour_image(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """Colours as an RGB PIL image (PIL's palette look-up when the palette leaves room for black)."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    index = _palette_index(labels, len(palette))
    table = np.vstack([palette, np.array([UNLABELLED], dtype=np.uint8)])
    if len(table) > 256:  # more classes than a PIL palette holds: a numpy look-up, a little slower
        return Image.fromarray(np.take(table, index, axis=0))
    indexed = Image.fromarray(index.astype(np.uint8))
    indexed.putpalette(table.tobytes())  # turns the "L" image into a "P" one
    return indexed.convert("RGB")


def _rgb_image(array: np.ndarray) -> Image.Image:
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {array.dtype} {array.shape}")
    return Image.fromarray(array)


def _blend_images(image: Image.Image, colours: Image.Image, alpha: float) -> Image.Image:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image.size != colours.size:
        raise ValueError(f"image is {image.size[0]}x{image.size[1]}, colours {colours.size[0]}x{colours.size[1]}")
    return Image.blend(image, colours, alpha)


def _font_size(height: int, width: int) -> int:
    """About 1/30 of the short side: legible on 224 px thumbnails and on 1080p frames alike."""
    return int(np.clip(round(min(height, width) / 30), 8, 36))


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _fit_text(text: str, font, max_width: float) -> str:
    """``text`` shortened with "..." so that it fits ``max_width`` pixels."""
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text + "...") > max_width:
        text = text[:-1]
    return text + "..."
