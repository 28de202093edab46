"""SegmentationFeatures: FrameFeatures survive the message (fp16, patch-major), a message that does not describe
itself consistently is refused with the field named, and the frame pipeline asks the engine for features only
for frames that want them, in the one mode that has a single patch grid."""
from dataclasses import replace

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from clip_dinoiser_ros.pipeline.feature_messages import features_message, frame_features
from clip_dinoiser_ros.pipeline.frame_pipeline import CameraFrame, FramePipeline, FrameSettings, VersionedVocabulary
from clip_dinoiser_ros.pipeline.messages import Wanted
from clip_dinoiser_ros.spatial.patch_grid import FrameFeatures, PatchGrid

HEADER = Header(stamp=Time(sec=1_700_000_123, nanosec=456), frame_id="camera_color_optical_frame")
MASK_ONLY = Wanted(False, False, False, False)
FEATURES = replace(MASK_ONLY, features=True)


def frame_of(grid: PatchGrid, channels: int = 16, seed: int = 0) -> FrameFeatures:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(channels, *grid.shape)).astype(np.float32)
    values /= np.linalg.norm(values, axis=0)
    return FrameFeatures(values, rng.uniform(size=grid.shape).astype(np.float32), grid)


@pytest.mark.parametrize("grid", [PatchGrid((480, 640), (448, 597), 16), PatchGrid((97, 61), (112, 70), 16)])
def test_features_survive_the_message_within_float16_rounding(grid):
    features = frame_of(grid)
    message = features_message(features, HEADER, 7, 100.0)
    rows, cols = grid.shape
    assert message.header == HEADER and message.vocabulary_version == 7 and message.logit_scale == 100.0
    assert (message.grid_height, message.grid_width, message.channels) == (rows, cols, 16)
    assert len(message.features) == rows * cols * 16 * 2  # float16
    # patch-major: the bytes of patch (1, 2) are its 16 values, contiguous
    first = (1 * cols + 2) * 16 * 2
    patch = np.frombuffer(bytes(message.features)[first:first + 32], "<f2")
    np.testing.assert_array_equal(patch, features.features[:, 1, 2].astype(np.float16))

    back = frame_features(message)
    assert back.grid == grid
    np.testing.assert_allclose(back.features, features.features, atol=1e-3)  # fp16 of values in [-1, 1]
    np.testing.assert_array_equal(back.objectness, features.objectness)
    assert back.features.dtype == np.float32


def broken(field: str, value):
    message = features_message(frame_of(PatchGrid((60, 80), (48, 64), 16)), HEADER, 1, 100.0)
    setattr(message, field, value)
    return message


@pytest.mark.parametrize("field,value,reason", [
    ("grid_height", 4, r"grid_height x grid_width is 4x4, but a \(48, 64\) resize in 16-pixel patches makes 3x4"),
    ("channels", 8, "features holds 384 bytes, 3x4 patches x 8 channels of float16 need 192"),
    ("channels", 0, "features holds 384 bytes"),
    ("features", b"\x00" * 10, "features holds 10 bytes, 3x4 patches x 16 channels of float16 need 384"),
    ("objectness", [0.5] * 11, "objectness has 11 values, the grid 12 patches"),
    ("patch_size", 0, "patch grid needs positive sizes"),
    ("image_width", 0, "patch grid needs positive sizes"),
])
def test_a_message_that_contradicts_itself_is_refused_naming_the_field(field, value, reason):
    with pytest.raises(ValueError, match=reason):
        frame_features(broken(field, value))


class AskedEngine:
    """The real tiny engine, recording what each call asked for."""

    def __init__(self, engine):
        self.engine, self.asked = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def segment_batch(self, images, **options):
        self.asked.append(("batch", options["features"]))
        return self.engine.segment_batch(images, **options)

    def segment(self, image, **options):
        self.asked.append((options["mode"], options["features"]))
        return self.engine.segment(image, **options)


@pytest.fixture()
def pipeline(tiny_engine):
    tiny_engine.set_prompts(["background", "road", "car"])
    return FramePipeline(AskedEngine(tiny_engine))


def run(pipeline, wanted, mode="whole"):
    rgb = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    frames = [CameraFrame(f"/cam{index}/image_raw", HEADER, rgb, want) for index, want in enumerate(wanted)]
    active = VersionedVocabulary(3, pipeline.engine.vocabulary)
    return pipeline.run(frames, active, FrameSettings(mode=mode, short_side=48))


def test_the_engine_is_asked_for_features_only_when_a_frame_wants_them(pipeline):
    outputs = run(pipeline, [MASK_ONLY, MASK_ONLY])
    assert pipeline.engine.asked == [("batch", False)]
    assert not any(name == "features" for result in outputs for name, _ in result.messages)

    outputs = run(pipeline, [MASK_ONLY, FEATURES])
    assert pipeline.engine.asked[-1] == ("batch", True)
    published = [[message for name, message in result.messages if name == "features"] for result in outputs]
    assert [len(found) for found in published] == [0, 1]  # the camera that asked, and only it
    message = published[1][0]
    assert message.header == HEADER and message.vocabulary_version == 3 and message.logit_scale == 100.0
    assert frame_features(message).grid == PatchGrid((60, 80), (48, 64), pipeline.engine.patch_size)


def test_slide_mode_segments_without_features_and_says_why(pipeline):
    assert pipeline.features_unavailable("whole") is None
    assert "mode 'whole'" in pipeline.features_unavailable("slide")
    outputs = run(pipeline, [FEATURES], mode="slide")
    assert pipeline.engine.asked == [("slide", False)]
    names = [name for name, _ in outputs[0].messages]
    assert "mask" in names and "features" not in names
