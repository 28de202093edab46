"""Temporal consistency (VSPW's TC) on a synthetic sequence with known motion: 1.0 for a predictor that
follows the scene, the value the geometry gives for one that lags a frame behind changing motion."""
import numpy as np
import pytest

from clip_dinoiser_ros.evaluation.temporal import TemporalConsistency

STRIPE = 20  # vertical stripes of two classes, 20 px wide: a shift by d px leaves IoU (20 - d) / (20 + d)
SHIFTS = [0, 3, 7, 2, 6, 4, 9, 1]  # horizontal position of the scene per frame (pixels): motion changes


def scene(height: int = 96, width: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """A textured canvas wider than the frames, and its stripe labels."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height // 4, (width + 64) // 4), dtype=np.uint8)
    canvas = np.kron(texture, np.ones((4, 4), np.uint8))  # 4x4 blocks: texture DIS can follow
    labels = ((np.arange(canvas.shape[1]) // STRIPE) % 2).astype(np.int32)
    return canvas, np.broadcast_to(labels, canvas.shape).copy()


def frames(shifts):
    canvas, labels = scene()
    width = canvas.shape[1] - 64
    for shift in shifts:  # the camera pans: frame t shows the canvas from column `shift`
        yield canvas[:, shift:shift + width], labels[:, shift:shift + width]


def true_flow(previous_shift: int, shift: int, shape) -> np.ndarray:
    flow = np.zeros((*shape, 2), np.float32)
    flow[..., 0] = shift - previous_shift  # a current pixel x shows what the previous frame had at x + motion
    return flow


@pytest.mark.parametrize("estimated", [True, False], ids=["DIS flow", "true flow"])
def test_a_predictor_that_follows_the_scene_scores_1(estimated):
    consistency = TemporalConsistency(num_classes=2)
    previous = None
    for shift, (grey, labels) in zip(SHIFTS, frames(SHIFTS)):
        flow = None if estimated or previous is None else true_flow(previous, shift, labels.shape)
        consistency.add(grey, labels, flow)
        previous = shift
    assert len(consistency.per_pair) == len(SHIFTS) - 1
    assert consistency.score == pytest.approx(1.0, abs=1e-3)


def test_a_predictor_one_frame_late_scores_what_the_change_of_motion_costs():
    """At frame t it outputs frame t-1's labels: off by the change of motion between the two pairs."""
    estimated, exact = TemporalConsistency(num_classes=2), TemporalConsistency(num_classes=2)
    sequence = list(frames(SHIFTS))
    for t in range(1, len(SHIFTS)):
        grey, late = sequence[t][0], sequence[t - 1][1]
        estimated.add(grey, late)
        exact.add(grey, late, true_flow(SHIFTS[t - 1], SHIFTS[t], late.shape))
    offsets = [abs((SHIFTS[t] - SHIFTS[t - 1]) - (SHIFTS[t - 1] - SHIFTS[t - 2])) for t in range(2, len(SHIFTS))]
    expected = np.mean([(STRIPE - d) / (STRIPE + d) for d in offsets])
    assert exact.score == pytest.approx(expected, abs=0.01)
    assert estimated.score == pytest.approx(expected, abs=0.02)
    assert estimated.score < 0.8


def test_unlabelled_pixels_and_a_new_size_do_not_count():
    consistency = TemporalConsistency(num_classes=2)
    grey, labels = next(frames([0]))
    assert consistency.add(grey, labels) is None
    assert consistency.add(grey, np.full_like(labels, 255)) is None  # nothing labelled: no pair score
    assert consistency.add(grey[:, :320], labels[:, :320]) is None  # another size: no flow between them
    assert consistency.score is None
