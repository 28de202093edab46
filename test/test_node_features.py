"""<cam>/segmentation/features and ~/encode_texts over real DDS, the node in a process of its own.

Features are made only while somebody subscribes (the node's features_published counter against its
frames_published), carry the image's header and the patch grid of the image, and, scored with the texts'
embeddings from ~/encode_texts, give the labels of the node's own mask. Random weights: this is plumbing and
arithmetic, not segmentation quality.
"""
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from sensor_msgs.msg import Image

from clip_dinoiser_ros.msg import SegmentationFeatures
from clip_dinoiser_ros.pipeline.feature_messages import frame_features
from clip_dinoiser_ros.srv import EncodeTexts
from node_diagnostics import camera_figures
from node_frames import rgb_message, same_header, synthetic_rgb
from ros_harness import NodeProcess, parameter_client, set_parameter, wait_until

CAMERA = "/feat_cam/image_raw"
FEATURES = "/feat_cam/segmentation/features"
MASK = "/feat_cam/segmentation/mask"
PROMPTS = ["road", "car", "tree", "sky", "person"]  # no "background": no background rule to mirror
SHORT_SIDE = 96
WIDTH, HEIGHT = 200, 150
MIN_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def node(ros, tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("features"), {
        "image_topics": [CAMERA], "prompts": PROMPTS, "clip_model": "ViT-Tiny-16-test", "random_weights": True,
        "templates": "simple", "short_side": SHORT_SIDE, "input_reliability": "reliable"})
    try:
        wait_until(lambda: "active on" in node.log() or not node.alive(), 300, "the node active")
        assert node.alive(), node.log()
        yield node
    finally:
        status = node.stop()
    assert status == 0, node.log()


@pytest.fixture(scope="module")
def frames(probe, node):
    publisher = probe.node.create_publisher(Image, CAMERA, 10)
    yield publisher
    probe.node.destroy_publisher(publisher)


@pytest.fixture(scope="module")
def diagnostics(probe, node):
    collector = probe.collect(DiagnosticArray, "/diagnostics")
    yield collector
    probe.node.destroy_subscription(collector.subscription)


def encode(probe, texts):
    client = probe.node.create_client(EncodeTexts, "/clip_dinoiser/encode_texts")
    try:
        return probe.call(client, EncodeTexts.Request(texts=texts), timeout=60.0)
    finally:
        probe.node.destroy_client(client)


def embeddings(answer) -> np.ndarray:
    assert answer.success, answer.message
    return np.asarray(answer.embeddings, np.float32).reshape(-1, answer.dimension)


def counters(diagnostics):
    """(frames_published, features_published) of the camera in the latest report, or None before one."""
    array = diagnostics.last()
    figures = camera_figures(array, [CAMERA])[CAMERA] if array is not None else {}
    if "features_published" not in figures:
        return None
    return int(figures["frames_published"]), int(figures["features_published"])


def keep_sending_until(node, frames, condition, timeout, what):
    def sent_and_checked():
        assert node.alive(), node.log()
        frames.publish(rgb_message(synthetic_rgb(WIDTH, HEIGHT)))
        return condition()

    return wait_until(sent_and_checked, timeout, what, interval=0.3)


def answer_with_features(probe, node, frames):
    """(image message, its mask, its features): a frame sent until both outputs with its header arrived."""
    masks, features = probe.collect(Image, MASK), probe.collect(SegmentationFeatures, FEATURES)
    try:
        image = rgb_message(synthetic_rgb(WIDTH, HEIGHT, seed=5), "feat_optical")

        def both():
            assert node.alive(), node.log()
            frames.publish(image)
            found = [c.matching(lambda m: same_header(m.header, image.header)) for c in (masks, features)]
            return (found[0][0], found[1][0]) if all(found) else None

        mask, feature = wait_until(both, 60, "a mask and features for one frame", interval=0.3)
        return image, mask, feature
    finally:
        for collector in (masks, features):
            probe.node.destroy_subscription(collector.subscription)


