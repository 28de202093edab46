"""The ``clip_dinoiser_map`` lifecycle node: the cameras' features fused into an open-vocabulary voxel map.

configure makes the map's settings, the text client and the services (~/query, ~/set_keepout, ~/save,
~/load: a configured node answers them); activate subscribes to the cameras and TF and publishes the
latched semantic_map/points and semantic_map/grid (MapActivation); cleanup drops the map. The map itself is
made by the first frame (its feature length is the frames') or by ~/load. Texts (the prompts, keep-out and
query texts) are embedded by the segmentation node's ~/encode_texts, awaited by coroutines on this node's
SingleThreadedExecutor (see text_client), so one model serves the robot and nothing here waits on it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from ..mapping import MapSettings, VoxelMap
from ..mapping.keepout import competing_texts, keepout_projection, keepout_texts
from ..mapping.projection import project_max
from ..mapping.query import query
from ..model.vocabulary import BACKGROUND_PROMPT, parse_prompt
from ..pipeline.map_inputs import MapFrame
from ..pipeline.map_messages import map_cloud, occupancy_grid
from ..srv import MapFile, QueryMap, SetKeepout
from .diagnostics import LOG_THROTTLE_S, diagnostic_status
from .map_activation import MapActivation
from .map_parameters import MAP_PARAMETERS, MAP_SETTING_NAMES, MAP_SPECS
from .map_services import answer_query, load_into, save_from
from .parameters import REACTIVATE, RECONFIGURE, refusals, run_time_refusals
from .text_client import TextClient, TextsRefused

NODE_NAME = "clip_dinoiser_map"


@dataclass(frozen=True)
class MapTexts:
    """The embedded texts of the cloud's labels and the grid: the prompts, then the keep-out texts no prompt
    names (mapping.keepout.competing_texts)."""

    prompts: tuple[str, ...]
    keepout: tuple[str, ...]
    embeddings: np.ndarray
    keepout_indices: tuple[int, ...]

    @property
    def background_index(self) -> Optional[int]:
        """0 when prompt 0 is "background", as the segmentation node's background auto."""
        return 0 if parse_prompt(self.prompts[0]).name.casefold() == BACKGROUND_PROMPT else None


