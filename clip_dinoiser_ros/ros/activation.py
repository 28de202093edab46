"""One activation of the node: per-camera subscriptions and publishers, the mailbox and the inference worker.

Everything here lives from activate to deactivate. The worker takes frames latest-only, hands them to
the rclpy-free FramePipeline and publishes what it returns in the order returned (a camera's LabelInfo
before the first mask of a new class map). Stopping never waits more than ``STOP_TIMEOUT_S`` for a
frame being segmented: a worker still busy then is detached, and whatever it finishes is discarded.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from ..msg import ClassConfidences, SegmentationFeatures
from ..pipeline import topics
from .frame_mailbox import Frame, FrameMailbox
from ..pipeline.frame_geometry import PairingOptions
from ..pipeline.frame_pipeline import CameraFrame, FrameFailure, FramePipeline, FrameSettings, VersionedVocabulary
from ..pipeline.image_codec import ImageDecodeError, compressed_to_rgb, image_to_rgb
from ..pipeline.messages import Wanted, stamp_ns
from .diagnostics import LOG_THROTTLE_S, CameraStats, camera_status
from .rgbd_inputs import RgbdInputs

if TYPE_CHECKING:
    from rclpy.lifecycle import LifecycleNode

    from ..model import ClipDinoiser

OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
# Like camera_info: a late subscriber (Nav2's layer: reliable, transient local) gets the current map at once.
LABEL_INFO_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# Reliability, durability, depth and history of every output, and all but reliability of every input, can
# be set per topic in a params file (qos_overrides./<topic>.subscription|publisher.<policy>), as
# image_pipeline's nodes allow; rclpy's default set lacks durability. rclpy declares each override as a
# read-only parameter from the first profile it sees and reuses it at every later activate, so the inputs'
# reliability is input_reliability's alone: an override would freeze it at its first value. rclpy applies
# an override to the profile object it is given, so every entity gets its own copy of these.
OUTPUT_POLICIES = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY)
INPUT_POLICIES = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.DURABILITY)
# How often the graph is asked which confidence/<class> topics have subscribers (image_transport's lazy
# publishers, by polling): a class's publisher exists only while somebody subscribes to it.
CLASS_TOPIC_PERIOD_S = 0.5
STOP_TIMEOUT_S = 1.0  # then a frame still being segmented is abandoned: a stop is never held up by it
OUTPUT_TYPES = {"class_confidences": ClassConfidences, "label_info": LabelInfo, "camera_info": CameraInfo,
                "points": PointCloud2, "detections": Detection2DArray, "detections_3d": Detection3DArray,
                "features": SegmentationFeatures}


def input_reliability(value: str) -> ReliabilityPolicy:
    """The QoS policy of an ``input_reliability`` parameter value (best_effort or reliable)."""
    return ReliabilityPolicy.RELIABLE if value == "reliable" else ReliabilityPolicy.BEST_EFFORT


@dataclass(frozen=True)
class LiveSettings:
    """The parameters the worker reads before each pass (they change live)."""

    frame: FrameSettings
    max_rate_hz: float
    max_image_pixels: int
    batch: bool
    depth_scale: float  # metres per 16UC1 depth unit


@dataclass(frozen=True)
class InputSettings:
    """How the inputs are subscribed and paired (fixed for one activation)."""

    reliability: str
    pairing: PairingOptions


@dataclass
class Camera:
    """One input topic and everything published for it."""

    names: topics.CameraTopics
    stats: CameraStats = field(default_factory=CameraStats)
    publishers: dict[str, Any] = field(default_factory=dict)
    class_publishers: dict[str, Any] = field(default_factory=dict)
    subscription: Any = None
    rgbd: Optional[RgbdInputs] = None

    @property
    def topic(self) -> str:
        return self.names.input


class Activation:
    """Subscriptions, publishers and the worker of one activation (entities are made on the executor thread)."""

    def __init__(self, node: LifecycleNode, engine: ClipDinoiser, plans: list[topics.CameraTopics],
                 settings: Callable[[], LiveSettings], active: Callable[[], VersionedVocabulary],
                 clock: Callable[[], float]) -> None:
        self._node = node
        self._settings = settings
        self._active = active
        self._pipeline = FramePipeline(engine)
        self._cameras = {plan.input: Camera(plan) for plan in plans}
        self._mailbox = FrameMailbox(list(self._cameras), clock=clock)
        self._lock = threading.RLock()  # publishers: used by the worker, created and destroyed by the executor
        self._stopped = False
        self._worker: Optional[threading.Thread] = None
        self._sync_wait_s = 0.0  # set by start
        self._class_timer = None
        self._diagnostics = None
        self._features_warned: set[str] = set()  # why features could not be made, said once per activation

    @property
    def inputs(self) -> list[str]:
        return list(self._cameras)

    def start(self, inputs: InputSettings) -> None:
        """Publishers, subscriptions, then the worker; on any error the caller calls ``stop``."""
        overrides = QoSOverridingOptions(OUTPUT_POLICIES)
        for camera in self._cameras.values():
            for name, topic in camera.names.outputs.items():
                qos = copy.copy(LABEL_INFO_QOS if name == "label_info" else OUTPUT_QOS)  # overrides change it
                camera.publishers[name] = self._node.create_publisher(
                    OUTPUT_TYPES.get(name, Image), topic, qos, qos_overriding_options=overrides)
        self._sync_class_publishers(self._active())  # at start a failure fails the activation
        self._class_timer = self._node.create_timer(CLASS_TOPIC_PERIOD_S,
                                                    lambda: self.sync_class_publishers(self._active()),
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))
        input_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                               reliability=input_reliability(inputs.reliability))
        overrides = QoSOverridingOptions(INPUT_POLICIES)
        self._sync_wait_s = inputs.pairing.wait_s
        for camera in self._cameras.values():
            camera.rgbd = RgbdInputs(self._node, camera.names, input_qos, overrides, inputs.pairing,
                                     lambda *pair, c=camera: self._on_pair(c, *pair))
            message_type = CompressedImage if topics.is_compressed(camera.topic) else Image
            camera.subscription = self._node.create_subscription(
                message_type, camera.topic, lambda msg, c=camera: self._on_image(c, msg), copy.copy(input_qos),
                qos_overriding_options=overrides)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Undo ``start``, however far it got; False when the worker was still busy and was detached."""
        node = self._node
        if self._class_timer is not None:
            node.destroy_timer(self._class_timer)
            self._class_timer = None
        for camera in self._cameras.values():
            if camera.subscription is not None:
                node.destroy_subscription(camera.subscription)
                camera.subscription = None
            if camera.rgbd is not None:
                camera.rgbd.destroy(node)
        self._mailbox.close()
        finished = True
        if self._worker is not None:
            self._worker.join(timeout)
            finished = not self._worker.is_alive()
            self._worker = None
        with self._lock:
            self._stopped = True
            for camera in self._cameras.values():
                for publisher in [*camera.publishers.values(), *camera.class_publishers.values()]:
                    node.destroy_publisher(publisher)
                camera.publishers.clear()
                camera.class_publishers.clear()
        self._pipeline = None  # type: ignore[assignment] - the engine is let go with the worker's last frame
        return finished

    def sync_class_publishers(self, active: VersionedVocabulary) -> None:
        """``_sync_class_publishers`` from a timer or an executor task: a failure (the graph or a publisher
        refused while the context shuts down, say) is logged, never raised into the executor."""
        try:
            self._sync_class_publishers(active)
        except Exception as error:
            self._node.get_logger().error(f"per-class confidence topics not updated: {type(error).__name__}: {error}",
                                          throttle_duration_sec=LOG_THROTTLE_S)

    def _sync_class_publishers(self, active: VersionedVocabulary) -> None:
        """A confidence/<class> publisher for each class of ``active`` that somebody subscribes to, none for others.

        Runs on the executor's thread (a timer, and each new vocabulary). One graph look-up for all the
        cameras: a class topic someone subscribes to is in it before any publisher of ours is. No QoS
        override parameters are declared for these topics, so nothing stays declared for past classes.
        """
        listed = {name for name, _ in self._node.get_topic_names_and_types()}
        tokens = topics.class_topic_tokens(active.vocabulary.names)
        wanted: dict[str, dict[str, str]] = {}
        for camera in self._cameras.values():
            class_topics = {token: topics.output_topic(camera.topic, f"confidence/{token}") for token in tokens}
            wanted[camera.topic] = {token: topic for token, topic in class_topics.items()
                                    if topic in listed and self._node.count_subscribers(topic) > 0}
        with self._lock:
            if self._stopped:
                return
            for camera in self._cameras.values():
                for token in set(camera.class_publishers) - set(wanted[camera.topic]):
                    self._node.destroy_publisher(camera.class_publishers.pop(token))
                for token, topic in wanted[camera.topic].items():
                    if token not in camera.class_publishers:
                        camera.class_publishers[token] = self._node.create_publisher(Image, topic,
                                                                                     copy.copy(OUTPUT_QOS))

    def statuses(self, node_name: str, context: dict[str, str]) -> list[DiagnosticStatus]:
        pipeline = self._pipeline
        found = [
            camera_status(f"{node_name}: {camera.topic}", camera.stats.report(), self._mailbox.dropped(camera.topic),
                          pipeline.stale_dropped(camera.topic) if pipeline is not None else 0, context)
            for camera in self._cameras.values()
        ]
        found.extend(camera.rgbd.health.status(f"{node_name}: {camera.topic} depth", camera.names.depth,
                                               camera.names.camera_info, context)
                     for camera in self._cameras.values() if camera.rgbd is not None and camera.rgbd.has_depth)
        return found

    # ---------------------------------------------------------------- worker
    def _on_image(self, camera: Camera, message: Any) -> None:
        camera.stats.on_received()
        rgbd = camera.rgbd
        if rgbd is None or not rgbd.has_depth:
            self._mailbox.put(camera.topic, message)
            return
        self._mailbox.put(camera.topic, message, key=stamp_ns(message), complete=False, hold_s=self._sync_wait_s)
        rgbd.on_colour(message)

    def _on_pair(self, camera: Camera, colour: Any, depth: Image, info: CameraInfo) -> None:
        if not self._mailbox.put(camera.topic, (colour, depth, info), key=stamp_ns(colour)):
            camera.rgbd.health.on_late_pair()  # its colour frame was segmented alone already

    def _work(self) -> None:
        mailbox, logger = self._mailbox, self._node.get_logger()
        while True:
            settings = self._settings()
            take = mailbox.take_all if settings.batch else mailbox.take_one
            interval = 1.0 / settings.max_rate_hz if settings.max_rate_hz > 0 else 0.0
            frames = take(min_interval=interval, timeout=0.5)
            if not frames:
                if mailbox.closed:
                    return
                continue
            try:
                self._process(frames, self._settings())  # as they are now: a change made during the wait applies
            except Exception as error:  # the worker must outlive any frame
                if self._stopped or not self._node.context.ok():
                    return  # stopping: publishers are gone, nothing to report
                cameras = ", ".join(frame.camera for frame in frames)
                logger.error(f"{cameras}: frame failed: {type(error).__name__}: {error}")

    def _process(self, frames: list[Frame], settings: LiveSettings) -> None:
        decoded = [d for frame in frames if (d := self._decoded(frame, settings)) is not None]
        if not decoded:
            return
        active = self._active()
        pipeline = self._pipeline
        if pipeline is None:
            return
        received = {frame.camera: frame.received for frame in frames}
        if any(frame.wanted.features for frame in decoded):
            self._warn_once_without_features(pipeline.features_unavailable(settings.frame.mode))
        for result in pipeline.run(decoded, active, settings.frame):
            camera = self._cameras[result.camera]
            if isinstance(result, FrameFailure):
                self._model_failed(camera, result.error)
                continue
            with self._lock:
                if self._stopped:
                    return
                for name, message in result.messages:
                    camera.publishers[name].publish(message)
                    if name == "features":
                        camera.stats.on_features_published()
                camera.stats.on_published(time.monotonic() - received[result.camera])
                for token, image in result.class_maps:
                    publisher = camera.class_publishers.get(token)
                    if publisher is not None and publisher.get_subscription_count() > 0:
                        publisher.publish(image)

    def _warn_once_without_features(self, reason: Optional[str]) -> None:
        if reason is not None and reason not in self._features_warned:
            self._features_warned.add(reason)
            self._node.get_logger().warning(f"segmentation/features has subscribers but gets no messages: {reason}")

    def _decoded(self, frame: Frame, settings: LiveSettings) -> Optional[CameraFrame]:
        """The frame as the pipeline takes it: its pixels, its geometry and the outputs wanted; None if rejected."""
        camera = self._cameras[frame.camera]
        message, depth, info = frame.message if isinstance(frame.message, tuple) else (frame.message, None, None)
        rgb = self._pixels(camera, message, settings.max_image_pixels)
        if rgb is None:
            return None
        geometry = None if camera.rgbd is None else camera.rgbd.geometry(
            message, rgb.shape[:2], depth, info, settings.max_image_pixels, settings.depth_scale)
        return CameraFrame(camera.topic, message.header, rgb, self._wanted(camera), geometry)

    def _pixels(self, camera: Camera, message: Any, max_pixels: int) -> Optional[np.ndarray]:
        """The frame's RGB pixels, or None when it is rejected (counted, and logged throttled)."""
        try:
            decode = compressed_to_rgb if isinstance(message, CompressedImage) else image_to_rgb
            return decode(message, max_pixels)
        except ImageDecodeError as error:
            camera.stats.on_rejected(str(error))
            self._node.get_logger().warning(f"{camera.topic}: frame rejected: {error}",
                                            throttle_duration_sec=LOG_THROTTLE_S)
            return None

    def _model_failed(self, camera: Camera, error: Exception) -> None:
        camera.stats.on_model_failed(f"{type(error).__name__}: {error}")
        self._node.get_logger().error(f"{camera.topic}: the model failed on a frame: {type(error).__name__}: {error}",
                                      throttle_duration_sec=LOG_THROTTLE_S)

    def _wanted(self, camera: Camera) -> Wanted:
        with self._lock:
            publishers = camera.publishers
            if not publishers:
                return Wanted(False, False, False, False)

            def subscribed(name: str) -> bool:
                publisher = publishers.get(name)
                return publisher is not None and publisher.get_subscription_count() > 0

            return Wanted(
                confidence=subscribed("confidence"), class_confidences=subscribed("class_confidences"),
                overlay=subscribed("overlay"),
                class_maps=any(p.get_subscription_count() > 0 for p in camera.class_publishers.values()),
                points=subscribed("points"), detections=subscribed("detections"),
                detections_3d=subscribed("detections_3d"), features=subscribed("features"),
            )