def test_no_features_are_made_while_nobody_subscribes(node, probe, frames, diagnostics):
    def announced():  # the publisher exists, unsubscribed, once discovery has found the node
        found = dict(probe.node.get_topic_names_and_types())
        return found.get(FEATURES) == ["clip_dinoiser_ros/msg/SegmentationFeatures"]

    wait_until(announced, 30, f"{FEATURES} announced")
    figures = keep_sending_until(node, frames, lambda: (c := counters(diagnostics)) and c[0] >= 5 and c, 120,
                                 "5 frames published")
    assert figures[1] == 0, "features were made for frames nobody asked them for"


def test_features_carry_the_header_and_the_grid_of_the_image(node, probe, frames):
    image, _, message = answer_with_features(probe, node, frames)
    assert message.header == image.header  # stamp and frame_id unchanged
    assert (message.image_height, message.image_width) == (HEIGHT, WIDTH)
    assert (message.resized_height, message.resized_width) == (SHORT_SIDE, round(WIDTH * SHORT_SIDE / HEIGHT))
    assert message.logit_scale == 100.0
    decoded = frame_features(message)
    assert decoded.features.shape == (message.channels, -(-SHORT_SIDE // 16), -(-128 // 16))
    np.testing.assert_allclose(np.linalg.norm(decoded.features, axis=0), 1.0, atol=2e-3)  # fp16 unit vectors


def test_features_scored_with_encode_texts_give_the_mask_labels_at_patch_centres(node, probe, frames):
    _, mask, message = answer_with_features(probe, node, frames)
    decoded = frame_features(message)
    answer = encode(probe, PROMPTS)
    texts = embeddings(answer)
    assert texts.shape == (len(PROMPTS), message.channels)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    patch_labels = np.einsum("ehw,ke->khw", answer.logit_scale * decoded.features, texts).argmax(axis=0)

    # The mask is the patch probabilities upsampled bilinearly (align_corners=False) to the resized image, then
    # resized to the camera's: at a patch's centre a pixel holds ~97 % its own patch's probabilities, so its
    # label can differ from the patch's only where two classes are within a few per cent there (or fp16
    # rounding of the features flips a near tie). Compare there, for every patch whose centre is on the image.
    labels = np.frombuffer(bytes(mask.data), np.uint8).reshape(mask.height, mask.step)[:, :mask.width]
    grid = decoded.grid
    (height, width), (resized_h, resized_w), size = grid.image_size, grid.resized_size, grid.patch_size
    agree = []
    for row in range(grid.shape[0]):
        for col in range(grid.shape[1]):
            centre = ((row + 0.5) * size, (col + 0.5) * size)
            if centre[0] >= resized_h or centre[1] >= resized_w:
                continue  # a padding patch's centre: no pixel of the image
            pixel = (int(centre[0] * height / resized_h), int(centre[1] * width / resized_w))
            assert grid.patch_of(np.array(pixel[0]), np.array(pixel[1])) == row * grid.shape[1] + col
            agree.append(labels[pixel] == patch_labels[row, col])
    assert len(agree) >= 40 and len(set(patch_labels.ravel())) > 1, "too few patches or classes to compare"
    assert np.mean(agree) >= MIN_AGREEMENT, f"{np.mean(agree):.0%} of {len(agree)} patch centres agree"


def test_encode_texts_averages_synonyms_and_refuses_bad_lists(node, probe):
    car, truck = embeddings(encode(probe, ["car", "truck"]))
    mean = (car + truck) / np.linalg.norm(car + truck)
    np.testing.assert_allclose(embeddings(encode(probe, ["car|truck"]))[0], mean, atol=1e-5)

    refused = {
        "no texts": ([], "must not be empty"),
        "an empty synonym": (["chair|"], "empty synonym"),
        "a text over max_prompt_length": (["x" * 201], "201 characters long"),
        "more than max_prompts texts": ([f"thing {i}" for i in range(101)], "exceed max_prompts=100"),
        "duplicates": (["chair", "Chair"], "duplicate class names"),
    }
    for what, (texts, reason) in refused.items():
        answer = encode(probe, texts)
        assert not answer.success and reason in answer.message, (what, answer.message)
        assert answer.dimension == 0 and len(answer.embeddings) == 0
    assert node.alive(), node.log()


def test_features_stop_when_the_subscriber_goes(node, probe, frames, diagnostics):
    answer_with_features(probe, node, frames)  # subscribed once more, then gone
    reports = []

    def steady():
        figures = counters(diagnostics)
        if figures and (not reports or figures != reports[-1]):
            reports.append(figures)
        # between two reports the frames counter went up by 3 or more while the features counter stayed put
        return any(later[0] >= earlier[0] + 3 and later[1] == earlier[1]
                   for index, earlier in enumerate(reports) for later in reports[index + 1:])

    keep_sending_until(node, frames, steady, 120, "frames published without features after the unsubscribe")


def test_slide_mode_publishes_masks_without_features_and_warns_once(node, probe, frames):
    parameters = parameter_client(probe, "/clip_dinoiser")
    assert set_parameter(parameters, "mode", "slide").successful
    masks, features = probe.collect(Image, MASK), probe.collect(SegmentationFeatures, FEATURES)
    try:
        keep_sending_until(node, frames, lambda: len(masks.messages) >= 3, 120, "3 masks in slide mode")
        assert features.messages == []
        assert node.log().count("segmentation/features has subscribers but gets no messages: mode is 'slide'") == 1
    finally:
        for collector in (masks, features):
            probe.node.destroy_subscription(collector.subscription)
        assert set_parameter(parameters, "mode", "whole").successful


def test_an_unconfigured_node_refuses_to_encode(node, probe):
    client = probe.node.create_client(ChangeState, "/clip_dinoiser/change_state")
    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
        assert probe.call(client, ChangeState.Request(transition=Transition(id=transition))).success
    answer = encode(probe, ["chair"])
    assert not answer.success and "not configured" in answer.message
    assert node.alive(), node.log()


def test_an_encoding_in_progress_never_holds_up_the_node_s_executor(ros, probe):
    """The service runs beside the owner's executor: while an encoding is held, the owner's timer still ticks."""
    import threading

    from rclpy.node import Node

    from clip_dinoiser_ros.model.errors import EncodingCancelled
    from clip_dinoiser_ros.ros.run_node import executor_type
    from clip_dinoiser_ros.ros.text_service import TextEncodingService

    owner, started, release, ticks = Node("texts_owner"), threading.Event(), threading.Event(), []
    owner.create_timer(0.05, lambda: ticks.append(1))
    executor = executor_type()()
    executor.add_node(owner)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin)
    spinner.start()

    def held_encoding(texts, cancelled):
        started.set()
        wait_until(lambda: release.is_set() or cancelled(), 120, "the test to release the encoding")
        if cancelled():  # as the engine's encoder: between two batches
            raise EncodingCancelled("vocabulary encoding cancelled")
        return np.eye(len(texts), 4, dtype=np.float32), 100.0

    service = TextEncodingService(owner, held_encoding)
    client = probe.node.create_client(EncodeTexts, "/texts_owner/encode_texts")
    try:
        assert client.wait_for_service(timeout_sec=30)
        pending = client.call_async(EncodeTexts.Request(texts=["a", "b"]))
        wait_until(lambda: len(ticks) > 0, 30, "the owner's timer")
        before = len(ticks)
        wait_until(lambda: len(ticks) >= before + 5, 30, "the owner's timer ticking during the encoding")
        assert not pending.done()
        release.set()
        wait_until(pending.done, 30, "the answer once released")
        answer = pending.result()
        assert answer.success and answer.dimension == 4 and answer.logit_scale == 100.0
        np.testing.assert_array_equal(np.reshape(answer.embeddings, (2, 4)), np.eye(2, 4))

        release.clear()  # held again, then the service closes (the node shutting down): a refusal, at once
        started.clear()
        pending = client.call_async(EncodeTexts.Request(texts=["c"]))
        wait_until(started.is_set, 30, "the second encoding under way")
        service.close()
        wait_until(pending.done, 30, "the answer to an encoding cut short")
        assert not pending.result().success and "stopping" in pending.result().message
    finally:
        probe.node.destroy_client(client)
        service.close()
        stop.set()
        spinner.join()
        executor.shutdown()
        owner.destroy_node()
