"""Segmentation metrics match mmseg's definitions; reports are written and readable (no ROS, no torch)."""
import json
import math
import warnings

import numpy as np
import pytest

from clip_dinoiser_ros.evaluation import ConfusionMatrix, scores, summary_table, write_reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def score_frame(prediction, ground_truth, num_classes, ignore_index=255):
    matrix = ConfusionMatrix(num_classes)
    matrix.update(np.array(prediction), np.array(ground_truth), ignore_index)
    return scores(matrix.matrix)


def test_perfect_prediction_scores_one():
    labels = np.random.default_rng(0).integers(0, 5, (64, 48))
    result = score_frame(labels, labels, 5)
    assert (result.miou, result.mean_accuracy, result.pixel_accuracy) == (1.0, 1.0, 1.0)
    assert result.pixels == labels.size


def test_hand_computed_confusion():
    result = score_frame([[0, 1], [1, 1]], [[0, 0], [1, 1]], 2)
    assert result.iou == pytest.approx([1 / 2, 2 / 3])
    assert result.miou == pytest.approx(7 / 12)
    assert result.accuracy == pytest.approx([1 / 2, 1])
    assert result.mean_accuracy == pytest.approx(3 / 4)
    assert result.pixel_accuracy == pytest.approx(3 / 4)
    assert result.pixels == 4


@pytest.mark.parametrize("ignore_index", [255, 7, -1])
def test_ignored_pixels_change_nothing(ignore_index):
    ground_truth = np.array([[0, 1, ignore_index], [1, ignore_index, 0]])
    prediction = np.array([[0, 1, 0], [1, 1, 0]])
    other = np.array([[0, 1, 1], [1, 255, 0]])
    first = ConfusionMatrix(2).update(prediction, ground_truth, ignore_index)
    second = ConfusionMatrix(2).update(other, ground_truth, ignore_index)
    np.testing.assert_array_equal(first, second)
    assert first.sum() == 4 and scores(first).miou == 1.0


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = score_frame([[0, 1], [1, 1]], [[0, 0], [1, 1]], 3)
    assert math.isnan(result.iou[2]) and math.isnan(result.accuracy[2])
    assert result.miou == pytest.approx(7 / 12)
    assert result.mean_accuracy == pytest.approx(3 / 4)


def test_class_only_predicted_counts_as_zero():
    result = score_frame([[0, 2], [1, 1]], [[0, 0], [1, 1]], 3)
    assert result.iou == pytest.approx([1 / 2, 1, 0])
    assert math.isnan(result.accuracy[2])
    assert result.miou == pytest.approx(1 / 2)


def test_nothing_measured_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = score_frame([[0, 1]], [[255, 255]], 2)
    assert math.isnan(result.miou) and math.isnan(result.mean_accuracy) and math.isnan(result.pixel_accuracy)
    assert result.pixels == 0


@pytest.mark.parametrize("no_class", [255, 2, -3])
def test_prediction_outside_the_classes_lowers_the_ground_truth_class_only(no_class):
    frame = ConfusionMatrix(2).update(np.array([[0, no_class], [1, 1]]), np.array([[0, 0], [1, 1]]))
    np.testing.assert_array_equal(frame, [[1, 0, 1], [0, 2, 0]])
    result = scores(frame)
    assert result.iou == pytest.approx([1 / 2, 1])  # class 0 union: 1 predicted + 2 labelled - 1
    assert result.accuracy == pytest.approx([1 / 2, 1])
    assert result.pixel_accuracy == pytest.approx(3 / 4)


def test_update_returns_the_frame_and_accumulates_the_sum():
    rng = np.random.default_rng(1)
    total = ConfusionMatrix(4)
    frames = []
    for _ in range(3):
        ground_truth = rng.choice([0, 1, 2, 3, 255], (20, 30))
        prediction = rng.choice([0, 1, 2, 3, 255], (20, 30)).astype(np.uint8)
        frame = total.update(prediction, ground_truth)
        assert frame.shape == (4, 5) and frame.dtype == np.int64
        assert frame.sum() == (ground_truth != 255).sum()
        frames.append(frame)
    np.testing.assert_array_equal(total.matrix, sum(frames))
    merged = ConfusionMatrix(4)
    merged.add(frames[0])
    merged.add(frames[1] + frames[2])
    np.testing.assert_array_equal(merged.matrix, total.matrix)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="prediction 360x480 and ground truth 720x960 differ in size"):
        ConfusionMatrix(3).update(np.zeros((360, 480), np.int64), np.zeros((720, 960), np.int64))


