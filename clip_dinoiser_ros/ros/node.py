"""The ``clip_dinoiser`` lifecycle node: parameters and lifecycle; frames go through the frame pipeline.

configure loads the model and the first vocabulary, activate starts an Activation (subscriptions,
publishers and the inference worker, all or nothing), deactivate stops it, cleanup frees the model.
Every transition says why it failed and none waits long: a frame being segmented or a vocabulary
being encoded is given a few seconds, then left behind. Prompt changes are encoded off the frame path
(VocabularySwitcher) with version numbers that only grow for the life of the process. torch is
imported at configure, so a refused start-up value is reported before the model libraries load.
"""
from __future__ import annotations

import gc
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from ..model.vocabulary import uses_background
from ..pipeline import topics
from ..pipeline.frame_geometry import PairingOptions
from ..pipeline.frame_pipeline import FrameSettings, VersionedVocabulary, effective_background
from .text_service import TextEncodingService
from .torch_threads import Interrupted, run_on_short_lived_thread
from .vocabulary_switcher import VocabularySwitcher
from ..srv import SetPrompts
from ..visualization import RANDOM_NOTICE
from .diagnostics import VocabularyHealth
from .parameters import PARAMETERS, REACTIVATE, RECONFIGURE, SPECS, refusals, run_time_refusals
from .activation import LOG_THROTTLE_S, InputSettings, LiveSettings, Activation

if TYPE_CHECKING:
    import numpy as np

    from ..model import ClipDinoiser, Vocabulary

__all__ = ["ClipDinoiserNode", "LOG_THROTTLE_S", "NODE_NAME"]

NODE_NAME = "clip_dinoiser"


