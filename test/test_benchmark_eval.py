"""clip-dinoiser-eval on synthetic trees in each benchmark's layout (no real data or weights here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from clip_dinoiser_ros.cli.eval import main
from clip_dinoiser_ros.evaluation import ConfusionMatrix, scores
from clip_dinoiser_ros.evaluation.benchmarks import benchmarks, read_ground_truth, samples
from clip_dinoiser_ros.model.preprocessing import resize_image, short_side_size, sliding_windows

TINY = ["--random-weights", "--clip-model", "ViT-Tiny-16-test"]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "benchmarks.json"


def write_tree(root: Path, name: str, count: int = 3) -> None:
    """``count`` small images and labels in the set's own layout and label convention."""
    spec = benchmarks()[name]
    base = root / spec.data_root
    rng = np.random.default_rng(len(name))
    stems = [f"city{i % 2}/frame{i}" if name == "cityscapes" else f"2010_{i:06d}" for i in range(count)]
    for stem in stems:
        image = base / spec.img_dir / f"{stem}{spec.img_suffix}"
        label = base / spec.ann_dir / f"{stem}{spec.seg_map_suffix}"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
        classes = len(spec.classes)
        top = classes + 1 if spec.reduce_zero_label else classes  # 0 is "unlabelled" under reduce_zero_label
        values = rng.integers(0, top, (40, 56))
        values[:2] = 255
        Image.fromarray(values.astype(np.uint8)).save(label)
    if spec.split:
        split = base / spec.split
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text("\n".join(stems) + "\n")


def test_the_packaged_facts_are_the_reference():
    if REFERENCE.exists():
        assert json.loads(REFERENCE.read_text()) == json.loads(
            (Path(__file__).resolve().parents[1] / "clip_dinoiser_ros" / "evaluation" / "benchmarks.json").read_text())
    assert len(benchmarks()) == 8


@pytest.mark.parametrize("name", sorted(benchmarks()))
def test_every_layout_runs_end_to_end(name, tmp_path, capsys):
    write_tree(tmp_path / "data", name)
    out = tmp_path / "out"
    assert main(["--dataset", name, "--root", str(tmp_path / "data"), "--limit", "2", "--out", str(out), *TINY]) == 0
    report = json.loads((out / name / "metrics.json").read_text())
    assert [c["name"] for c in report["classes"]] == list(benchmarks()[name].classes)
    spec = benchmarks()[name]
    scored = sum(int((read_ground_truth(label, spec.reduce_zero_label) != 255).sum())
                 for _, label in samples(spec, tmp_path / "data")[:2])
    assert np.array(report["confusion"]).sum() == scored > 0  # two images, ignored pixels left out
    assert f"| {name} |" in (out / "table1.md").read_text()
    assert "RANDOM WEIGHTS" in report["meta"]["weights"]
    run = json.loads((out / "run.json").read_text())
    assert {"torch", "open_clip", "clip_dinoiser_ros"} <= set(run["versions"]) and run["protocol"]["test_cfg"]


@pytest.mark.parametrize("name", sorted(benchmarks()))
def test_labels_fed_as_predictions_score_1_under_every_convention(name, tmp_path):
    write_tree(tmp_path, name, count=2)
    spec = benchmarks()[name]
    confusion = ConfusionMatrix(len(spec.classes))
    for _, label in samples(spec, tmp_path):
        truth = read_ground_truth(label, spec.reduce_zero_label)
        confusion.update(truth, truth)
    assert scores(confusion.matrix).miou == 1.0


def test_reduce_zero_label_is_applied_exactly_once(tmp_path):
    path = tmp_path / "label.png"
    Image.fromarray(np.array([[0, 1, 2, 255]], np.uint8)).save(path)
    np.testing.assert_array_equal(read_ground_truth(path, True), [[255, 0, 1, 255]])
    np.testing.assert_array_equal(read_ground_truth(path, False), [[0, 1, 2, 255]])


@pytest.mark.parametrize("height, width", [(449, 1000), (448, 448), (448, 1213), (900, 449)])
def test_windows_are_placed_as_mmseg_places_them(height, width):
    crop, stride = 448, 224
    expected = []
    for h in range(max(height - crop + stride - 1, 0) // stride + 1):
        for w in range(max(width - crop + stride - 1, 0) // stride + 1):
            y2, x2 = min(h * stride + crop, height), min(w * stride + crop, width)
            expected.append((max(y2 - crop, 0), max(x2 - crop, 0), y2, x2))
    assert list(sliding_windows(height, width, crop, stride)) == expected


@pytest.mark.parametrize("height, width", [(375, 500), (1024, 2048), (40, 56), (500, 333)])
def test_the_resize_is_cv2_on_uint8_with_mmcvs_size(height, width):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    scale = min(2048 / max(height, width), 448 / min(height, width))
    size = (int(width * scale + 0.5), int(height * scale + 0.5))
    resized = resize_image(image, short_side_size(height, width, 448))
    np.testing.assert_array_equal(resized, cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))


def test_resume_skips_done_images_with_the_same_result(tmp_path):
    write_tree(tmp_path / "data", "voc", count=3)
    arguments = ["--dataset", "voc", "--root", str(tmp_path / "data"), *TINY]
    assert main([*arguments, "--limit", "3", "--out", str(tmp_path / "whole")]) == 0
    assert main([*arguments, "--limit", "2", "--out", str(tmp_path / "resumed")]) == 0
    (cache,) = (tmp_path / "resumed" / "cache" / "voc").iterdir()  # one folder per model and settings
    first = {path: path.stat().st_mtime_ns for path in cache.iterdir()}
    assert main([*arguments, "--limit", "3", "--resume", "--out", str(tmp_path / "resumed")]) == 0
    assert {path: path.stat().st_mtime_ns for path in first} == first and len(list(cache.iterdir())) == 3
    confusion = [json.loads((tmp_path / run / "voc" / "metrics.json").read_text())["confusion"]
                 for run in ("whole", "resumed")]
    assert confusion[0] == confusion[1]
    other = ["--limit", "1", "--resume", "--precision", "fp32", "--out", str(tmp_path / "resumed")]
    assert main([*arguments, *other]) == 0
    assert len(list((tmp_path / "resumed" / "cache" / "voc").iterdir())) == 2  # other settings: not reused


def test_torchrun_with_two_processes_gives_one_process_result(tmp_path):
    write_tree(tmp_path / "data", "voc20", count=5)
    arguments = ["--dataset", "voc20", "--root", str(tmp_path / "data"), "--limit", "5", *TINY]
    assert main([*arguments, "--out", str(tmp_path / "one")]) == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2",
               str(Path(sys.executable).parent / "clip-dinoiser-eval"), *arguments, "--out", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    one, two = (json.loads((tmp_path / run / "voc20" / "metrics.json").read_text()) for run in ("one", "two"))
    assert one["confusion"] == two["confusion"] and two["meta"]["processes"] == 2