def test_unknown_ground_truth_values_are_named():
    ground_truth = np.array([[0, 3], [9, 255]])
    with pytest.raises(ValueError, match=r"values 3, 9 .*ignore_index \(255\)"):
        ConfusionMatrix(3).update(np.zeros((2, 2), np.int64), ground_truth)


def test_add_rejects_a_matrix_of_another_size():
    with pytest.raises(ValueError, match="3x4"):
        ConfusionMatrix(2).add(np.zeros((3, 4), np.int64))


NAMES = ["road", "car", "sky"]
MATRIX = np.array([[5, 1, 0, 2], [0, 4, 0, 0], [0, 0, 0, 0]])


def test_summary_table_lists_classes_and_means():
    table = summary_table(NAMES, scores(MATRIX))
    for name in NAMES:
        assert f"| {name} |" in table
    assert "mIoU: " in table and "mAcc: " in table and "aAcc: " in table
    assert "| sky | — | — |" in table


def test_write_reports_writes_everything(tmp_path):
    per_frame = [(0.0, 0.5), (0.1, 0.75), (0.2, float("nan")), (0.3, 1.0)]
    written = write_reports(tmp_path, NAMES, MATRIX, per_frame, {"model": "tiny", "frames": 4})
    expected = {"metrics.md", "metrics.csv", "metrics.json", "confusion.png", "iou_per_class.png",
                "miou_over_time.png"}
    assert {path.name for path in written} == expected
    assert {path.name for path in tmp_path.iterdir()} == expected
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_SIGNATURE

    report = json.loads((tmp_path / "metrics.json").read_text())
    assert [entry["name"] for entry in report["classes"]] == NAMES
    assert report["classes"][2] == {"name": "sky", "iou": None, "accuracy": None}
    assert report["classes"][1]["iou"] == pytest.approx(4 / 5)
    assert report["miou"] == pytest.approx(scores(MATRIX).miou)
    assert report["pixels"] == 12
    assert report["confusion"] == MATRIX.tolist()
    assert report["meta"] == {"model": "tiny", "frames": 4}

    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "class,iou,accuracy"
    assert rows[3] == "sky,,"
    assert [row.split(",")[0] for row in rows[4:]] == ["mIoU", "mean accuracy", "pixel accuracy"]
    markdown = (tmp_path / "metrics.md").read_text()
    assert "- model: tiny" in markdown and "| road |" in markdown


def test_write_reports_without_per_frame_and_with_many_classes(tmp_path):
    names = [f"class {index}" for index in range(61)]
    matrix = np.zeros((61, 62), np.int64)
    matrix[np.arange(61), np.arange(61)] = 10
    written = write_reports(tmp_path, names, matrix, None, {})
    assert {path.name for path in written} == {"metrics.md", "metrics.csv", "metrics.json", "iou_per_class.png"}
    assert not (tmp_path / "confusion.png").exists()


def test_label_images_give_class_ids_and_colour_images_are_refused(tmp_path):
    from PIL import Image

    from clip_dinoiser_ros.evaluation.labels import LabelImageError, read_label_image

    palette = Image.fromarray(np.array([[0, 3], [7, 255]], np.uint8), mode="P")
    palette.putpalette([value for index in range(256) for value in (index, 255 - index, 0)])
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "palette.png"), [[0, 3], [7, 255]])  # ids, not colours
    Image.fromarray(np.array([[300, 2]], np.uint16)).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "wide.png"), [[300, 2]])
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(LabelImageError, match="rgb.png: labels must be single-channel class ids .* not mode RGB"):
        read_label_image(tmp_path / "rgb.png")
    with pytest.raises(LabelImageError, match=r"\(mode L or P\)"):
        read_label_image(tmp_path / "wide.png", ("L", "P"))
