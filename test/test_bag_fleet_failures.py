"""Bags and fleets never lose work silently: duplicate stamps, damaged bags, bounded evaluation memory, TC.

Random weights: the tests check which bags and frames are made and what is counted, not the numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from clip_dinoiser_ros.bag import evaluate as ev
from clip_dinoiser_ros.bag import fleet
from clip_dinoiser_ros.bag.writing import BagWriter
from clip_dinoiser_ros.pipeline import messages as outputs
from clip_dinoiser_ros.pipeline.messages import stamp_ns
from node_frames import camera_info_message, depth_message, rgb_message, synthetic_rgb
from test_bag_tool import TINY, bag_cli, bag_messages


def header(stamp: int, frame_id: str = "cam") -> Header:
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)


def camera_bag(path: Path, stamps: list[int], depth: bool = False, encoding: str = "rgb8") -> Path:
    """Colour frames with these stamps (logged 10 ms apart), each with its depth and camera_info when asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with BagWriter(path) as writer:
        for index, stamp in enumerate(stamps):
            colour = rgb_message(synthetic_rgb(32, 24, seed=index), "cam")
            colour.header = header(stamp)
            colour.encoding = encoding
            logged = 1_000_000_000 + index * 10_000_000
            if depth:
                writer.write("/cam/camera_info", camera_info_message(colour.header, 32, 24, 30.0, 15.5, 11.5), logged)
            writer.write("/cam/image_raw", colour, logged + 1)
            if depth:
                writer.write("/cam/depth", depth_message(np.full((24, 32), 1000, np.uint16), colour.header), logged + 2)
    return path


def segment(*arguments) -> int:
    return bag_cli("segment", *arguments, "--topic", "/cam/image_raw", "--prompts", "a", "b", *TINY)


def masks(bag: Path) -> list[int]:
    return [stamp_ns(item.message) for item in bag_messages(bag, "/cam/segmentation/mask")]


def test_frames_sharing_a_stamp_are_all_segmented_counted_and_the_fleet_goes_on(tmp_path, capsys):
    """Two colour frames with one stamp on a depth camera: both get a mask and the cloud of that stamp's depth;
    the bag is not taken as interrupted, so the fleet makes the bags after it too."""
    stamps = [10**10, 10**10 + 10**8, 10**10 + 10**8, 10**10 + 3 * 10**8]
    camera_bag(tmp_path / "bags" / "a_duplicates", stamps, depth=True)
    camera_bag(tmp_path / "bags" / "b_after", [2 * 10**10 + i * 10**8 for i in range(3)], depth=True)
    out = tmp_path / "out"
    assert segment(tmp_path / "bags", "--depth-topic", "/cam/depth", "--out", out) == 0
    printed = capsys.readouterr()
    assert "segmented 2 bag(s), 7 frames" in printed.err and "1 frame(s) sharing a stamp" in printed.err, printed.err
    assert "1 frame(s) share their stamp with an earlier frame" in printed.out  # the bag's own note
    assert masks(out / "a_duplicates") == stamps
    clouds = [stamp_ns(item.message) for item in bag_messages(out / "a_duplicates", "/cam/segmentation/points")]
    assert clouds == stamps
    assert len(masks(out / "b_after")) == 3
    assert all(fleet.record_path(out / name).is_file() for name in ("a_duplicates", "b_after"))


def test_duplicate_stamps_without_depth_are_segmented_too(tmp_path):
    stamps = [10**10, 10**10, 10**10, 10**10 + 10**8]
    assert segment(camera_bag(tmp_path / "plain", stamps), "--out", tmp_path / "out") == 0
    assert masks(tmp_path / "out") == stamps


def test_interrupted_means_a_stop_was_requested(tmp_path, tiny_engine):
    import threading

    from clip_dinoiser_ros.pipeline.frame_geometry import PairingOptions
    from clip_dinoiser_ros.bag.segment import SegmentOptions, segment_bag
    from clip_dinoiser_ros.pipeline.frame_pipeline import FrameSettings

    tiny_engine.set_prompts(["a", "b"])
    engine = tiny_engine
    options = SegmentOptions(FrameSettings(short_side=32),
                             overlay=False, storage="mcap", overwrite=True, pairing=PairingOptions(0.1, 10),
                             depth_scale=0.001)
    bag = camera_bag(tmp_path / "dup", [10**10, 10**10, 10**10 + 10**8])
    done = segment_bag(bag, ["/cam/image_raw"], tmp_path / "done", engine, options, threading.Event())
    assert (done.frames, done.total, done.interrupted, done.duplicates) == (3, 3, False, 1)
    stop = threading.Event()
    stop.set()
    stopped = segment_bag(bag, ["/cam/image_raw"], tmp_path / "stopped", engine, options, stop)
    assert stopped.interrupted and stopped.frames == 0


