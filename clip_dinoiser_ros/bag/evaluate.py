"""``eval``: mIoU of a bag's predictions against ground truth, matched frame by frame by header stamp.

Predictions are the engine's on a camera topic, or masks already in the bag (recorded from the live
node: no model is loaded). A mask's values are mapped to ground-truth ids through the camera's
vision_msgs/LabelInfo in effect for it (the latest stamped at or before the mask: the node stamps a new
class map with the first mask made with it), else taken as the classes file's prompt order. A mask id
that its class map does not define is an error, not a silent "no class"; without a classes file the
classes are those the LabelInfo messages name (enough for the temporal consistency, which needs no ground truth).
Frames without ground truth, ground truth without a frame, and masks without their camera image (no TC for
them) are counted and reported. Memory does not grow with the bag: ground truth is read alongside the
predictions, by stamp, within a window (GroundTruthWindow); camera images wait for their masks by stamp age.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from tqdm import tqdm

from ..evaluation import ConfusionMatrix, scores
from ..evaluation.temporal import OUTSIDE, TemporalConsistency
from ..evaluation.labels import LabelImageError, read_label_image
from ..pipeline.messages import UNLABELLED_MONO8, UNLABELLED_MONO16, stamp_ns
from .errors import BagError
from .reading import check_topics, messages, mono_labels, open_bag, to_rgb

NO_CLASS = -1  # a prediction that is none of the ground-truth classes (the confusion's last column)
LABEL_INFO = "vision_msgs/msg/LabelInfo"
MASK_TYPES = ("sensor_msgs/msg/Image",)
IMAGE_AGE_S = 10.0  # a camera image waits this long (by stamp) for its mask: the node's latency, with margin
GROUND_TRUTH_WINDOW_S = 1.0  # how far (by stamp) ground truth is read ahead of, and kept behind, the predictions


def read_classes(path: Path) -> list[list[str]]:
    """Line i names ground-truth id i; synonyms are separated by commas (``sidewalk, pavement``)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise BagError(f"--classes {path}: {error.strerror or error}") from error
    classes = [[name.strip() for name in line.split(",") if name.strip()] for line in lines]
    empty = [str(index + 1) for index, names in enumerate(classes) if not names]
    if not classes or empty:
        raise BagError(f"--classes {path}: every line names one class (empty line(s): {', '.join(empty) or 'all'})")
    return classes


