"""Camera frames and the active vocabulary in; each camera's output messages out, in publishing order.

The ordering contract planners rely on lives here, once, for the node and the bag tool alike. Per
camera, the LabelInfo of vocabulary version N (and threshold) goes out before the first mask made with
N, stamped with that frame's header stamp; a frame made with a version older than the last LabelInfo
sent is dropped and counted, never published under another class map. A frame with geometry (its
camera_info, and depth) also gets the mask's camera_info and, as wanted, the labelled cloud and the
detections, all from the same thresholded labels as its mask. A frame whose features are wanted gets them
from the pass that made its mask (whole mode, torch backend only: ``features_unavailable`` says why not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
from std_msgs.msg import Header

from ..model.vocabulary import BACKGROUND_SETTINGS
from . import messages, topics
from .feature_messages import features_message
from .frame_geometry import FrameGeometry
from .messages import UNLABELLED_MONO8, UNLABELLED_MONO16, Wanted
from .spatial_outputs import spatial_outputs

if TYPE_CHECKING:
    from ..model import ClipDinoiser, Segmentation, Vocabulary


@dataclass(frozen=True)
class VersionedVocabulary:
    """A vocabulary and the version number it is announced under (versions only grow)."""

    version: int
    vocabulary: Vocabulary


@dataclass(frozen=True)
class FrameSettings:
    """The live settings of one pass, read once so that every frame of it agrees."""

    mode: str = "whole"
    short_side: int = 448
    background: str = "auto"  # a key of BACKGROUND_SETTINGS
    threshold: float = 0.0
    confidence_encoding: str = "mono8"
    max_depth_m: float = 10.0
    min_object_pixels: int = 50


@dataclass(frozen=True)
class CameraFrame:
    """One decoded frame of one camera and the outputs somebody wants from it."""

    camera: str
    header: Header
    rgb: np.ndarray
    wanted: Wanted
    geometry: Optional[FrameGeometry] = None  # camera_info, and depth when the camera has it


@dataclass(frozen=True)
class FrameOutputs:
    """What to publish for one frame, in order: ``label_info`` first when the class map changed."""

    camera: str
    version: int
    messages: tuple[tuple[str, Any], ...]
    class_maps: tuple[tuple[str, Any], ...] = ()  # (topic token, 32FC1 image) per class, when wanted


@dataclass(frozen=True)
class FrameFailure:
    """The model could not segment this frame (not a bad input: the input had decoded)."""

    camera: str
    error: Exception


FrameResult = Union[FrameOutputs, FrameFailure]


def effective_background(choice: str, vocabulary: Vocabulary) -> Optional[bool]:
    """The background setting for this vocabulary: 'on' needs a class besides class 0, else it is off."""
    setting = BACKGROUND_SETTINGS[choice]
    return False if setting and len(vocabulary) < 2 else setting


@dataclass
class _Announced:
    version: int
    threshold: float


@dataclass
class FramePipeline:
    """Segments frames and turns them into messages, keeping each camera's LabelInfo ahead of its masks."""

    engine: ClipDinoiser
    _announced: dict[str, _Announced] = field(default_factory=dict)
    _stale: dict[str, int] = field(default_factory=dict)

    def features_unavailable(self, mode: str) -> Optional[str]:
        """Why frames get no features in ``mode`` with this engine; None when they can."""
        if mode != "whole":
            return f"mode is {mode!r}: features need mode 'whole' (slide mode has one patch grid per window)"
        if self.engine.onnx is not None:
            return "backend is onnxruntime: features need backend 'torch' (the exported graph ends at the logits)"
        return None

    def stale_dropped(self, camera: str) -> int:
        """Frames of ``camera`` dropped because a newer class map had already been announced."""
        return self._stale.get(camera, 0)

    def run(self, frames: Sequence[CameraFrame], active: VersionedVocabulary, settings: FrameSettings) -> list[FrameResult]:
        """Every frame segmented with ``active`` (one ViT pass per size in whole mode), then ordered outputs."""
        results: list[FrameResult] = []
        for frame, segmentation in zip(frames, self._segment(frames, active.vocabulary, settings)):
            if isinstance(segmentation, Exception):
                results.append(FrameFailure(frame.camera, segmentation))
                continue
            outputs = self.outputs(frame, segmentation, active.version, settings)
            if outputs is not None:
                results.append(outputs)
        return results

    def outputs(self, frame: CameraFrame, segmentation: Segmentation, version: int,
                settings: FrameSettings) -> Optional[FrameOutputs]:
        """The frame's messages in publishing order; None when it was made with an outdated class map."""
        announced = self._announced.get(frame.camera)
        if announced is not None and version < announced.version:
            self._stale[frame.camera] = self._stale.get(frame.camera, 0) + 1
            return None
        produced: list[tuple[str, Any]] = []
        if announced != _Announced(version, settings.threshold):
            info = messages.label_info(segmentation.prompts, settings.threshold, frame.header)
            produced.append(("label_info", info))
            self._announced[frame.camera] = _Announced(version, settings.threshold)
        labels = messages.thresholded_labels(segmentation, settings.threshold)
        produced.extend(messages.camera_messages(
            segmentation, labels, frame.rgb, frame.header, version=version,
            confidence_encoding=settings.confidence_encoding, wanted=frame.wanted,
        ).items())
        produced.extend(spatial_outputs(
            frame.geometry, frame.rgb, labels, segmentation.confidence, segmentation.prompts,
            UNLABELLED_MONO8 if labels.dtype == np.uint8 else UNLABELLED_MONO16, frame.header, frame.wanted,
            max_depth_m=settings.max_depth_m, min_object_pixels=settings.min_object_pixels,
        ).items())
        class_maps: tuple[tuple[str, Any], ...] = ()
        if frame.wanted.class_maps and segmentation.probs is not None:
            tokens = topics.class_topic_tokens(segmentation.prompts)
            class_maps = tuple((token, messages.float_image(segmentation.probs[index], frame.header))
                               for index, token in enumerate(tokens))
        if frame.wanted.features and segmentation.features is not None:
            from ..model.guided_pooling import LOGIT_SCALE  # torch: loaded with the engine already

            produced.append(("features", features_message(segmentation.features, frame.header, version,
                                                          LOGIT_SCALE)))
        return FrameOutputs(frame.camera, version, tuple(produced), class_maps)

    def _segment(self, frames: Sequence[CameraFrame], vocabulary: Vocabulary,
                 settings: FrameSettings) -> list[Union[Segmentation, Exception]]:
        """One result per frame (whole mode: one ViT pass for all); a frame the model fails on gives its exception."""
        options = dict(short_side=settings.short_side, background=effective_background(settings.background, vocabulary),
                       vocabulary=vocabulary, probs=any(frame.wanted.class_maps for frame in frames),
                       features=any(frame.wanted.features for frame in frames)
                       and self.features_unavailable(settings.mode) is None)
        if settings.mode == "whole":
            try:
                return list(self.engine.segment_batch([frame.rgb for frame in frames], **options))
            except Exception as error:  # noqa: BLE001 - alone: its failure; together: find the frame at fault
                if len(frames) == 1:
                    return [error]
        return [self._segment_one(frame.rgb, settings.mode, options) for frame in frames]

    def _segment_one(self, rgb: np.ndarray, mode: str, options: dict[str, Any]) -> Union[Segmentation, Exception]:
        try:
            return self.engine.segment(rgb, mode=mode, **options)
        except Exception as error:  # noqa: BLE001 - reported as this frame's model failure
            return error
