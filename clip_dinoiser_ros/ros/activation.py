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

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from ..msg import ClassConfidences
from ..pipeline import topics
from .frame_mailbox import Frame, FrameMailbox
from ..pipeline.frame_geometry import PAIR_WAIT_S, FrameGeometry, GeometryError, geometry_or_none
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
# Reliability, durability, depth and history of every input and output can be set per topic in a params
# file (qos_overrides./<topic>.subscription|publisher.<policy>), as image_pipeline's nodes allow; rclpy's
# default set lacks durability. rclpy applies an override to the profile object it is given, so every
# entity gets its own copy of these.
OVERRIDABLE_POLICIES = (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY,
                        QoSPolicyKind.DURABILITY)


def qos_overrides() -> QoSOverridingOptions:
    return QoSOverridingOptions(OVERRIDABLE_POLICIES)
STOP_TIMEOUT_S = 1.0  # then a frame still being segmented is abandoned: a stop is never held up by it
OUTPUT_TYPES = {"class_confidences": ClassConfidences, "label_info": LabelInfo, "camera_info": CameraInfo,
                "points": PointCloud2, "detections": Detection2DArray, "detections_3d": Detection3DArray}


@dataclass(frozen=True)
class LiveSettings:
    """The parameters the worker reads before each pass (they change live)."""

    frame: FrameSettings
    max_rate_hz: float
    max_image_pixels: int
    batch: bool


@dataclass(frozen=True)
class InputSettings:
    """How the inputs are subscribed and paired (fixed for one activation)."""

    reliability: str = "best_effort"
    sync: str = "exact"
    sync_slop_s: float = 0.02


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
        self._diagnostics = None

    @property
    def inputs(self) -> list[str]:
        return list(self._cameras)

    def start(self, inputs: InputSettings) -> None:
        """Publishers, subscriptions, then the worker; on any error the caller calls ``stop``."""
        overrides = qos_overrides()
        for camera in self._cameras.values():
            for name, topic in camera.names.outputs.items():
                qos = copy.copy(LABEL_INFO_QOS if name == "label_info" else OUTPUT_QOS)  # overrides change it
                camera.publishers[name] = self._node.create_publisher(
                    OUTPUT_TYPES.get(name, Image), topic, qos, qos_overriding_options=overrides)
        self.sync_class_publishers(self._active())
        reliability = ReliabilityPolicy.RELIABLE if inputs.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        input_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        for camera in self._cameras.values():
            camera.rgbd = RgbdInputs(self._node, camera.names, input_qos, overrides, inputs.sync, inputs.sync_slop_s,
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
        """One confidence/<class> topic per class of ``active``: new classes appear, removed ones go."""
        wanted = set(topics.class_topic_tokens(active.vocabulary.names))
        with self._lock:
            if self._stopped:
                return
            for camera in self._cameras.values():
                for token in set(camera.class_publishers) - wanted:
                    self._node.destroy_publisher(camera.class_publishers.pop(token))
                for token in wanted - set(camera.class_publishers):
                    camera.class_publishers[token] = self._node.create_publisher(
                        Image, topics.output_topic(camera.topic, f"confidence/{token}"), copy.copy(OUTPUT_QOS),
                        qos_overriding_options=qos_overrides())

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
        self._mailbox.put(camera.topic, message, key=stamp_ns(message), complete=False, hold_s=PAIR_WAIT_S)
        rgbd.on_colour(message)

    def _on_pair(self, camera: Camera, colour: Any, depth: Image, info: CameraInfo) -> None:
        self._mailbox.put(camera.topic, (colour, depth, info), key=stamp_ns(colour))

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
                self._process(frames, settings)
            except Exception as error:  # the worker must outlive any frame
                if self._stopped or not self._node.context.ok():
                    return  # stopping: publishers are gone, nothing to report
                cameras = ", ".join(frame.camera for frame in frames)
                logger.error(f"{cameras}: frame failed: {type(error).__name__}: {error}")

    def _process(self, frames: list[Frame], settings: LiveSettings) -> None:
        decoded = [d for frame in frames if (d := self._decoded(frame, settings.max_image_pixels)) is not None]
        if not decoded:
            return
        active = self._active()
        pipeline = self._pipeline
        if pipeline is None:
            return
        received = {frame.camera: frame.received for frame in frames}
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
                camera.stats.on_published(time.monotonic() - received[result.camera])
                for token, image in result.class_maps:
                    publisher = camera.class_publishers.get(token)
                    if publisher is not None and publisher.get_subscription_count() > 0:
                        publisher.publish(image)

    def _decoded(self, frame: Frame, max_pixels: int) -> Optional[CameraFrame]:
        camera = self._cameras[frame.camera]
        message, depth, info = frame.message if isinstance(frame.message, tuple) else (frame.message, None, None)
        try:
            decode = compressed_to_rgb if isinstance(message, CompressedImage) else image_to_rgb
            rgb = decode(message, max_pixels)
        except ImageDecodeError as error:
            camera.stats.on_rejected(str(error))
            self._node.get_logger().warning(f"{camera.topic}: frame rejected: {error}",
                                            throttle_duration_sec=LOG_THROTTLE_S)
            return None
        geometry = self._geometry(camera, rgb.shape[:2], depth, info, max_pixels)
        return CameraFrame(camera.topic, message.header, rgb, self._wanted(camera), geometry)

    def _geometry(self, camera: Camera, size: tuple[int, int], depth: Optional[Image], info: Optional[CameraInfo],
                  max_pixels: int) -> Optional[FrameGeometry]:
        """The frame's camera_info and depth (paired), or the latest camera_info alone; refusals are logged."""
        rgbd = camera.rgbd
        if rgbd is None:
            return None
        if rgbd.has_depth:
            rgbd.health.on_frame(paired=depth is not None)

        def refused(error: GeometryError) -> None:
            rgbd.health.on_refused(str(error))
            self._node.get_logger().warning(f"{camera.topic}: {error}; the mask is published without it",
                                            throttle_duration_sec=LOG_THROTTLE_S)

        return geometry_or_none(info or rgbd.latest_camera_info(), depth, *size, max_pixels, refused)

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
                detections_3d=subscribed("detections_3d"),
            )

