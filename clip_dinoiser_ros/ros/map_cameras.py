"""The mapping node's per-camera inputs: features, registered depth, camera_info and optionally the colour
image, paired by stamp with the segmentation node's synchronizer (PairingOptions) and its guarded inputs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..msg import SegmentationFeatures
from ..pipeline import topics
from ..pipeline.frame_geometry import PairingOptions
from ..pipeline.map_inputs import MapCamera
from .rgbd_inputs import stamped_input

if TYPE_CHECKING:
    from rclpy.lifecycle import LifecycleNode
    from rclpy.qos import QoSProfile


class MapCameraInputs:
    """The subscriptions of one camera, feeding ``on_frame(features, depth, camera_info, colour or None)``;
    ``on_received`` is told of every features message (paired or not)."""

    def __init__(self, node: LifecycleNode, camera: MapCamera, qos: QoSProfile, pairing: PairingOptions,
                 on_frame: Callable[[Any, Image, CameraInfo, Optional[Any]], None],
                 on_received: Callable[[], None], on_refused: Callable[[str], None]) -> None:
        self.camera = camera
        self._subscriptions: list[Any] = []
        kinds = [(SegmentationFeatures, camera.features), (Image, camera.depth), (CameraInfo, camera.camera_info)]
        if camera.image:
            kinds.append((CompressedImage if topics.is_compressed(camera.image) else Image, camera.image))
        sources = []
        for message_type, topic in kinds:
            source, subscription = stamped_input(node, message_type, topic, qos, None, on_refused)
            sources.append(source)
            self._subscriptions.append(subscription)
        sources[0].registerCallback(lambda _: on_received())
        self._synchronizer = pairing.synchronizer(sources)
        self._synchronizer.registerCallback(lambda features, depth, info, colour=None:
                                            on_frame(features, depth, info, colour))

    def destroy(self, node: LifecycleNode) -> None:
        for subscription in self._subscriptions:
            node.destroy_subscription(subscription)
        self._subscriptions.clear()
