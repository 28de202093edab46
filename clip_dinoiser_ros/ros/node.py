"""The ``clip_dinoiser`` lifecycle node: a thin shell that converts messages and calls the engine.

configure loads the model, activate starts subscriptions, publishers and the inference worker,
deactivate stops them, cleanup frees the model. Frames are handed over latest-only (FrameMailbox),
prompt changes are encoded off the frame path (VocabularySwitcher).
"""
from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rcl_interfaces.msg import SetParametersResult
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

try:  # rclpy >= 9 (Kilted): waits and dispatches in C++, so the inference thread rarely waits for the GIL
    from rclpy.experimental import EventsExecutor as Executor
except ImportError:  # older rclpy
    from rclpy.executors import SingleThreadedExecutor as Executor

from ..model import Vocabulary, WeightsUnavailableError, CheckpointError
from ..model.engine import BACKGROUND_SETTINGS, uses_background
from ..model.vocabulary import parse_prompts
from ..msg import ClassConfidences, LabelInfo
from ..srv import SetPrompts
from ..visualization import RANDOM_NOTICE
from . import outputs, topics
from .diagnostics import CameraStats, camera_status
from .engine_factory import EngineSettings, build_engine
from .frame_mailbox import FrameMailbox
from .image_codec import ImageDecodeError, compressed_to_rgb, image_to_rgb
from .parameters import LIVE, PARAMETERS, REACTIVATE, SPECS, check_value
from .torch_threads import run_on_short_lived_thread
from .vocabulary_switcher import VocabularySwitcher

NODE_NAME = "clip_dinoiser"
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LABEL_INFO_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
LOG_THROTTLE_S = 2.0


@dataclass
class Camera:
    """One input topic and everything published for it."""

    topic: str
    stats: CameraStats = field(default_factory=CameraStats)
    publishers: dict[str, Any] = field(default_factory=dict)
    class_publishers: dict[str, Any] = field(default_factory=dict)
    subscription: Any = None

    def output(self, name: str) -> str:
        return topics.output_topic(self.topic, name)


class ClipDinoiserNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._engine = None
        self._switcher = None
        self._vocabulary_service = None
        self._cameras: dict[str, Camera] = {}
        self._mailbox: Optional[FrameMailbox] = None
        self._worker: Optional[threading.Thread] = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None
        self._outputs_lock = threading.RLock()
        self._random_weights = False

    # ---------------------------------------------------------------- parameters
    def param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        proposed = {p.name: p.value for p in parameters}
        for parameter in parameters:
            reason = check_value(parameter.name, parameter.value)
            if reason is None and parameter.name == "prompts":
                reason = self._prompts_problem(
                    parameter.value,
                    proposed.get("max_prompts", self.param("max_prompts")),
                    proposed.get("max_prompt_length", self.param("max_prompt_length")),
                )
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    @staticmethod
    def _prompts_problem(prompts: Any, max_prompts: int, max_length: int) -> Optional[str]:
        try:
            parse_prompts(list(prompts) if isinstance(prompts, (list, tuple)) else prompts,
                          max_prompts=max_prompts, max_length=max_length)
        except ValueError as error:
            return f"prompts rejected: {error}"
        return None

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        for parameter in parameters:
            applies = SPECS[parameter.name].applies if parameter.name in SPECS else LIVE
            if parameter.name == "prompts" and self._switcher is not None:
                version = self._switcher.request(list(parameter.value))
                self.get_logger().info(f"encoding vocabulary v{version}: {list(parameter.value)}")
            elif parameter.name in ("gamma", "delta") and self._engine is not None:
                setattr(self._engine, parameter.name, float(parameter.value))
            elif applies == REACTIVATE:
                self.get_logger().info(f"{parameter.name} takes effect on the next activate")
            elif applies != LIVE:
                self.get_logger().warning(
                    f"{parameter.name} takes effect on the next configure (deactivate, cleanup, configure, activate)"
                )

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = EngineSettings(**{name: self.param(name) for name in EngineSettings.__dataclass_fields__})
        try:
            started = time.monotonic()
            self._engine = run_on_short_lived_thread(lambda: build_engine(settings), "model-loader")
            vocabulary = run_on_short_lived_thread(
                lambda: self._encode_prompts(list(self.param("prompts"))), "vocabulary-encoder"
            )
        except (WeightsUnavailableError, CheckpointError, ValueError, TypeError, RuntimeError) as error:
            self._engine = None
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self._random_weights = settings.random_weights
        self._switcher = VocabularySwitcher(
            self._encode_prompts, self._on_vocabulary_ready, self._on_vocabulary_error, initial=(1, vocabulary)
        )
        self._vocabulary_service = self.create_service(SetPrompts, "~/set_prompts", self._handle_set_prompts)
        self.get_logger().info(
            f"configured {settings.clip_model} on {self._engine.device} ({self._engine.dtype}) in "
            f"{time.monotonic() - started:.1f} s; vocabulary v1: {list(vocabulary.names)}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._random_weights:
            self.get_logger().warning(RANDOM_NOTICE)
        topics_in = list(dict.fromkeys(t.strip() for t in self.param("image_topics")))
        self._cameras = {topic: Camera(topic) for topic in topics_in}
        self._mailbox = FrameMailbox(topics_in)
        for camera in self._cameras.values():
            self._create_outputs(camera)
        version, vocabulary = self._switcher.active
        self._publish_vocabulary(version, vocabulary)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()
        reliability = (
            ReliabilityPolicy.RELIABLE if self.param("input_reliability") == "reliable" else ReliabilityPolicy.BEST_EFFORT
        )
        input_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        for camera in self._cameras.values():
            message_type = CompressedImage if topics.is_compressed(camera.topic) else Image
            camera.subscription = self.create_subscription(
                message_type, camera.topic, lambda msg, c=camera: self._on_image(c, msg), input_qos
            )
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(f"active on {topics_in}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def _stop_streaming(self) -> None:
        for camera in self._cameras.values():
            if camera.subscription is not None:
                self.destroy_subscription(camera.subscription)
                camera.subscription = None
        if self._mailbox is not None:
            self._mailbox.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self.destroy_publisher(self._diagnostics_publisher)
            self._diagnostics_timer = self._diagnostics_publisher = None
        with self._outputs_lock:
            for camera in self._cameras.values():
                for publisher in [*camera.publishers.values(), *camera.class_publishers.values()]:
                    self.destroy_publisher(publisher)
            self._cameras = {}
        self._mailbox = None

    def _release_model(self) -> None:
        if self._switcher is not None:
            self._switcher.close()
            self._switcher = None
        if self._vocabulary_service is not None:
            self.destroy_service(self._vocabulary_service)
            self._vocabulary_service = None
        device = self._engine.device if self._engine is not None else None
        self._engine = None
        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- outputs
    def _create_outputs(self, camera: Camera) -> None:
        with self._outputs_lock:
            camera.publishers = {
                "mask": self.create_publisher(Image, camera.output("mask"), OUTPUT_QOS),
                "confidence": self.create_publisher(Image, camera.output("confidence"), OUTPUT_QOS),
                "class_confidences": self.create_publisher(
                    ClassConfidences, camera.output("class_confidences"), OUTPUT_QOS
                ),
                "overlay": self.create_publisher(Image, camera.output("overlay"), OUTPUT_QOS),
                "label_info": self.create_publisher(LabelInfo, camera.output("label_info"), LABEL_INFO_QOS),
            }

    def _sync_class_publishers(self, camera: Camera, vocabulary: Vocabulary) -> None:
        """One confidence/<class> topic per prompt: new classes appear, removed ones disappear."""
        wanted = set(topics.class_topic_tokens(vocabulary.names))
        for token in set(camera.class_publishers) - wanted:
            self.destroy_publisher(camera.class_publishers.pop(token))
        for token in wanted - set(camera.class_publishers):
            camera.class_publishers[token] = self.create_publisher(
                Image, camera.output(f"confidence/{token}"), OUTPUT_QOS
            )

    def _publish_vocabulary(self, version: int, vocabulary: Vocabulary) -> None:
        with self._outputs_lock:
            for camera in self._cameras.values():
                self._sync_class_publishers(camera, vocabulary)
                message = LabelInfo(
                    vocabulary_version=version,
                    class_ids=list(range(len(vocabulary))),
                    class_names=list(vocabulary.names),
                    threshold=float(self.param("confidence_threshold")),
                )
                message.header.stamp = self.get_clock().now().to_msg()
                camera.publishers["label_info"].publish(message)

    # ---------------------------------------------------------------- prompts
    def _encode_prompts(self, prompts: list[str]) -> Vocabulary:
        engine = self._engine
        if engine is None:
            raise RuntimeError("the model is not loaded")
        return engine.encode_prompts(
            prompts, max_prompts=self.param("max_prompts"), max_length=self.param("max_prompt_length")
        )

    def _on_vocabulary_ready(self, version: int, vocabulary: Vocabulary) -> None:
        self.get_logger().info(f"vocabulary v{version} active: {list(vocabulary.names)}")
        self._publish_vocabulary(version, vocabulary)

    def _on_vocabulary_error(self, version: int, error: Exception) -> None:
        self.get_logger().error(f"vocabulary v{version} failed, keeping the previous one: {error}")

    def _handle_set_prompts(self, request: SetPrompts.Request, response: SetPrompts.Response) -> SetPrompts.Response:
        prompts = list(request.prompts)
        result = self.set_parameters([Parameter("prompts", Parameter.Type.STRING_ARRAY, prompts)])[0]
        response.success = result.successful
        response.message = result.reason if not result.successful else f"encoding {len(prompts)} classes"
        switcher = self._switcher
        if switcher is not None:
            response.vocabulary_version = switcher.requested_version if result.successful else switcher.active[0]
        return response

    # ---------------------------------------------------------------- frames
    def _on_image(self, camera: Camera, message: Any) -> None:
        camera.stats.on_received()
        mailbox = self._mailbox
        if mailbox is not None:
            mailbox.put(camera.topic, message)

    def _work(self) -> None:
        mailbox = self._mailbox
        while True:
            rate = self.param("max_rate_hz")
            frame = mailbox.take(min_interval=1.0 / rate if rate > 0 else 0.0, timeout=0.5)
            if frame is None:
                if mailbox.closed:
                    return
                continue
            camera = self._cameras.get(frame.camera)
            if camera is None:
                continue
            try:
                self._process(camera, frame.message, frame.received)
            except Exception as error:  # the worker must outlive any single frame
                if not self.context.ok():
                    return  # shutting down (SIGINT): publishers are gone, nothing to report
                self.get_logger().error(f"{camera.topic}: frame failed: {type(error).__name__}: {error}")

    def _process(self, camera: Camera, message: Any, received: float) -> None:
        try:
            decode = compressed_to_rgb if isinstance(message, CompressedImage) else image_to_rgb
            rgb = decode(message, self.param("max_image_pixels"))
        except ImageDecodeError as error:
            camera.stats.on_rejected(str(error))
            self.get_logger().warning(f"{camera.topic}: frame rejected: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        version, vocabulary = self._switcher.active
        try:
            segmentation = self._engine.segment(
                rgb, mode=self.param("mode"), short_side=self.param("short_side"),
                background=self._background(vocabulary), vocabulary=vocabulary,
            )
        except Exception as error:  # a frame the engine cannot handle must not stop the node
            camera.stats.on_rejected(f"{type(error).__name__}: {error}")
            self.get_logger().error(f"{camera.topic}: inference failed: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        self._publish(camera, message.header, rgb, segmentation, version, received)

    def _background(self, vocabulary: Vocabulary) -> Optional[bool]:
        """The background parameter for this vocabulary ('on' needs a class besides class 0)."""
        choice = BACKGROUND_SETTINGS[self.param("background")]
        return False if choice and len(vocabulary) < 2 else choice

    def _publish(self, camera: Camera, header: Any, rgb, segmentation, version: int, received: float) -> None:
        labels = outputs.thresholded_labels(segmentation, float(self.param("confidence_threshold")))
        with self._outputs_lock:
            publishers = camera.publishers
            if not publishers:
                return
            publishers["mask"].publish(outputs.mask_image(labels, header))
            camera.stats.on_published(time.monotonic() - received)
            publishers["confidence"].publish(outputs.float_image(segmentation.confidence, header))
            coverage, mean_confidence, max_confidence = outputs.class_statistics(segmentation, labels)
            publishers["class_confidences"].publish(ClassConfidences(
                header=header, vocabulary_version=version, labels=list(segmentation.prompts),
                coverage=coverage, mean_confidence=mean_confidence, max_confidence=max_confidence,
            ))
            if publishers["overlay"].get_subscription_count() > 0:
                publishers["overlay"].publish(outputs.overlay_image(rgb, labels, segmentation.prompts, header))
            for index, token in enumerate(topics.class_topic_tokens(segmentation.prompts)):
                publisher = camera.class_publishers.get(token)
                if publisher is not None and publisher.get_subscription_count() > 0:
                    publisher.publish(outputs.float_image(segmentation.probs[index], header))

    def _publish_diagnostics(self) -> None:
        engine, switcher = self._engine, self._switcher
        if engine is None or switcher is None or self._mailbox is None:
            return
        version, vocabulary = switcher.active
        context = {
            "device": str(engine.device),
            "precision": str(engine.dtype).replace("torch.", ""),
            "vocabulary": ", ".join(vocabulary.names),
            "vocabulary_version": str(version),
            "background_filtering": str(uses_background(vocabulary, self._background(vocabulary))).lower(),
            "random_weights": str(self._random_weights).lower(),
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [
            camera_status(self.get_name(), camera.topic, camera.stats, self._mailbox.dropped(camera.topic), context)
            for camera in list(self._cameras.values())
        ]
        self._diagnostics_publisher.publish(array)


def run(stop: threading.Event, argv: Optional[list[str]] = None) -> int:
    """Run the node until ``stop`` is set; with autostart a failed configure returns status 1.

    Signals only set ``stop`` (see run_node.main): the node is shut down by this thread while the ROS
    context is still valid, so no callback races a dying context and Ctrl-C prints no traceback.
    """
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = ClipDinoiserNode()
    executor = Executor()
    executor.add_node(node)
    status = 0
    try:
        if node.param("autostart"):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                status = 1
            else:
                node.trigger_activate()
        while status == 0 and not stop.is_set():
            # spin_once, never spin(): EventsExecutor.spin() hung at 100 % CPU (rclpy 9.1) as soon as another
            # thread created a publisher, which the vocabulary thread does when the prompts change.
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.on_shutdown(None)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status
