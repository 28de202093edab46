"""Nav2's semantic segmentation layer takes the node's outputs as they are, the point cloud included.

The node runs with the parameters the README gives for Nav2 and gets colour, aligned depth and camera_info
from a driver-like camera at 30 Hz (camera_driver: identical stamps, a calibrated camera_info);
this test subscribes exactly as the layer does (ros-navigation/semantic_segmentation_layer,
semantic_segmentation_layer.cpp and segmentation_buffer.cpp), to the topics the README's layer configuration
names: mask, confidence and points with sensor-data QoS, LabelInfo reliable + transient local + keep-all,
depth 5. Then it checks what the layer relies on: LabelInfo before the masks, class names it can map, one
byte per pixel in both images, identical stamps (its exact sync), and a cloud organized at the mask's size
whose points are finite exactly where the depth was valid (it skips the others).
"""
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2
from sensor_msgs_py import point_cloud2
from vision_msgs.msg import LabelInfo

from camera_driver import CameraDriver, Frames
from node_frames import synthetic_rgb
from ros_harness import running_node, wait_until

ROOT = Path(__file__).resolve().parents[1]
LAYER_LABELS_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=5, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)


def readme_configuration() -> tuple[dict, dict]:
    """(the node's parameters, the layer's camera source) from the README's Nav2 section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Nav2"):readme.index("## Building")]
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    node_block = next(b for b in blocks if isinstance(b, dict) and "image_topics" in b.get("/**", {}).get(
        "ros__parameters", {}))
    layer_block = next(b for b in blocks if isinstance(b, dict) and "semantic_segmentation_layer" in b)
    return node_block["/**"]["ros__parameters"], layer_block["semantic_segmentation_layer"]["camera"]


@pytest.fixture(scope="module")
def configured(ros, tmp_path_factory):
    parameters, layer = readme_configuration()
    with running_node(tmp_path_factory.mktemp("nav2"), {
        **parameters, "clip_model": "ViT-Tiny-16-test", "random_weights": True,
    }) as node:
        yield node, parameters, layer


def test_the_layer_takes_the_outputs_as_they_are(configured, probe):
    node, parameters, layer = configured
    wait_until(lambda: probe.node.count_publishers(layer["labels_topic"]) > 0, 60, "the node's label_info")
    labels = probe.collect(LabelInfo, layer["labels_topic"], LAYER_LABELS_QOS)  # the layer starts after the node
    masks = probe.collect(Image, layer["segmentation_topic"], qos_profile_sensor_data)
    confidences = probe.collect(Image, layer["confidence_topic"], qos_profile_sensor_data)
    clouds = probe.collect(PointCloud2, layer["pointcloud_topic"], qos_profile_sensor_data)
    depth = np.full((120, 160), 1500, np.uint16)
    depth[:, :40] = 0  # no depth there: the layer must find NaN
    depth[60:, 100:] = 2400
    driver = CameraDriver(probe.node, "/camera", Frames([synthetic_rgb(160, 120)], [depth], (140.0, 140.0, 79.5, 59.5)),
                          colour_frame="camera_color_optical_frame", depth_frame="camera_depth_optical_frame",
                          topics=(parameters["image_topics"][0], parameters["depth_topics"][0],
                                  "/camera/color/camera_info"))

    def by_stamp(collector):
        return {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in collector.matching(lambda m: True)}

    def synchronised():
        assert node.alive(), node.log()
        scores, points = by_stamp(confidences), by_stamp(clouds)
        found = [(m, scores[key], points[key]) for key, m in by_stamp(masks).items()
                 if key in scores and key in points]
        return found[0] if found else None

    with driver:
        mask, confidence, cloud = wait_until(synchronised, 60, "a mask, confidence and cloud with the same stamp",
                                             interval=0.1)

    # LabelInfo came first, and the layer can map the classes its configuration names.
    (info, info_arrival), = labels.messages
    assert info_arrival <= masks.messages[0][1]
    class_ids = {vision_class.class_name: vision_class.class_id for vision_class in info.class_map}
    configured_classes = [name for kind in layer["class_types"] for name in layer[kind]["classes"]]
    assert set(configured_classes) <= set(class_ids), f"{configured_classes} not all in {class_ids}"
    assert info.threshold == pytest.approx(parameters["confidence_threshold"])

    # One byte per pixel, rows without padding: the layer indexes data[v * width + u] in both images.
    assert mask.header == confidence.header and mask.header.frame_id == "camera_color_optical_frame"
    for image in (mask, confidence):
        assert (image.encoding, image.width, image.height, image.step) == ("mono8", 160, 120, 160)
        assert len(image.data) == image.width * image.height
    ids = np.frombuffer(bytes(mask.data), np.uint8)
    assert set(np.unique(ids)) <= set(class_ids.values()) | {255}
    scores = np.frombuffer(bytes(confidence.data), np.uint8)
    threshold = round(255 * parameters["confidence_threshold"])
    assert (scores[ids == 255] <= threshold).all() and (scores[ids != 255] >= threshold - 1).all()

    # The cloud: organized like the mask, stamped like it, finite exactly where the depth was valid.
    assert (cloud.height, cloud.width) == (mask.height, mask.width)
    assert cloud.header.stamp == mask.header.stamp and cloud.header.frame_id == "camera_depth_optical_frame"
    z = point_cloud2.read_points(cloud, field_names=("z",), skip_nans=False)["z"].reshape(120, 160)
    assert (np.isfinite(z) == (depth > 0)).all()
    assert np.allclose(z[depth > 0], depth[depth > 0] / 1000.0)
    label = point_cloud2.read_points(cloud, field_names=("label",), skip_nans=False)["label"].reshape(120, 160)
    mask_ids = ids.reshape(120, 160)
    assert (label == np.where(mask_ids == 255, 65535, mask_ids.astype(np.uint16))).all()