def truncate(bag: Path) -> None:
    (storage,) = bag.glob("*.mcap")
    data = storage.read_bytes()
    storage.write_bytes(data[: len(data) // 2])


def test_a_damaged_bag_does_not_stop_the_others_and_the_run_names_it(tmp_path, capsys):
    """Three bags: one truncated (cannot be opened), one whose frames cannot be decoded (fails mid-run), one
    good: the good one is made, the run exits 2 and names each of the other two with its reason."""
    bags = tmp_path / "bags"
    camera_bag(bags / "a_truncated", [10**10 + i * 10**8 for i in range(4)])
    truncate(bags / "a_truncated")
    camera_bag(bags / "b_good", [2 * 10**10 + i * 10**8 for i in range(3)])
    camera_bag(bags / "c_undecodable", [3 * 10**10 + i * 10**8 for i in range(3)], encoding="bogus")
    out = tmp_path / "out"
    assert segment(bags, "--out", out) == 2
    errors = capsys.readouterr().err
    assert "segmented 1 bag(s), 3 frames" in errors and "2 bag(s) not made" in errors, errors
    lines = errors.splitlines()
    assert any(line.strip().startswith("a_truncated:") and "not a readable bag" in line for line in lines), errors
    assert any(line.strip().startswith("c_undecodable:") and "bogus" in line for line in lines), errors
    assert len(masks(out / "b_good")) == 3 and fleet.record_path(out / "b_good").is_file()
    assert not (out / "c_undecodable").exists() and not fleet.record_path(out / "c_undecodable").exists()


def test_when_no_bag_can_be_read_nothing_starts(tmp_path, capsys):
    camera_bag(tmp_path / "bags" / "a", [10**10])
    truncate(tmp_path / "bags" / "a")
    assert segment(tmp_path / "bags" / "a", "--out", tmp_path / "out") == 2
    assert "not a readable bag" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def labelled_bag(path: Path, count: int, rate_hz: float, truth_logged_after_masks: bool,
                 mask_encoding: str = "mono8") -> Path:
    """Masks (with their label_info) and ground truth for ``count`` frames; the ground truth logged beside each
    mask, or all of it after the last mask (as a bag labelled afterwards)."""
    period = round(1e9 / rate_hz)
    truth = np.array([[0, 1], [2, 255]], np.uint8)
    end = 10**10 + count * period
    with BagWriter(path) as writer:
        writer.write("/cam/segmentation/label_info", outputs.label_info(["a", "b", "c"], 0.0, header(10**10)), 1)
        for index in range(count):
            stamp = 10**10 + index * period
            mask = outputs.mask_image(truth, header(stamp))
            mask.encoding = mask_encoding
            writer.write("/cam/segmentation/mask", mask, stamp + 10)
            writer.write("/gt", outputs.mask_image(truth, header(stamp)),
                         end + stamp if truth_logged_after_masks else stamp + 20)
    return path


def test_eval_over_a_fleet_with_a_damaged_bag_scores_the_others_and_names_it(tmp_path, capsys):
    """As segment: one truncated bag (cannot be opened), one whose masks cannot be decoded (fails mid-run), one
    good; the good one is scored and reported, the run exits 2 and names each of the other two with its reason."""
    bags = tmp_path / "bags"
    bags.mkdir()
    labelled_bag(bags / "a_truncated", 4, 10.0, False)
    truncate(bags / "a_truncated")
    labelled_bag(bags / "b_good", 3, 10.0, False)
    labelled_bag(bags / "c_undecodable", 3, 10.0, False, mask_encoding="bogus")
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\nc\n")
    out = tmp_path / "out"
    assert bag_cli("eval", bags, "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt",
                   "--classes", classes, "--out", out) == 2
    errors = capsys.readouterr().err
    assert "2 bag(s) not made" in errors, errors
    lines = errors.splitlines()
    assert any(line.strip().startswith("a_truncated:") and "not a readable bag" in line for line in lines), errors
    assert any(line.strip().startswith("c_undecodable:") and "bogus" in line for line in lines), errors
    summary = json.loads((out / "summary.json").read_text())
    assert [row["bag"] for row in summary["bags"]] == ["b_good"] and summary["bags"][0]["frames_matched"] == 3
    assert summary["bags"][0]["miou"] == pytest.approx(1.0)  # the masks equal the ground truth
    assert "a_truncated: " in summary["meta"]["not_evaluated"] and "c_undecodable: " in summary["meta"]["not_evaluated"]
    assert (out / "b_good" / "metrics.json").is_file() and not (out / "c_undecodable").exists()


@pytest.mark.parametrize("after", [False, True], ids=["interleaved", "labelled_afterwards"])
def test_ground_truth_is_read_by_stamp_in_a_bounded_window(tmp_path, after):
    """60 frames at 10 Hz, a 1 s window: every frame matched, never more than the window's ground truth held."""
    count, rate = 60, 10.0
    bag = labelled_bag(tmp_path / "labelled", count, rate, after)
    classes = [["a"], ["b"], ["c"]]
    with ev.GroundTruthWindow(bag, "/gt", window_s=1.0) as truth:
        result = ev.evaluate(ev.mask_predictions(bag, "/cam/segmentation/mask", classes), 3, 255, label_topic=truth)
        peak = truth.peak
    assert (result.matched, result.unmatched_predictions, result.unmatched_labels) == (count, 0, 0)
    assert 1 <= peak <= 2 * rate * 1.0 + 2 < count  # read ahead one window and kept behind one


def test_ground_truth_that_no_frame_has_is_counted_without_being_kept(tmp_path):
    bag = labelled_bag(tmp_path / "labelled", 40, 10.0, truth_logged_after_masks=False)
    with ev.GroundTruthWindow(bag, "/gt", window_s=0.5) as truth:
        assert truth.take(10**10 + 20 * 10**8) is not None  # the 21st frame; the 20 before it are passed
        assert truth.peak <= 2 * 10 * 0.5 + 2
        assert truth.unmatched() == 39


def camera_and_mask_bag(path: Path, count: int, rate_hz: float, latency_s: float, missing: set[int]) -> list[int]:
    """As the node's recording: camera images at ``rate_hz`` and their masks ``latency_s`` later (label_info
    first), without the images of frames ``missing``; the masks' stamps."""
    period = round(1e9 / rate_hz)
    delay = round(latency_s * 1e9)
    stamps = [10**10 + index * period for index in range(count)]
    mask = np.zeros((24, 32), np.uint8)
    mask[:, 16:] = 1
    records = [(10**10 + delay - 1, "/cam/segmentation/label_info",
                outputs.label_info(["road", "grass"], 0.0, header(stamps[0])))]
    for index, stamp in enumerate(stamps):
        image = rgb_message(synthetic_rgb(32, 24, seed=0), "cam")
        image.header = header(stamp)
        if index not in missing:
            records.append((stamp, "/cam/image_raw", image))
        records.append((stamp + delay, "/cam/segmentation/mask", outputs.mask_image(mask, header(stamp))))
    with BagWriter(path) as writer:
        for logged, topic, message in sorted(records, key=lambda record: record[0]):
            writer.write(topic, message, logged)
    return stamps


def test_temporal_keeps_images_by_stamp_age_counts_masks_without_one_and_needs_no_classes(tmp_path, capsys):
    """30 Hz with the masks 3 s late (90 frames behind: more than any fixed count of 64 images), two images
    missing: no --classes, no ground truth; every other mask gets its image, the two are counted."""
    count = 120
    bag = tmp_path / "recorded"
    camera_and_mask_bag(bag, count, 30.0, 3.0, missing={40, 41})
    out = tmp_path / "tc"
    assert bag_cli("eval", bag, "--mask-topic", "/cam/segmentation/mask", "--flow-topic", "/cam/image_raw",
                   "--temporal", "--out", out) == 0
    assert "2 mask(s) without their camera image" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["bags"]
    assert row["frames"] == count and row["masks_without_image"] == 2 and row["tc"] == pytest.approx(1.0)
    assert summary["meta"]["masks_without_image"].startswith("2 ")
    assert (out / "temporal_consistency.csv").read_text().count("\n") == 1 + count - 2 - 1


def test_without_classes_only_recorded_masks_with_temporal_run(tmp_path, capsys):
    bag = tmp_path / "recorded"
    camera_and_mask_bag(bag, 3, 10.0, 0.1, missing=set())
    assert bag_cli("eval", bag, "--mask-topic", "/cam/segmentation/mask", "--label-topic", "/gt",
                   "--out", tmp_path / "a") == 2
    assert "--classes is needed to name the ground truth's ids" in capsys.readouterr().err
    assert bag_cli("eval", bag, "--topic", "/cam/image_raw", "--temporal", "--out", tmp_path / "b", *TINY) == 2
    assert "--classes is needed for the engine's prompts" in capsys.readouterr().err