class ClipDinoiserNode(LifecycleNode):
    def __init__(self, stop: Optional[threading.Event] = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.refused_at_start = self._refuse_bad_start_values()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.stop_requested = stop or threading.Event()  # set by signals, and by the shutdown transition
        self.finalized = False  # the shutdown transition ran: the process should end
        self._versions = itertools.count(1)  # vocabulary versions: never reused, across cleanup/configure too
        self._engine: Optional[ClipDinoiser] = None
        self._switcher: Optional[VocabularySwitcher] = None
        self._vocabulary_service = None
        self._vocabulary_health = VocabularyHealth()
        self._activation: Optional[Activation] = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None
        self._random_weights = False
        self._text_service = TextEncodingService(self, self._encode_texts)  # answers (refuses) unconfigured too

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
        refused = run_time_refusals({p.name: p.value for p in parameters}, self._values())
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
            elif applies == REACTIVATE:
                self.get_logger().info(f"{name} takes effect on the next activate")
            elif applies == RECONFIGURE:
                self.get_logger().warning(
                    f"{name} takes effect on the next configure (deactivate, cleanup, configure, activate)"
                )

    def live_settings(self) -> LiveSettings:
        batch = self.param("batch_cameras")
        engine = self._engine
        return LiveSettings(
            frame=FrameSettings(mode=self.param("mode"), short_side=self.param("short_side"),
                                background=self.param("background"),
                                threshold=self.param("confidence_threshold"),
                                confidence_encoding=self.param("confidence_encoding"),
                                max_depth_m=self.param("max_depth_m"),
                                min_object_pixels=self.param("min_object_pixels")),
            max_rate_hz=self.param("max_rate_hz"),
            max_image_pixels=self.param("max_image_pixels"),
            depth_scale=self.param("depth_scale"),
            batch=batch == "on" or (batch == "auto" and engine is not None and engine.device.type == "cuda"),
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
        try:
            return self._configure()
        except Interrupted:
            self.get_logger().warning("configure interrupted: the node is stopping")
        except Exception as error:  # any failure: say which and why, keep nothing of it
            self.get_logger().error(f"configure failed: {type(error).__name__}: {error}")
        self._release_model()
        return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        from ..model.build import EngineSettings, build_engine  # torch and open_clip load here

        settings = EngineSettings(**{name: self.param(name) for name in EngineSettings.__dataclass_fields__})
        prompts = self.param("prompts")
        self.get_logger().debug(f"configuring {settings} with prompts {prompts}")
        started = time.monotonic()
        stopping = self.stop_requested.is_set
        self._engine = run_on_short_lived_thread(lambda: build_engine(settings), "model-loader", stopping)
        vocabulary = run_on_short_lived_thread(lambda: self._encode_prompts(prompts, stopping),
                                               "vocabulary-encoder", stopping)
        self._random_weights = settings.random_weights
        version = next(self._versions)
        self._switcher = VocabularySwitcher(
            self._encode_prompts, self._on_vocabulary_ready, self._on_vocabulary_error,
            initial=(version, vocabulary), initial_prompts=prompts, versions=self._versions,
        )
        self._vocabulary_service = self.create_service(SetPrompts, "~/set_prompts", self._handle_set_prompts)
        self.get_logger().info(
            f"configured {settings.clip_model} ({settings.templates} templates) on {self._engine.device} "
            f"({self._engine.dtype}, {self._engine.runs_on}) in {time.monotonic() - started:.1f} s; "
            f"vocabulary v{version}: {list(vocabulary.names)}{self._texts_so_far()}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            plans = topics.plan_cameras(self.param("image_topics"), self.resolve_topic_name,
                                        self.param("depth_topics"), self.param("camera_info_topics"))
            self._activation = Activation(self, self._engine, plans, self.live_settings, self._active_vocabulary,
                                        self._seconds_now)
            pairing = PairingOptions(self.param("sync_wait_s"), self.param("sync_queue_size"), self.param("sync"),
                                     self.param("sync_slop_s"))
            self._activation.start(InputSettings(self.param("input_reliability"), pairing))
            self._start_diagnostics()
        except Exception as error:  # nothing of a failed activation may stay behind
            self._stop_activation()
            self.get_logger().error(f"activate failed, staying inactive: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        if self._random_weights:
            self.get_logger().warning(RANDOM_NOTICE)
        self.get_logger().info(f"active on {self._activation.inputs}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_activation()
        self.get_logger().info("inactive: subscriptions and outputs released, the model stays loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        self.get_logger().info("unconfigured: the model is released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Optional[LifecycleState]) -> TransitionCallbackReturn:
        self._text_service.close()
        self._stop_activation()
        self._release_model()
        if state is not None:  # the transition (not the process ending): the process ends too, status 0
            self.finalized = True
            self.stop_requested.set()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: free everything and go back to unconfigured, from whatever state."""
        self.get_logger().error(f"error while in {state.label}: releasing the activation and the model")
        self._stop_activation()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def _start_diagnostics(self) -> None:
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # A steady clock: diagnostics keep their 1 Hz under use_sim_time, paused bags included.
        self._diagnostics_timer = self.create_timer(
            1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )

    def _stop_activation(self) -> None:
        """Undo ``on_activate``, however far it got; a frame still being segmented is left behind."""
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_publisher is not None:
            self.destroy_publisher(self._diagnostics_publisher)
            self._diagnostics_publisher = None
        activation = self._activation
        if activation is None:
            return
        finished = activation.stop()  # when it raises, on_error finds it here and stops it again
        self._activation = None
        if not finished:
            self.get_logger().warning("a frame was still being segmented: its outputs are discarded")

    def _release_model(self) -> None:
        switcher, self._switcher = self._switcher, None
        if switcher is not None and not switcher.close():
            self.get_logger().warning("a vocabulary was still being encoded: it is abandoned")
        if self._vocabulary_service is not None:
            self.destroy_service(self._vocabulary_service)
            self._vocabulary_service = None
        device = self._engine.device if self._engine is not None else None
        if self._engine is not None:
            self._engine.close()  # an ONNX export running in a child process is terminated
        self._engine = None
        gc.collect()
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- prompts
    def _active_vocabulary(self) -> VersionedVocabulary:
        version, vocabulary = self._switcher.active
        return VersionedVocabulary(version, vocabulary)

    def _encode_prompts(self, prompts: list[str], cancelled: Callable[[], bool]) -> Vocabulary:
        engine = self._engine
        if engine is None:
            raise RuntimeError("the model is not loaded")
        return engine.encode_prompts(prompts, cancelled, max_prompts=self.param("max_prompts"),
                                     max_length=self.param("max_prompt_length"))

    def _encode_texts(self, texts: Sequence[str], cancelled: Callable[[], bool]) -> tuple[np.ndarray, float]:
        """~/encode_texts: one unit vector per text, with the prompts' templates, limits and embedding cache."""
        if self._engine is None:
            raise RuntimeError("the node is not configured: its model loads at configure")
        from ..model.guided_pooling import LOGIT_SCALE  # torch: loaded with the engine

        return self._encode_prompts(list(texts), cancelled).class_embeddings().numpy(), LOGIT_SCALE

    def _on_vocabulary_ready(self, version: int, vocabulary: Vocabulary) -> None:
        self.get_logger().info(f"vocabulary v{version} active: {list(vocabulary.names)}{self._texts_so_far()}")
        self._on_executor(lambda: self._sync_class_topics(VersionedVocabulary(version, vocabulary)))

    def _texts_so_far(self) -> str:
        """How many prompt texts the model's embedding cache spared it: a restart with known prompts encodes none."""
        engine = self._engine
        if engine is None:
            return ""
        encoder = engine.prompt_encoder
        return f" (prompt texts since start: {encoder.restored_texts} from the embedding cache, " \
               f"{encoder.encoded_texts} encoded)"

    def _sync_class_topics(self, active: VersionedVocabulary) -> None:
        activation = self._activation
        if activation is not None:
            activation.sync_class_publishers(active)

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

    # ---------------------------------------------------------------- diagnostics
    def _seconds_now(self) -> float:
        """The node's clock: under use_sim_time, max_rate_hz counts in the played bag's time."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish_diagnostics(self) -> None:
        engine, switcher, activation = self._engine, self._switcher, self._activation
        if engine is None or switcher is None or activation is None:
            return
        version, vocabulary = switcher.active
        background = effective_background(self.param("background"), vocabulary)
        context = {
            "device": str(engine.device),
            "precision": str(engine.dtype).replace("torch.", ""),
            "backend": engine.runs_on,  # the execution provider a session says it runs on, not the one asked for
            **({} if engine.graph_status is None else {"onnx_graphs": engine.graph_status}),
            "vocabulary": ", ".join(vocabulary.names),
            "vocabulary_version": str(version),
            "background_filtering": str(uses_background(vocabulary, background)).lower(),
            "random_weights": str(self._random_weights).lower(),
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        name = self.get_fully_qualified_name()
        array.status = activation.statuses(name, context)
        array.status.append(self._vocabulary_health.status(f"{name}: vocabulary", context))
        self._diagnostics_publisher.publish(array)
