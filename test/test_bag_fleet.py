"""clip-dinoiser-bag over many bags: folders and globs, --resume, torchrun's processes, the summary and TC.

Random weights: the numbers mean nothing; the tests check which bags are made, that 2 processes write
exactly what 1 does, and that the summary holds what each bag gave.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clip_dinoiser_ros.bag import fleet
from clip_dinoiser_ros.bag.errors import BagError
from clip_dinoiser_ros.bag.reading import open_bag
from test_bag_tool import TINY, bag_cli, write_frames

CLASSES = "road\ngrass, lawn\ncar\n"
FRAMES = {"site_a/morning": 6, "site_a/evening": 9, "site_b/robot1": 4}


@pytest.fixture(scope="module")
def fleet_root(tmp_path_factory) -> Path:
    """Three camera bags with ground truth, in two sites' folders (as a fleet's recorder leaves them)."""
    root = tmp_path_factory.mktemp("fleet")
    for index, (name, count) in enumerate(FRAMES.items()):
        frames = write_frames(tmp_path_factory.mktemp("frames"), count)
        (root / "bags" / name).parent.mkdir(parents=True, exist_ok=True)
        assert bag_cli("from-images", frames / "images", "--topic", "/cam/image_raw", "--rate", "10", "--labels",
                       frames / "labels", "--label-topic", "/gt", "--start", str(100 + 10 * index),
                       "--out", root / "bags" / name) == 0
    (root / "classes.txt").write_text(CLASSES)
    return root


def segment(*arguments) -> int:
    return bag_cli("segment", *arguments, "--topic", "/cam/image_raw", "--prompts", "road", "grass", "car", *TINY)


def all_messages(bag: Path) -> list[tuple[str, int, object]]:
    """Every message, decoded: CDR leaves its alignment padding as it finds it, so equal messages need not be
    equal bytes."""
    from rclpy.serialization import deserialize_message

    from clip_dinoiser_ros.bag.conversion import message_class

    with open_bag(bag) as reader:
        return [(connection.topic, timestamp, deserialize_message(bytes(raw), message_class(connection.msgtype)))
                for connection, timestamp, raw in reader.messages()]


def test_folders_and_globs_give_one_output_bag_each_under_its_relative_name(fleet_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(fleet_root / "bags" / "site_a", str(fleet_root / "bags" / "site_b" / "robot*"), "--out", out) == 0
    assert "segmented 3 bag(s), 19 frames" in capsys.readouterr().err
    for name, count in (("morning", 6), ("evening", 9), ("robot1", 4)):
        topics = [topic for topic, _, _ in all_messages(out / name)]
        assert topics.count("/cam/segmentation/mask") == count and topics.count("/cam/image_raw") == count
        assert json.loads(fleet.record_path(out / name).read_text())["frames"] == count
    with pytest.raises(BagError, match="no bag there"):
        fleet.find_bags([str(tmp_path / "nothing*")])
    with pytest.raises(BagError, match="several inputs are named morning"):
        fleet.find_bags([str(fleet_root / "bags" / "site_a" / "morning")] * 2)


def test_resume_skips_exactly_the_bags_finished_with_the_same_settings(fleet_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(fleet_root / "bags", "--out", out) == 0
    made = {name: all_messages(out / name) for name in FRAMES}
    capsys.readouterr()
    assert segment(fleet_root / "bags", "--out", out) == 2  # an existing output without --resume/--overwrite
    assert "exist(s): choose another --out, pass --overwrite, or --resume" in capsys.readouterr().err

    fleet.forget(out / "site_a" / "evening")  # as Ctrl-C or a crash leaves a bag: no record
    assert segment(fleet_root / "bags", "--out", out, "--resume") == 0
    assert "segmented 1 bag(s), 9 frames" in capsys.readouterr().err
    assert {name: all_messages(out / name) for name in FRAMES} == made  # redone the same, others untouched

    assert bag_cli("segment", fleet_root / "bags", "--topic", "/cam/image_raw", "--prompts", "road", "tree",
                   "--out", out, "--resume", *TINY) == 0  # other prompts: nothing is reused
    assert "segmented 3 bag(s), 19 frames" in capsys.readouterr().err


def test_resume_redoes_bags_made_by_another_version_of_the_package(fleet_root, tmp_path, capsys, monkeypatch):
    from clip_dinoiser_ros.cli import bag_fleet

    out = tmp_path / "out"
    assert segment(fleet_root / "bags", "--out", out) == 0
    record = json.loads(fleet.record_path(out / "site_a" / "evening").read_text())
    assert record["settings"]["package_version"] == importlib.metadata.version("clip_dinoiser_ros")
    capsys.readouterr()
    monkeypatch.setattr(bag_fleet, "versions", lambda: {"clip_dinoiser_ros": "0.0.0-older"})
    assert segment(fleet_root / "bags", "--out", out, "--resume") == 0
    assert "segmented 3 bag(s), 19 frames" in capsys.readouterr().err


def test_a_record_names_the_weights_settings_and_input_it_was_made_with(tmp_path):
    output = tmp_path / "bag"
    output.mkdir()
    (output / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    settings = {"prompts": ["a"], "weights": "f" * 32, "input_files": {"x.mcap": [10, 1]}}
    fleet.record_finished(output, settings, {"frames": 3})
    assert fleet.finished(output, settings)["frames"] == 3
    for changed in ({"weights": "e" * 32}, {"prompts": ["b"]}, {"input_files": {"x.mcap": [10, 2]}}):
        assert fleet.finished(output, {**settings, **changed}) is None
    fleet.record_path(output).write_text("{not json")
    assert fleet.finished(output, settings) is None


def test_whole_bags_are_balanced_by_frame_count():
    bags = [fleet.BagInput(Path(f"b{i}"), Path(f"b{i}")) for i in range(5)]
    frames = [100, 10, 60, 50, 5]
    shares = [fleet.shard(bags, frames, 2, rank) for rank in range(2)]
    assert sorted(b.name.name for share in shares for b in share) == [f"b{i}" for i in range(5)]
    loads = [sum(frames[bags.index(b)] for b in share) for share in shares]
    assert sorted(loads) == [110, 115]
    assert fleet.shard(bags, frames, 1, 0) == bags


def installed(script: str) -> str:
    return str(Path(sys.executable).parent / script)


def run(command: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's default for its workers, for both runs
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.timeout(1200)
def test_two_torchrun_processes_write_what_one_does_and_score_the_same(fleet_root, tmp_path):
    tool = installed("clip-dinoiser-bag")
    torchrun = [installed("torchrun"), "--standalone", "--nproc-per-node", "2", tool]
    arguments = ["--topic", "/cam/image_raw", "--prompts", "road", "grass", "lawn", "car", *TINY]
    run([tool, "segment", str(fleet_root / "bags"), "--out", str(tmp_path / "one"), *arguments])
    two = run([*torchrun, "segment", str(fleet_root / "bags"), "--out", str(tmp_path / "two"), *arguments])
    assert "2 process(es)" in two.stderr
    for name in FRAMES:
        assert all_messages(tmp_path / "two" / name) == all_messages(tmp_path / "one" / name), name

    evaluation = ["--mask-topic", "/cam/segmentation/mask", "--flow-topic", "/cam/image_raw", "--temporal",
                  "--label-topic", "/gt", "--classes", str(fleet_root / "classes.txt")]
    run([tool, "eval", str(tmp_path / "one"), "--out", str(tmp_path / "eval_one"), *evaluation])
    run([*torchrun, "eval", str(tmp_path / "one"), "--out", str(tmp_path / "eval_two"), *evaluation])
    one, two = (json.loads((tmp_path / folder / "summary.json").read_text()) for folder in ("eval_one", "eval_two"))
    numbers = ("bag", "frames", "frames_matched", "miou", "tc")
    assert [{k: row[k] for k in numbers} for row in one["bags"]] == [{k: row[k] for k in numbers} for row in two["bags"]]
    assert {k: one["total"][k] for k in numbers} == {k: two["total"][k] for k in numbers}
    assert one["total"]["frames"] == sum(FRAMES.values()) and one["total"]["tc"] is not None
    assert two["meta"]["processes"] == 2
    totals = [json.loads((tmp_path / folder / "metrics.json").read_text())["confusion"] for folder in ("eval_one", "eval_two")]
    assert totals[0] == totals[1]  # the all_reduce sum of the confusion matrices


def test_temporal_consistency_needs_no_ground_truth(fleet_root, tmp_path, capsys):
    out = tmp_path / "tc"
    bag = fleet_root / "bags" / "site_a" / "evening"
    assert bag_cli("eval", bag, "--topic", "/cam/image_raw", "--temporal", "--classes", fleet_root / "classes.txt",
                   "--out", out, *TINY) == 0
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["bags"]
    assert row["frames"] == 9 and row["miou"] is None and 0.0 <= row["tc"] <= 1.0
    assert "DIS" in summary["meta"]["temporal_consistency"]
    assert (out / "temporal_consistency.csv").read_text().count("\n") == 1 + 8  # header, one row per pair
    assert "TC %" in (out / "summary.md").read_text()
    assert bag_cli("eval", bag, "--mask-topic", "/cam/image_raw", "--temporal", "--classes",
                   fleet_root / "classes.txt", "--out", tmp_path / "no_flow") == 2
    assert "needs --flow-topic" in capsys.readouterr().err
    assert bag_cli("eval", bag, "--topic", "/cam/image_raw", "--classes", fleet_root / "classes.txt",
                   "--out", tmp_path / "nothing", *TINY) == 2
    assert "nothing to measure" in capsys.readouterr().err


def test_several_bags_get_a_summary_and_total_reports(fleet_root, tmp_path, capsys):
    out = tmp_path / "eval"
    assert bag_cli("eval", fleet_root / "bags", "--topic", "/cam/image_raw", "--label-topic", "/gt", "--temporal",
                   "--classes", fleet_root / "classes.txt", "--out", out, *TINY) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [row["bag"] for row in summary["bags"]] == sorted(FRAMES)  # a folder's bags in name order
    assert [row["frames"] for row in summary["bags"]] == [FRAMES[name] for name in sorted(FRAMES)]
    for name in FRAMES:
        assert (out / name / "metrics.json").is_file() and (out / name / "temporal_consistency.png").is_file()
    assert (out / "metrics.md").is_file() and (out / "confusion.png").is_file()  # over all bags
    printed = capsys.readouterr().out
    assert "| **all** | 19 | 19 |" in printed
    shutil.rmtree(out)


def test_ctrl_c_keeps_the_finished_bags_and_resume_does_the_rest(tmp_path):
    (tmp_path / "bags").mkdir()
    for index in range(3):
        frames = write_frames(tmp_path / f"frames{index}", 40, size=(320, 240), labels=False)
        assert bag_cli("from-images", frames / "images", "--topic", "/cam/image_raw", "--rate", "10",
                       "--out", tmp_path / "bags" / f"drive{index}") == 0
    out = tmp_path / "out"
    command = [installed("clip-dinoiser-bag"), "segment", str(tmp_path / "bags"), "--topic", "/cam/image_raw",
               "--prompts", "a", "b", "--out", str(out), *TINY[:-1], "224"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 300
        while not fleet.record_path(out / "drive0").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)  # the first bag is finished, the second under way
        _, errors = process.communicate(timeout=120)
    assert process.returncode == 130, errors
    assert "interrupted: the bag is valid and holds the first" in errors
    finished = [name for name in ("drive0", "drive1", "drive2") if fleet.record_path(out / name).exists()]
    assert "drive0" in finished and "drive2" not in finished
    assert len([m for m in all_messages(out / "drive0") if m[0] == "/cam/segmentation/mask"]) == 40
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} finished bag(s) skipped" in resumed.stderr
    for name in ("drive0", "drive1", "drive2"):
        assert len([m for m in all_messages(out / name) if m[0] == "/cam/segmentation/mask"]) == 40