def prompts_and_lookup(classes: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """All synonyms as one prompt list, and the ground-truth id of each prompt."""
    prompts = [name for names in classes for name in names]
    lookup = np.array([index for index, names in enumerate(classes) for _ in names], dtype=np.int64)
    return prompts, lookup


def to_ground_truth_ids(labels: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Prediction ids as ground-truth ids; values outside the lookup (unlabelled 255) become NO_CLASS."""
    table = np.append(lookup, NO_CLASS)
    return table[np.minimum(labels.astype(np.int64), len(lookup))]


@dataclass
class Prediction:
    stamp: int
    labels: np.ndarray  # ground-truth ids, NO_CLASS for none
    grey: Optional[np.ndarray] = None  # the camera image, for the optical flow of the temporal consistency


@dataclass
class EvalResult:
    matrix: np.ndarray
    per_frame: list[tuple[float, float]] = field(default_factory=list)
    matched: int = 0
    unmatched_predictions: int = 0
    unmatched_labels: int = 0
    frames: int = 0
    temporal: list[tuple[float, float]] = field(default_factory=list)  # (time s, TC of the pair ending there)
    without_image: int = 0  # with ``temporal``: predictions whose camera image was not found (no TC for them)


def engine_predictions(bag: Path, topic: str, segment: Callable[[np.ndarray], np.ndarray],
                       lookup: np.ndarray, with_images: bool = False) -> Iterator[Prediction]:
    with open_bag(bag) as reader:
        check_topics(reader, [topic])
        for item in messages(reader, [topic]):
            rgb = to_rgb(item)
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if with_images else None
            yield Prediction(stamp_ns(item.message), to_ground_truth_ids(segment(rgb), lookup), grey)


def label_info_lookup(names: Sequence[str], classes: Sequence[Sequence[str]]) -> np.ndarray:
    by_name = {name.casefold(): index for index, synonyms in enumerate(classes) for name in synonyms}
    unknown = [name for name in names if name.casefold() not in by_name]
    if unknown:
        raise BagError(f"the bag's label_info names classes missing from --classes: {', '.join(unknown)}")
    return np.array([by_name[name.casefold()] for name in names], dtype=np.int64)


@dataclass(frozen=True)
class ClassMap:
    """A camera's LabelInfo: from its stamp on, mask value i is ground-truth id ``lookup[i]``."""

    stamp: int
    lookup: np.ndarray


def recorded_classes(bag: Path, mask_topic: str) -> list[list[str]]:
    """Every class the mask topic's LabelInfo messages name, in order of first appearance: the classes when no
    classes file is given (a BagError when the bag has no LabelInfo beside the masks)."""
    info_topic = mask_topic.rsplit("/", 1)[0] + "/label_info"
    with open_bag(bag) as reader:
        if {c.topic: c.msgtype for c in reader.connections}.get(info_topic) != LABEL_INFO:
            raise BagError(f"{bag}: no {info_topic} (vision_msgs/LabelInfo) names the classes of {mask_topic}: "
                           "give --classes")
        names = {c.class_name.casefold(): c.class_name for item in messages(reader, [info_topic])
                 for c in item.message.class_map}
    return [[name] for name in names.values()]


def class_maps(reader, info_topic: str, classes: Sequence[Sequence[str]]) -> list[ClassMap]:
    """The LabelInfo messages of ``info_topic`` by stamp (the node stamps each with its first mask's)."""
    maps = [ClassMap(stamp_ns(item.message), label_info_lookup([c.class_name for c in item.message.class_map], classes))
            for item in messages(reader, [info_topic])]
    return sorted(maps, key=lambda entry: entry.stamp)


def in_effect(maps: Sequence[ClassMap], stamps: Sequence[int], stamp: int, topic: str) -> ClassMap:
    """The latest LabelInfo stamped at or before ``stamp`` (``stamps``: those of ``maps``, in order)."""
    index = bisect.bisect_right(stamps, stamp) - 1
    if index < 0:
        raise BagError(f"{topic}: the mask at stamp {stamp} ns precedes every label_info (first at "
                       f"{maps[0].stamp} ns): no class map is in effect for it")
    return maps[index]


def checked_ids(labels: np.ndarray, known: int, stamp: int, topic: str) -> np.ndarray:
    """``labels`` when every value is a class of the map (or vision_msgs' unlabelled), else a BagError."""
    values = np.unique(labels)
    undefined = [int(v) for v in values if v >= known and v not in (UNLABELLED_MONO8, UNLABELLED_MONO16)]
    if undefined:
        raise BagError(f"{topic}: the mask at stamp {stamp} ns has ids {undefined} that the class map in effect "
                       f"(ids 0-{known - 1}) does not define")
    return labels


def mask_predictions(bag: Path, topic: str, classes: Sequence[Sequence[str]],
                     image_topic: Optional[str] = None) -> Iterator[Prediction]:
    """The bag's masks as ground-truth ids; with ``image_topic``, each with its camera image (same stamp)."""
    with open_bag(bag) as reader:
        check_topics(reader, [topic], MASK_TYPES)
        if image_topic is not None:
            check_topics(reader, [image_topic])
        info_topic = topic.rsplit("/", 1)[0] + "/label_info"
        types = {c.topic: c.msgtype for c in reader.connections}
        if types.get(info_topic) == LABEL_INFO:
            maps = class_maps(reader, info_topic, classes)
        else:
            tqdm.write(f"note: no {info_topic} in the bag; mask values are taken as the --classes prompts in order")
            maps = [ClassMap(-1, prompts_and_lookup(classes)[1])]
        stamps = [entry.stamp for entry in maps]
        images: dict[int, np.ndarray] = {}  # camera images by stamp, until their mask comes
        for item in messages(reader, [topic] + ([image_topic] if image_topic else [])):
            stamp = stamp_ns(item.message)
            if item.topic == image_topic:
                images[stamp] = cv2.cvtColor(to_rgb(item), cv2.COLOR_RGB2GRAY)
                _forget(images, stamp - round(IMAGE_AGE_S * 1e9))  # their masks never came
                continue
            lookup = in_effect(maps, stamps, stamp, topic).lookup
            labels = checked_ids(mono_labels(item), len(lookup), stamp, topic)
            image = images.pop(stamp, None)
            _forget(images, stamp)  # a camera's masks come in stamp order: frames the node skipped get none
            yield Prediction(stamp, to_ground_truth_ids(labels, lookup), image)


def _forget(images: dict[int, np.ndarray], before: int) -> None:
    for stamp in [stamp for stamp in images if stamp < before]:
        del images[stamp]


class GroundTruthWindow:
    """A bag's ground-truth topic, read by stamp alongside the predictions (both in their stamp order).

    Images are read ahead only until one is stamped ``window_s`` past the prediction asked for, and dropped
    (as ground truth without a frame) once the predictions are ``window_s`` past them: memory holds about
    two windows of ground truth, whatever the bag's length. ``peak``: the most images held at once."""

    def __init__(self, bag: Path, topic: str, window_s: float = GROUND_TRUTH_WINDOW_S) -> None:
        self._window = round(window_s * 1e9)
        self._stack = ExitStack()
        reader = self._stack.enter_context(open_bag(bag))
        check_topics(reader, [topic], MASK_TYPES)
        self._unread: Optional[Iterator] = messages(reader, [topic])
        self._held: dict[int, np.ndarray] = {}
        self._newest: Optional[int] = None
        self.dropped = 0
        self.peak = 0

    def take(self, stamp: int) -> Optional[np.ndarray]:
        """The ground truth stamped ``stamp``, or None."""
        while self._unread is not None and (self._newest is None or self._newest <= stamp + self._window):
            item = next(self._unread, None)
            if item is None:
                self._unread = None
                break
            truth = stamp_ns(item.message)
            self._newest = truth if self._newest is None else max(self._newest, truth)
            if truth < stamp - self._window:  # the predictions are past it already
                self.dropped += 1
                continue
            self.dropped += truth in self._held  # a repeated stamp: the later image is the one matched
            self._held[truth] = mono_labels(item)
            self.peak = max(self.peak, len(self._held))
        found = self._held.pop(stamp, None)
        passed = [truth for truth in self._held if truth < stamp - self._window]
        for truth in passed:
            del self._held[truth]
        self.dropped += len(passed)
        return found

    def unmatched(self) -> int:
        """Ground truth no prediction matched: dropped, still held, or never read (read now, and not kept)."""
        rest = sum(1 for _ in self._unread) if self._unread is not None else 0
        self._unread = None
        return self.dropped + len(self._held) + rest

    def close(self) -> None:
        self._held.clear()
        self._stack.close()

    def __enter__(self) -> GroundTruthWindow:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def read_label_file(path: Path) -> np.ndarray:
    try:
        return read_label_image(path)
    except LabelImageError as error:
        raise BagError(str(error)) from error


def evaluate(predictions: Iterator[Prediction], num_classes: int, ignore_index: int, *,
             label_topic: Optional[GroundTruthWindow] = None, label_files: Optional[list[Path]] = None,
             total: Optional[int] = None, temporal: bool = False, progress: Optional[tqdm] = None) -> EvalResult:
    """Accumulate the confusion against at most one of ``label_topic`` (by stamp) and ``label_files`` (by
    order), and with ``temporal`` the consistency of consecutive predictions (their images' optical flow;
    a prediction without its image is counted in ``without_image``)."""
    confusion = ConfusionMatrix(num_classes)
    result = EvalResult(confusion.matrix)
    consistency = TemporalConsistency(num_classes) if temporal else None
    first: Optional[int] = None
    bar = tqdm(total=total, unit="frame", desc="eval", dynamic_ncols=True) if progress is None else nullcontext(progress)
    with bar as progress:
        for index, prediction in enumerate(predictions):
            progress.update()
            result.frames += 1
            first = prediction.stamp if first is None else first
            if consistency is not None and prediction.grey is None:
                result.without_image += 1
            elif consistency is not None:
                pair = consistency.add(prediction.grey, np.where(prediction.labels < 0, OUTSIDE, prediction.labels))
                if pair is not None:
                    result.temporal.append(((prediction.stamp - first) / 1e9, pair))
            if label_topic is None and label_files is None:
                continue
            if label_files is not None:
                if index >= len(label_files):
                    raise BagError(f"label/frame mismatch: more frames than the {len(label_files)} label files")
                truth = read_label_file(label_files[index])
            else:
                truth = label_topic.take(prediction.stamp)
                if truth is None:
                    result.unmatched_predictions += 1
                    continue
            try:
                frame = confusion.update(prediction.labels, truth, ignore_index)
            except ValueError as error:
                raise BagError(f"frame at stamp {prediction.stamp} ns: {error}") from error
            result.per_frame.append(((prediction.stamp - first) / 1e9, scores(frame).miou))
            result.matched += 1
            progress.set_postfix(mIoU=f"{100 * scores(confusion.matrix).miou:.1f}")
    if label_files is not None and result.matched != len(label_files):
        raise BagError(f"label/frame mismatch: {result.matched} frames but {len(label_files)} label files")
    result.unmatched_labels = label_topic.unmatched() if label_topic is not None else 0
    result.matrix = confusion.matrix
    return result
