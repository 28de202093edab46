"""The ``clip_dinoiser`` lifecycle node: a thin shell that converts messages and calls the engine.

configure loads the model, activate starts subscriptions, publishers and the inference worker (all
or nothing), deactivate stops them, cleanup frees the model. Frames are handed over latest-only
(FrameMailbox), prompt changes are encoded off the frame path (VocabularySwitcher), and whatever
creates or destroys publishers runs on the executor's thread. torch is imported at configure, so a
refused start-up value is reported before the model libraries load.
"""
from __future__ import annotations

import gc
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rcl_interfaces.msg import SetParametersResult
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import LabelInfo

try:  # rclpy >= 9 (Kilted): waits and dispatches in C++, so the inference thread rarely waits for the GIL
    from rclpy.experimental import EventsExecutor as Executor
except ImportError:  # older rclpy
    from rclpy.executors import SingleThreadedExecutor as Executor

from ..model.errors import CheckpointError, WeightsUnavailableError
from ..model.vocabulary import BACKGROUND_SETTINGS, uses_background
from ..msg import ClassConfidences
from ..srv import SetPrompts
from ..visualization import RANDOM_NOTICE
from . import outputs, topics
from .diagnostics import CameraStats, VocabularyHealth, camera_status
from .frame_mailbox import Frame, FrameMailbox
from .image_codec import ImageDecodeError, compressed_to_rgb, image_to_rgb
from .outputs import Wanted
from .parameters import LIVE, PARAMETERS, REACTIVATE, SPECS, refusals
from .torch_threads import run_on_short_lived_thread
from .vocabulary_switcher import VocabularySwitcher

if TYPE_CHECKING:
    import numpy as np

    from ..model import Segmentation, Vocabulary

NODE_NAME = "clip_dinoiser"
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
# Like camera_info: a late subscriber (Nav2's layer: reliable, transient local) gets the current map at once.
LABEL_INFO_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
LOG_THROTTLE_S = 2.0


@dataclass
class Camera:
    """One input topic and everything published for it."""

    names: topics.CameraTopics
    stats: CameraStats = field(default_factory=CameraStats)
    publishers: dict[str, Any] = field(default_factory=dict)
    class_publishers: dict[str, Any] = field(default_factory=dict)
    subscription: Any = None

    @property
    def topic(self) -> str:
        return self.names.input


class ClipDinoiserNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.refused_at_start = self._refuse_bad_start_values()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._engine = None
        self._switcher: Optional[VocabularySwitcher] = None
        self._vocabulary_service = None
        self._vocabulary_health = VocabularyHealth()
        self._cameras: dict[str, Camera] = {}
        self._mailbox: Optional[FrameMailbox] = None
        self._worker: Optional[threading.Thread] = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None
        self._outputs_lock = threading.RLock()
        self._random_weights = False

    # ---------------------------------------------------------------- parameters
    def param(self, name: str) -> Any:
        return SPECS[name].normalise(self.get_parameter(name).value)

    def _values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}

    def _refuse_bad_start_values(self) -> dict[str, str]:
        """Check what params files, ``-p`` and launch set; refused values fall back to their defaults.

        The parameters were declared with dynamic typing, so rclpy took every value as it came.
        """
        values = self._values()
        refused = refusals(values, values)
        if refused:
            self.set_parameters([Parameter(name, value=SPECS[name].default) for name in refused])
        return refused

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        refused = refusals({p.name: p.value for p in parameters}, self._values())
        return SetParametersResult(successful=not refused, reason="; ".join(refused.values()))

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        for parameter in parameters:
            name = parameter.name
            if name not in SPECS:
                continue
            self.refused_at_start.pop(name, None)
            applies = SPECS[name].applies
            if name == "prompts" and self._switcher is not None:
                prompts = self.param("prompts")
                version = self._switcher.request(prompts)
                if version != self._switcher.active[0]:
                    self.get_logger().info(f"encoding vocabulary v{version}: {prompts}")
            elif name in ("gamma", "delta") and self._engine is not None:
                setattr(self._engine, name, self.param(name))
            elif name == "confidence_threshold" and self._switcher is not None:
                self._publish_label_info()
            elif applies == REACTIVATE:
                self.get_logger().info(f"{name} takes effect on the next activate")
            elif applies != LIVE:
                self.get_logger().warning(
                    f"{name} takes effect on the next configure (deactivate, cleanup, configure, activate)"
                )

    def _on_executor(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the executor's thread (rclpy entities are created and destroyed there only)."""
        executor = self.executor
        if executor is None:
            job()
        else:
            executor.create_task(job)

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.refused_at_start:
            self.get_logger().error(
                f"configure refused until these start-up values are set to allowed ones (ros2 param set): "
                f"{'; '.join(self.refused_at_start.values())}"
            )
            return TransitionCallbackReturn.FAILURE
        from .engine_factory import EngineSettings, build_engine  # torch and open_clip load here

        settings = EngineSettings(**{name: self.param(name) for name in EngineSettings.__dataclass_fields__})
        prompts = self.param("prompts")
        try:
            started = time.monotonic()
            self._engine = run_on_short_lived_thread(lambda: build_engine(settings), "model-loader")
            vocabulary = run_on_short_lived_thread(lambda: self._encode_prompts(prompts), "vocabulary-encoder")
        except (WeightsUnavailableError, CheckpointError, ValueError, TypeError, RuntimeError) as error:
            self._engine = None
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self._random_weights = settings.random_weights
        self._switcher = VocabularySwitcher(
            self._encode_prompts, self._on_vocabulary_ready, self._on_vocabulary_error,
            initial=(1, vocabulary), initial_prompts=prompts,
        )
        self._vocabulary_service = self.create_service(SetPrompts, "~/set_prompts", self._handle_set_prompts)
        self.get_logger().info(
            f"configured {settings.clip_model} on {self._engine.device} ({self._engine.dtype}) in "
            f"{time.monotonic() - started:.1f} s; vocabulary v1: {list(vocabulary.names)}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            plans = topics.plan_cameras(self.param("image_topics"), self.resolve_topic_name)
            self._start_streaming(plans)
        except Exception as error:  # nothing of a failed activation may stay behind
            self._stop_streaming()
            self.get_logger().error(f"activate failed, staying inactive: {error}")
            return TransitionCallbackReturn.FAILURE
        if self._random_weights:
            self.get_logger().warning(RANDOM_NOTICE)
        self.get_logger().info(f"active on {[plan.input for plan in plans]}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self.get_logger().info("inactive: subscriptions and outputs released, the model stays loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        self.get_logger().info("unconfigured: the model is released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_streaming()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def _start_streaming(self, plans: list[topics.CameraTopics]) -> None:
        """Publishers, subscriptions, diagnostics, then the worker; the caller undoes it on any error."""
        self._cameras = {plan.input: Camera(plan) for plan in plans}
        self._mailbox = FrameMailbox(list(self._cameras), clock=self._seconds_now)
        for camera in self._cameras.values():
            self._create_outputs(camera)
        self._publish_label_info()
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
        # A steady clock: diagnostics keep their 1 Hz under use_sim_time, paused bags included.
        self._diagnostics_timer = self.create_timer(
            1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()

    def _stop_streaming(self) -> None:
        """Undo ``_start_streaming``, however far it got."""
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
            self._diagnostics_timer = None
        if self._diagnostics_publisher is not None:
            self.destroy_publisher(self._diagnostics_publisher)
            self._diagnostics_publisher = None
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
            for name, topic in camera.names.outputs.items():
                message_type = {"class_confidences": ClassConfidences, "label_info": LabelInfo}.get(name, Image)
                qos = LABEL_INFO_QOS if name == "label_info" else OUTPUT_QOS
                camera.publishers[name] = self.create_publisher(message_type, topic, qos)

    def _sync_class_publishers(self, camera: Camera, vocabulary: Vocabulary) -> None:
        """One confidence/<class> topic per prompt: new classes appear, removed ones disappear."""
        wanted = set(topics.class_topic_tokens(vocabulary.names))
        for token in set(camera.class_publishers) - wanted:
            self.destroy_publisher(camera.class_publishers.pop(token))
        for token in wanted - set(camera.class_publishers):
            camera.class_publishers[token] = self.create_publisher(
                Image, topics.output_topic(camera.topic, f"confidence/{token}"), OUTPUT_QOS
            )

    def _publish_label_info(self) -> None:
        """The active vocabulary and threshold, to every camera (executor thread: creates publishers)."""
        if self._switcher is None:
            return
        _, vocabulary = self._switcher.active
        header = Header(stamp=self.get_clock().now().to_msg())
        message = outputs.label_info(vocabulary.names, self.param("confidence_threshold"), header)
        with self._outputs_lock:
            for camera in self._cameras.values():
                self._sync_class_publishers(camera, vocabulary)
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
        self._on_executor(self._publish_label_info)

    def _on_vocabulary_error(self, version: int, error: Exception) -> None:
        self._vocabulary_health.on_failed(f"v{version}: {error}")
        self._on_executor(lambda: self._restore_prompts(version, error))

    def _restore_prompts(self, version: int, error: Exception) -> None:
        """After a failed vocabulary, ``prompts`` shows the one in effect again (unless newer work is queued)."""
        switcher = self._switcher
        if switcher is None:
            return
        active_version = switcher.active[0]
        self.get_logger().error(f"vocabulary v{version} failed, keeping v{active_version}: {error}")
        if switcher.requested_version == active_version and self.param("prompts") != switcher.active_prompts:
            self.set_parameters([Parameter("prompts", value=switcher.active_prompts)])

    def _handle_set_prompts(self, request: SetPrompts.Request, response: SetPrompts.Response) -> SetPrompts.Response:
        prompts = list(request.prompts)
        result = self.set_parameters([Parameter("prompts", Parameter.Type.STRING_ARRAY, prompts)])[0]
        response.success = result.successful
        response.message = result.reason if not result.successful else f"encoding {len(prompts)} classes"
        switcher = self._switcher
        if switcher is not None:
            response.vocabulary_version = switcher.requested_version
        return response

    # ---------------------------------------------------------------- frames
    def _on_image(self, camera: Camera, message: Any) -> None:
        camera.stats.on_received()
        mailbox = self._mailbox
        if mailbox is not None:
            mailbox.put(camera.topic, message)

    def _seconds_now(self) -> float:
        """The node's clock: under use_sim_time, max_rate_hz counts in the played bag's time."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _work(self) -> None:
        mailbox = self._mailbox
        while True:
            rate = self.param("max_rate_hz")
            take = mailbox.take_all if self._batching() else mailbox.take_one
            frames = take(min_interval=1.0 / rate if rate > 0 else 0.0, timeout=0.5)
            if not frames:
                if mailbox.closed:
                    return
                continue
            try:
                self._process(frames)
            except Exception as error:  # the worker must outlive any frame
                if not self.context.ok():
                    return  # shutting down (SIGINT): publishers are gone, nothing to report
                cameras = ", ".join(frame.camera for frame in frames)
                self.get_logger().error(f"{cameras}: frame failed: {type(error).__name__}: {error}")

    def _batching(self) -> bool:
        choice = self.param("batch_cameras")
        return choice == "on" or (choice == "auto" and self._engine is not None and self._engine.device.type == "cuda")

    def _process(self, frames: list[Frame]) -> None:
        """Decode every camera's frame, segment them together (one ViT pass per size), publish each."""
        decoded = []
        for frame in frames:
            camera = self._cameras.get(frame.camera)
            rgb = None if camera is None else self._decode(camera, frame.message)
            if rgb is not None:
                decoded.append((camera, frame, rgb, self._wanted(camera)))
        if not decoded:
            return
        version, vocabulary = self._switcher.active
        settings = dict(short_side=self.param("short_side"), background=self._background(vocabulary),
                        vocabulary=vocabulary, probs=any(wanted.class_maps for *_, wanted in decoded))
        results: list[Optional[Segmentation]]
        try:
            if self.param("mode") == "whole":
                results = list(self._engine.segment_batch([rgb for _, _, rgb, _ in decoded], **settings))
            else:
                results = [self._engine.segment(rgb, mode="slide", **settings) for _, _, rgb, _ in decoded]
        except Exception as error:  # noqa: BLE001 - one frame the engine cannot handle: find it, keep the others
            if len(decoded) == 1:
                self._inference_failed(decoded[0][0], error)
                results = [None]
            else:
                results = [self._segment_alone(camera, rgb, settings) for camera, _, rgb, _ in decoded]
        for (camera, frame, rgb, wanted), segmentation in zip(decoded, results):
            if segmentation is not None:
                self._publish(camera, frame.message.header, rgb, segmentation, version, frame.received, wanted)

    def _decode(self, camera: Camera, message: Any) -> Optional[np.ndarray]:
        try:
            decode = compressed_to_rgb if isinstance(message, CompressedImage) else image_to_rgb
            return decode(message, self.param("max_image_pixels"))
        except ImageDecodeError as error:
            camera.stats.on_rejected(str(error))
            self.get_logger().warning(f"{camera.topic}: frame rejected: {error}", throttle_duration_sec=LOG_THROTTLE_S)
            return None

    def _segment_alone(self, camera: Camera, rgb: np.ndarray, settings: dict[str, Any]) -> Optional[Segmentation]:
        try:
            return self._engine.segment(rgb, mode=self.param("mode"), **settings)
        except Exception as error:  # a frame the engine cannot handle must not stop the node
            self._inference_failed(camera, error)
            return None

    def _inference_failed(self, camera: Camera, error: Exception) -> None:
        camera.stats.on_rejected(f"{type(error).__name__}: {error}")
        self.get_logger().error(f"{camera.topic}: inference failed: {error}", throttle_duration_sec=LOG_THROTTLE_S)

    def _wanted(self, camera: Camera) -> Wanted:
        with self._outputs_lock:
            publishers = camera.publishers
            if not publishers:
                return Wanted(False, False, False, False)
            return Wanted(
                confidence=publishers["confidence"].get_subscription_count() > 0,
                class_confidences=publishers["class_confidences"].get_subscription_count() > 0,
                overlay=publishers["overlay"].get_subscription_count() > 0,
                class_maps=any(p.get_subscription_count() > 0 for p in camera.class_publishers.values()),
            )

    def _background(self, vocabulary: Vocabulary) -> Optional[bool]:
        """The background parameter for this vocabulary ('on' needs a class besides class 0)."""
        choice = BACKGROUND_SETTINGS[self.param("background")]
        return False if choice and len(vocabulary) < 2 else choice

    def _publish(self, camera: Camera, header: Any, rgb, segmentation: Segmentation, version: int,
                 received: float, wanted: Wanted) -> None:
        messages = outputs.camera_messages(
            segmentation, rgb, header, version=version, threshold=self.param("confidence_threshold"),
            confidence_encoding=self.param("confidence_encoding"), wanted=wanted,
        )
        with self._outputs_lock:
            publishers = camera.publishers
            if not publishers:
                return
            for name, message in messages.items():
                publishers[name].publish(message)
                if name == "mask":
                    camera.stats.on_published(time.monotonic() - received)
            if segmentation.probs is not None:
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
        name = self.get_fully_qualified_name()
        array.status = [
            camera_status(f"{name}: {camera.topic}", camera.stats.report(), self._mailbox.dropped(camera.topic),
                          context)
            for camera in list(self._cameras.values())
        ]
        array.status.append(self._vocabulary_health.status(f"{name}: vocabulary", context))
        self._diagnostics_publisher.publish(array)


def run(stop: threading.Event, argv: Optional[list[str]] = None) -> int:
    """Run the node until ``stop`` is set; 1 when start-up values are refused or autostart fails.

    Signals only set ``stop`` (see run_node.main): the node is shut down by this thread while the ROS
    context is still valid, so no callback races a dying context and Ctrl-C prints no traceback.
    """
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as error:  # a params file that cannot be read or parsed, a malformed -p
        reason = re.sub(r", at /\S+:\d+", "", str(error).splitlines()[0])
        print(f"[ERROR] [{NODE_NAME}]: cannot start: {reason}", flush=True)
        return 1
    node = ClipDinoiserNode()
    executor = Executor()
    executor.add_node(node)
    status = 0
    try:
        autostart = node.param("autostart")
        if node.refused_at_start:
            node.get_logger().error(
                f"refused start-up values: {'; '.join(node.refused_at_start.values())}"
                + ("" if autostart else "; staying unconfigured until they are set (ros2 param set)")
            )
            status = 1 if autostart else 0
        elif autostart:
            configured = node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            if not configured or node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                status = 1
        while status == 0 and not stop.is_set():
            # spin_once, never spin(): EventsExecutor.spin() hung at 100 % CPU (rclpy 9.1) as soon as another
            # thread created a publisher.
            executor.spin_once(timeout_sec=0.1)
    finally:
        node.on_shutdown(None)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status