class MappingNode(LifecycleNode):
    def __init__(self, stop: Optional[threading.Event] = None, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in MAP_PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self.refused_at_start = self._refuse_bad_start_values()
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.stop_requested = stop or threading.Event()
        self.finalized = False
        self.group = ReentrantCallbackGroup()  # the text client and every callback that awaits it
        self.settings: Optional[MapSettings] = None
        self.voxel_map: Optional[VoxelMap] = None
        self.map_version = 0  # grows with every frame integrated and every map loaded
        self.texts: Optional[MapTexts] = None
        self.texts_version = 0
        self.keepout: tuple[str, ...] = ()
        self.text_client: Optional[TextClient] = None
        self.texts_problem = "not requested yet"
        self._refreshing = False
        self._map_services: list[Any] = []  # not _services: that is rclpy Node's list of every service it runs
        self._activation: Optional[MapActivation] = None
        self._diagnostics_publisher = None
        self._diagnostics_timer = None

    # ---------------------------------------------------------------- parameters
    def param(self, name: str) -> Any:
        return MAP_SPECS[name].normalise(self.get_parameter(name).value)

    def _values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in MAP_PARAMETERS}

    def _refuse_bad_start_values(self) -> dict[str, str]:
        values = self._values()
        refused = refusals(values, values, MAP_SPECS)
        if refused:
            self.set_parameters([Parameter(name, value=MAP_SPECS[name].default) for name in refused])
        return refused

    def _validate_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        refused = run_time_refusals({p.name: p.value for p in parameters}, self._values(), MAP_SPECS)
        return SetParametersResult(successful=not refused, reason="; ".join(refused.values()))

    def _apply_parameters(self, parameters: list[Parameter]) -> None:
        for parameter in parameters:
            if parameter.name not in MAP_SPECS:
                continue
            self.refused_at_start.pop(parameter.name, None)
            applies = MAP_SPECS[parameter.name].applies
            if applies == REACTIVATE:
                self.get_logger().info(f"{parameter.name} takes effect on the next activate")
            elif applies == RECONFIGURE:
                self.get_logger().warning(f"{parameter.name} takes effect on the next configure (deactivate, "
                                          "cleanup, configure, activate: the map in memory is dropped)")

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.refused_at_start:
            self.get_logger().error(f"configure refused until these start-up values are set to allowed ones: "
                                    f"{'; '.join(self.refused_at_start.values())}")
            return TransitionCallbackReturn.FAILURE
        try:
            self.settings = MapSettings(**{name: self.param(name) for name in MAP_SETTING_NAMES})
        except ValueError as error:
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.text_client = TextClient(self, self.param("encode_texts_service"), self.group)
        self._map_services = [
            self.create_service(QueryMap, "~/query", self._handle_query, callback_group=self.group),
            self.create_service(SetKeepout, "~/set_keepout", self._handle_set_keepout, callback_group=self.group),
            self.create_service(MapFile, "~/save", lambda q, r: save_from(self, q, r)),
            self.create_service(MapFile, "~/load", lambda q, r: load_into(self, q, r)),
        ]
        self.get_logger().info(f"configured: {self.settings.voxel_size} m voxels, budget {self.settings.budget} "
                               f"(the feature length comes with the first frame); text embeddings from "
                               f"{self.text_client.service}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._activation = MapActivation(self, self._tick)
        except Exception as error:  # nothing of a failed activation stays behind (MapActivation cleans up)
            self.get_logger().error(f"activate failed, staying inactive: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics,
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"active: mapping {self._activation.cameras} into {self.param('map_frame')!r}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_activation()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Optional[LifecycleState]) -> TransitionCallbackReturn:
        self._stop_activation()
        self._release()
        if state is not None:
            self.finalized = True
            self.stop_requested.set()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in {state.label}: releasing the activation and the map")
        self._stop_activation()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_activation(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self.destroy_publisher(self._diagnostics_publisher)
            self._diagnostics_timer = self._diagnostics_publisher = None
        if self._activation is not None:
            self._activation.stop()
            self._activation = None

    def _release(self) -> None:
        for service in self._map_services:
            self.destroy_service(service)
        self._map_services.clear()
        if self.text_client is not None:
            self.text_client.destroy()
            self.text_client = None
        self.voxel_map, self.texts, self.settings = None, None, None

    # ---------------------------------------------------------------- the map
    def integrate(self, frame: MapFrame, pose: np.ndarray) -> None:
        """Fuse one posed frame; the first one makes the map with its feature length."""
        features = frame.features
        if self.voxel_map is None:
            self.voxel_map = VoxelMap(replace(self.settings, feature_dim=features.features.shape[0]))
        self.voxel_map.integrate(frame.depth_m, frame.camera, pose, features.features, features.objectness,
                                 frame.colour, features.grid, frame.stamp)
        self.map_version += 1

    def replace_map(self, voxel_map: VoxelMap) -> None:
        self.voxel_map = voxel_map
        self.map_version += 1

    # ---------------------------------------------------------------- texts
    async def refresh_texts(self, prompts: tuple[str, ...], keepout: tuple[str, ...]) -> None:
        """Embed the prompts and keep-out texts; kept unless newer ones were asked meanwhile. Raises TextsRefused."""
        self._refreshing = True
        try:
            texts, indices = competing_texts(prompts, keepout)
            embeddings = await self.text_client.embeddings(texts, self.param("encode_timeout_s"))
        finally:
            self._refreshing = False
        if (tuple(self.param("prompts")), self.keepout) == (prompts, keepout):
            self.texts = MapTexts(prompts, keepout, embeddings, tuple(indices))
            self.texts_version += 1
            self.texts_problem = ""

    async def _refresh_in_background(self, prompts: tuple[str, ...], keepout: tuple[str, ...]) -> None:
        try:
            await self.refresh_texts(prompts, keepout)
        except TextsRefused as error:
            self.texts_problem = str(error)
            self.get_logger().warning(f"labels not updated: {error}", throttle_duration_sec=LOG_THROTTLE_S)

    def _request_texts(self) -> None:
        """Start embedding the prompts and keep-out texts when they changed (and nothing is under way)."""
        wanted = (tuple(self.param("prompts")), self.keepout)
        texts = self.texts
        if self._refreshing or (texts is not None and (texts.prompts, texts.keepout) == wanted):
            return
        if not self.text_client.ready():
            self.texts_problem = f"waiting for {self.text_client.service}"
            return
        self.executor.create_task(self._refresh_in_background(*wanted))

    async def _handle_set_keepout(self, request: SetKeepout.Request, response: SetKeepout.Response) -> Any:
        try:
            keepout = tuple(keepout_texts(request.query))
        except ValueError as error:
            response.success, response.message = False, str(error)
            return response
        previous, self.keepout = self.keepout, keepout
        if keepout:
            try:
                await self.refresh_texts(tuple(self.param("prompts")), keepout)
            except TextsRefused as error:
                self.keepout = previous
                response.success, response.message = False, f"keep-out unchanged: {error}"
                return response
        response.success = True
        response.message = f"semantic_map/grid shows {' + '.join(keepout)}" if keepout else "keep-out cleared"
        return response

    async def _handle_query(self, request: QueryMap.Request, response: QueryMap.Response) -> Any:
        return await answer_query(self, request, response)

    # ---------------------------------------------------------------- outputs
    def header(self) -> Header:
        return Header(frame_id=self.param("map_frame"), stamp=self.get_clock().now().to_msg())

    def _tick(self) -> None:
        self._request_texts()
        activation, voxel_map, texts = self._activation, self.voxel_map, self.texts
        if activation is None or voxel_map is None:
            return
        cloud_state = (self.map_version, self.texts_version)
        if activation.published.cloud != cloud_state:
            activation.points.publish(self._cloud(voxel_map, texts))
            activation.published.cloud = cloud_state
        grid_ready = not self.keepout or (texts is not None and texts.keepout == self.keepout)
        grid_state = (self.map_version, self.texts_version if self.keepout else 0, self.keepout)
        if grid_ready and activation.published.grid != grid_state:
            activation.grid.publish(occupancy_grid(self._ground(voxel_map, texts), self.header()))
            activation.published.grid = grid_state

    def _cloud(self, voxel_map: VoxelMap, texts: Optional[MapTexts]) -> Any:
        rows = voxel_map.rows
        labels, confidence = None, np.zeros(rows.size, np.float32)
        if texts is not None:
            try:
                answer = query(voxel_map, texts.embeddings[:len(texts.prompts)], texts.background_index,
                               self.param("delta"))
                labels, confidence = answer.labels, answer.scores
            except ValueError as error:  # the embeddings do not fit the map (another model)
                self.get_logger().warning(f"semantic_map/points unlabelled: {error}",
                                          throttle_duration_sec=LOG_THROTTLE_S)
        return map_cloud(voxel_map.centres(rows), voxel_map.slots["colour"][rows], labels, confidence, self.header())

    def _ground(self, voxel_map: VoxelMap, texts: Optional[MapTexts]) -> Any:
        if self.keepout:
            return keepout_projection(voxel_map, texts.embeddings, texts.keepout_indices, texts.background_index)
        keys = voxel_map.slots["keys"][voxel_map.rows]
        return project_max(keys, np.zeros(keys.size, np.float32), voxel_map.settings.voxel_size)

    def _publish_diagnostics(self) -> None:
        activation = self._activation
        if activation is None:
            return
        stats, voxel_map = activation.stats, self.voxel_map
        values = {
            "voxels": str(0 if voxel_map is None else len(voxel_map)),
            "memory_bytes": str(0 if voxel_map is None else voxel_map.nbytes),
            "frames_received": str(stats.received),
            "frames_integrated": str(stats.integrated),
            "frames_unpaired": str(stats.received - stats.paired),
            "frames_refused": str(stats.refused),
            "tf_failures": str(stats.tf_failures),
            "integration_ms_last": f"{stats.last_integration_ms:.1f}",
            "integration_ms_mean": f"{stats.mean_integration_ms:.1f}",
            "map_frame": self.param("map_frame"),
            "prompts": ", ".join(self.param("prompts")),
            "keepout": " | ".join(self.keepout),
            "last_tf_error": stats.last_tf_error,
            "last_error": stats.last_error,
        }
        level, message = DiagnosticStatus.OK, "ok"
        if self.texts_problem:
            level, message = DiagnosticStatus.WARN, f"prompts not embedded: {self.texts_problem}"
        if stats.tf_failures and not stats.integrated:
            level, message = DiagnosticStatus.WARN, f"no frame had a transform to {self.param('map_frame')!r}: {stats.last_tf_error}"
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(diagnostic_status(level, f"{self.get_fully_qualified_name()}: map", message, "", values))
        self._diagnostics_publisher.publish(array)
