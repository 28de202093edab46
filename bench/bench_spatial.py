"""What the 3D outputs add to a 640x480 frame: camera_info, the labelled cloud and both detections.

Every side runs the node's own ``FramePipeline.outputs`` on one segmentation (the engine's cost is the same
either way, so it is left out): ``mask`` makes the mask alone, as for a planner reading masks; the others
also check and decode the depth and camera_info (``frame_geometry``, as the node does when the frame is
decoded) and make camera_info, points and detections (``cloud+2d``: the issue's set, what a costmap and a
behaviour tree subscribe to), and detections_3d too (``cloud+2d+3d``). The frame is the first real Redwood
RGB-D frame of ../shared/data/rgbd (a generated one without it). Two masks of ``--classes`` classes (5, the
size of the node's default vocabulary), the frame's colours quantised by k-means: ``model-like`` quantises the 37x28 patch grid the ViT sees at short side 448 and
brings it to 640x480 as the engine brings its logits (bilinear, then argmax), which gives regions shaped
like the model's; ``per-pixel`` quantises every pixel, a worst case of hundreds of ragged regions.
Alternating runs, medians.

    PYTHONPATH=. .venv/bin/python bench/bench_spatial.py [--repeats 200] [--classes 5]
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clip_dinoiser_ros.model.engine import Segmentation  # noqa: E402
from clip_dinoiser_ros.pipeline.frame_geometry import frame_geometry  # noqa: E402
from clip_dinoiser_ros.pipeline.frame_pipeline import CameraFrame, FramePipeline, FrameSettings  # noqa: E402
from clip_dinoiser_ros.pipeline.messages import Wanted  # noqa: E402
from node_frames import camera_info_message, depth_message, rgb_message, synthetic_rgb  # noqa: E402
from timing import alternating_medians  # noqa: E402

RGBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd"


def frame() -> tuple[np.ndarray, np.ndarray, str]:
    if RGBD.is_dir():
        rgb = cv2.cvtColor(cv2.imread(str(RGBD / "color" / "00000.jpg")), cv2.COLOR_BGR2RGB)
        return rgb, cv2.imread(str(RGBD / "depth" / "00000.png"), cv2.IMREAD_UNCHANGED), "Redwood frame 0"
    depth = np.tile(np.linspace(500, 4000, 640, dtype=np.uint16), (480, 1))
    return synthetic_rgb(640, 480), depth, "generated frame"


def kmeans(pixels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 1.0)
    cv2.setRNGSeed(0)
    _, labels, centers = cv2.kmeans(pixels.reshape(-1, 3).astype(np.float32), classes, None, criteria, 1,
                                    cv2.KMEANS_PP_CENTERS)
    return labels.reshape(pixels.shape[:2]), centers


def segmentation(rgb: np.ndarray, classes: int, model_like: bool) -> Segmentation:
    if model_like:
        grid = cv2.resize(rgb, (37, 28), interpolation=cv2.INTER_AREA).astype(np.float32)
        _, centers = kmeans(grid, classes)
        scores = -np.linalg.norm(grid[:, :, None, :] - centers[None, None], axis=-1)  # (28, 37, classes)
        upsampled = cv2.resize(scores, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        labels = upsampled.argmax(axis=-1).astype(np.int32)
    else:
        labels = kmeans(rgb, classes)[0].astype(np.int32)
    confidence = np.random.default_rng(0).uniform(0.3, 1.0, labels.shape).astype(np.float32)
    return Segmentation(labels, None, confidence, np.ones(classes, np.float32),
                        tuple(f"class {i}" for i in range(classes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args()
    rgb, depth, source = frame()
    colour = rgb_message(rgb, "colour")
    depth_msg = depth_message(depth, colour.header, "depth")
    info = camera_info_message(colour.header, 640, 480, fx=525.0, cx=319.5, cy=239.5)
    pipeline = FramePipeline(engine=None)  # type: ignore[arg-type] - outputs() never calls the engine
    settings = FrameSettings(threshold=0.0, confidence_encoding="mono8")
    mask_only = Wanted(False, False, False, False)
    cloud_2d = Wanted(False, False, False, False, points=True, detections=True)
    everything = Wanted(False, False, False, False, points=True, detections=True, detections_3d=True)
    print(f"{platform.processor() or platform.machine()}, {cv2.getNumThreads()} OpenCV threads, numpy "
          f"{np.__version__}, OpenCV {cv2.__version__}; {source}, 640x480, {args.classes} classes, "
          f"{args.repeats} alternating runs")
    for name in ("model-like", "per-pixel"):
        segmented = segmentation(rgb, args.classes, model_like=name == "model-like")

        def mask():
            return pipeline.outputs(CameraFrame("cam", colour.header, rgb, mask_only), segmented, 1, settings)

        def with_geometry(wanted: Wanted):
            def run():
                geometry = frame_geometry(info, depth_msg, 480, 640, 1 << 24)
                return pipeline.outputs(CameraFrame("cam", colour.header, rgb, wanted, geometry), segmented, 1,
                                        settings)
            return run

        sides = {"mask": mask, "cloud+2d": with_geometry(cloud_2d), "cloud+2d+3d": with_geometry(everything)}
        regions = len(dict(sides["cloud+2d"]().messages)["detections"].detections)
        medians = alternating_medians(sides, args.repeats, warmup=5)
        print(f"{name} mask ({regions} regions >= 50 px): mask alone {1000 * medians['mask']:.2f} ms")
        for side in ("cloud+2d", "cloud+2d+3d"):
            extra = 1000 * (medians[side] - medians["mask"])
            print(f"  {side:12s} {1000 * medians[side]:6.2f} ms: {extra:.2f} ms beyond the mask (target <= 15 ms), "
                  f"ratio {medians[side] / medians['mask']:.1f}x")

if __name__ == "__main__":
    main()
