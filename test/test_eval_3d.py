"""3D evaluation by ConceptGraphs' protocol: the scores on hand-made confusion matrices, the nearest-voxel pairing
with its radius, and clip-dinoiser-eval-3d end to end on a synthetic map whose voxels hold chosen text embeddings
(so the argmax is known even with random weights; the figures prove the arithmetic, not the model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clip_dinoiser_ros.cli.eval_3d import build_parser, main
from clip_dinoiser_ros.cli.model_options import load_engine
from clip_dinoiser_ros.cli.node_options import parse_node_options
from clip_dinoiser_ros.evaluation import scores
from clip_dinoiser_ros.evaluation.map_metrics import (NO_VOXEL, LabelledPoints, map_scores, pairs,
                                                      read_labelled_points, scored_classes, voxel_labels)
from clip_dinoiser_ros.mapping import MapSettings, VoxelMap, save_map
from clip_dinoiser_ros.mapping.keys import pack
from clip_dinoiser_ros.visualization import RANDOM_NOTICE

TINY = ["--clip-model", "ViT-Tiny-16-test", "--random-weights"]
CLASSES = ["floor", "chair", "table", "other"]


def write_ply(path: Path, points: np.ndarray, labels: np.ndarray, form: str, label_type: str = "int") -> Path:
    """A labelled cloud as datasets write them: x y z, a colour, the label, then a face element (not read)."""
    kinds = {"float": "f4", "uchar": "u1", "int": "i4", "ushort": "u2"}
    properties = [("x", "float"), ("y", "float"), ("z", "float"), ("red", "uchar"), ("green", "uchar"),
                  ("blue", "uchar"), ("label", label_type)]
    header = ["ply", f"format {form} 1.0", "comment labelled test cloud", f"element vertex {len(points)}",
              *(f"property {kind} {name}" for name, kind in properties), "element face 1",
              "property list uchar int vertex_indices", "end_header"]
    columns = [*points.T, *np.full((3, len(points)), 200), labels]
    if form == "ascii":
        body = "".join(" ".join(repr(float(v)) if i < 3 else str(int(v)) for i, v in enumerate(row)) + "\n"
                       for row in zip(*columns)) + "3 0 1 2\n"
        path.write_text("\n".join(header) + "\n" + body)
        return path
    order = "<" if form == "binary_little_endian" else ">"
    vertices = np.empty(len(points), [(name, order + kinds[kind]) for name, kind in properties])
    for (name, _), column in zip(properties, columns):
        vertices[name] = column
    face = np.array([3], np.uint8).tobytes() + np.array([0, 1, 2], order + "i4").tobytes()
    path.write_bytes(("\n".join(header) + "\n").encode() + vertices.tobytes() + face)
    return path


def voxel_row(features: np.ndarray, voxel_size: float = 0.1) -> VoxelMap:
    """Voxels (i, 0, 0), i = 0..n-1, holding ``features`` (n, E) in float32: queries see them exactly."""
    voxel_map = VoxelMap(MapSettings(voxel_size=voxel_size, feature_dim=features.shape[1], feature_dtype="float32"))
    coords = np.zeros((features.shape[0], 3), np.int64)
    coords[:, 0] = np.arange(features.shape[0])
    rows = voxel_map.add(pack(coords))
    voxel_map.set_features(rows, features)
    for name, value in (("weight", 1.0), ("pixels", 1.0), ("count", 1)):
        voxel_map.slots[name][rows] = value
    return voxel_map


def test_scores_follow_concept_graphs_compute_metrics():
    """A scored class no pair reached counts with accuracy and IoU 0 (max(1, .) denominators), misses stay in their
    row, an unscored class's counts are left out; mmseg's NaN rule (scores) would drop the empty class instead."""
    matrix = np.array([[3, 1, 0, 0, 0],   # floor: 3 right, 1 taken for chair
                       [0, 0, 0, 0, 0],   # chair: in the ground truth, no pair
                       [1, 0, 2, 0, 1],   # table: 2 right, 1 taken for floor, 1 without a voxel
                       [5, 5, 5, 5, 0]])  # other: not scored
    result = map_scores(matrix, np.array([0, 1, 2]))
    np.testing.assert_allclose(result.points, [4, 0, 4])
    np.testing.assert_allclose(result.accuracy, [3 / 4, 0, 2 / 4])
    np.testing.assert_allclose(result.iou, [3 / (4 + 4 - 3), 0, 2 / (4 + 2 - 2)])
    assert result.macc == pytest.approx((0.75 + 0 + 0.5) / 3)
    assert result.fmiou == pytest.approx(0.6 * 4 / 8 + 0.5 * 4 / 8)
    assert result.miou == pytest.approx((0.6 + 0 + 0.5) / 3)
    assert scores(matrix[:3, [0, 1, 2, 4]]).mean_accuracy == pytest.approx((0.75 + 0.5) / 2)  # not this protocol


def test_scores_of_a_perfect_map_and_of_nothing_scored():
    perfect = map_scores(np.array([[7, 0, 0], [0, 3, 0]]), np.array([0, 1]))
    assert (perfect.macc, perfect.fmiou, perfect.miou) == (1.0, 1.0, 1.0)
    empty = map_scores(np.zeros((2, 3), np.int64), np.array([0, 1]))
    assert empty.macc == 0.0 and np.isnan(empty.fmiou)


def test_the_classes_scored_are_those_in_the_ground_truth_less_the_excluded():
    np.testing.assert_array_equal(scored_classes(np.array([-1, 0, 0, 2, 3, 3]), excluded=[3]), [0, 2])


def test_each_ground_truth_point_takes_its_nearest_voxel_within_the_radius():
    centres = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    labels = np.array([4, 7])
    truth = LabelledPoints(np.array([[0.25, 0, 0], [1.0, 0.5, 0], [3.0, 0, 0]]), np.array([0, 1, 2]))
    actual, predicted, far = pairs(truth, centres, labels, 0.5, "gt-to-map")
    np.testing.assert_array_equal(actual, [0, 1, 2])
    np.testing.assert_array_equal(predicted, [4, 7, NO_VOXEL])  # exactly at the radius counts; 2 m away is a miss
    assert far == 0
    _, unlimited, _ = pairs(truth, centres, labels, np.inf, "gt-to-map")
    np.testing.assert_array_equal(unlimited, [4, 7, 7])  # ConceptGraphs' rule: the nearest, at any distance


def test_each_voxel_takes_its_nearest_ground_truth_point_in_map_to_gt():
    centres = np.array([[0.0, 0, 0], [1.0, 0, 0], [9.0, 0, 0]])
    truth = LabelledPoints(np.array([[0.1, 0, 0], [0.9, 0, 0], [1.2, 0, 0]]), np.array([3, -1, 5]))
    actual, predicted, far = pairs(truth, centres, np.array([0, 1, 2]), 1.0, "map-to-gt")
    np.testing.assert_array_equal(actual, [3, -1])  # the second voxel's nearest point is unlabelled
    np.testing.assert_array_equal(predicted, [0, 1])
    assert far == 1  # the voxel 7.8 m from any ground truth is left out
    actual, predicted, far = pairs(truth, centres, np.array([0, 1, 2]), np.inf, "map-to-gt")
    np.testing.assert_array_equal(actual, [3, -1, 5])
    assert far == 0


def test_voxels_are_labelled_by_the_query_over_the_scored_classes_only():
    """Orthogonal texts; class 2 has two synonyms; class 1 is not scored, so its voxels take another class."""
    texts = np.eye(4, dtype=np.float32)
    text_class = np.array([0, 1, 2, 2])
    voxel_map = voxel_row(np.stack([texts[0], texts[3], texts[2], texts[1]]))
    centres, labels = voxel_labels(voxel_map, texts, text_class, np.array([0, 2]))
    np.testing.assert_array_equal(labels[:3], [0, 2, 2])
    assert labels[3] != 1
    np.testing.assert_allclose(centres[:, 0], [0.05, 0.15, 0.25, 0.35])


@pytest.mark.parametrize("content,needle", [
    ({"points": np.zeros((2, 3))}, "not an .npz holding 'points'"),
    ({"points": np.zeros((2, 2)), "labels": np.zeros(2, np.int64)}, "points must be (N, 3)"),
    ({"points": np.zeros((2, 3)), "labels": np.zeros(2)}, "labels must be integers"),
    ({"points": np.zeros((2, 3)), "labels": np.array([0, 9])}, "label 9 but the classes file names 4 classes"),
])
def test_bad_ground_truth_is_refused_with_the_reason(tmp_path, content, needle):
    np.savez(tmp_path / "gt.npz", **content)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_labelled_points(tmp_path / "gt.npz", 4)


@pytest.mark.parametrize("form", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_a_ply_cloud_reads_as_the_same_points_and_labels(tmp_path, form):
    points = np.random.default_rng(3).uniform(-5, 5, (50, 3)).astype(np.float32).astype(np.float64)
    labels = np.arange(50) % 4 - 1  # -1: unlabelled
    got = read_labelled_points(write_ply(tmp_path / "gt.ply", points, labels, form), 4)
    np.testing.assert_array_equal(got.points, points)
    np.testing.assert_array_equal(got.labels, labels)
    scannet = read_labelled_points(write_ply(tmp_path / "scannet.ply", points, labels + 1, form, "ushort"), 4)
    np.testing.assert_array_equal(scannet.labels, labels + 1)  # ScanNet's labels: ushort, 0 = unannotated


@pytest.mark.parametrize("content,needle", [
    (b"solid cube\n", "not a PLY file"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
     b"property float z\nproperty int label\nend_header\n" + bytes(20), "truncated: 20 bytes for 2 vertices of 16"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
     b"property uchar red\nend_header\n0 0 0 9\n", "need x, y, z and one of label, class_id, class, semantic; "
     "they have x, y, z, red"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
     b"property float label\nend_header\n0 0 0 1.5\n", "labels must be integers"),
    (b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int vertex_indices\nelement vertex 1\n"
     b"end_header\n", "the vertices must be the first element"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty half x\nend_header\n", "bad PLY header line"),
    (b"ply\nformat ascii 1.0\nelement vertex -1\nproperty float x\nend_header\n", "bad PLY header line"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
     b"property float label\nend_header\n0 0 0 inf\n", "labels must be integers"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
     b"property int label\nend_header\n0 0 zero 1\n", "bad vertex line"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
     b"property float z\nproperty int label\nend_header\n", "with N > 0, got (0, 3)"),
])
def test_a_bad_ply_cloud_is_refused_with_the_reason(tmp_path, content, needle):
    (tmp_path / "gt.ply").write_bytes(content)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_labelled_points(tmp_path / "gt.ply", 4)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """Ten voxels in a row: floor x5, chair x3, table, other (their text embeddings, from the engine the CLI
    builds with the same options), and ground truth with known errors, a far point, an unlabelled one."""
    folder = tmp_path_factory.mktemp("scene")
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    args = parse_node_options(build_parser(), ["map.npz", "--ground-truth", "gt.npz", "--classes", "c.txt", *TINY])
    texts = load_engine(args).encode_prompts(CLASSES).text_embeddings.numpy()
    save_map(voxel_row(texts[[0, 0, 0, 0, 0, 1, 1, 1, 2, 3]]), folder / "map.npz")
    centres = (np.arange(10) + 0.5) * 0.1
    points = np.stack([centres + 0.01, np.full(10, 0.04), np.full(10, 0.06)], axis=1)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])  # voxel 4 is chair taken for floor, voxel 7 table for chair
    points = np.vstack([points, [[5.0, 0, 0], [9.0, 9.0, 9.0]]])  # a floor point 4 m from any voxel; unlabelled
    np.savez(folder / "gt.npz", points=points, labels=np.append(labels, [0, -1]))
    write_ply(folder / "gt.ply", points, np.append(labels, [0, -1]), "binary_little_endian")
    return folder


def run_cli(scene: Path, *extra: str, truth: str = "gt.npz") -> int:
    return main([str(scene / "map.npz"), "--ground-truth", str(scene / truth), "--classes",
                 str(scene / "classes.txt"), "--exclude", "other", *extra, *TINY])


def test_the_command_scores_a_synthetic_map_exactly(scene, tmp_path, capsys):
    """Rows floor [4, 0, 0 | 1 miss], chair [1, 2, 0], table [0, 1, 1]; 'other' and the unlabelled point left out."""
    assert run_cli(scene, "--json", str(tmp_path / "out.json")) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "out.json").read_text())
    assert [row["name"] for row in result["classes"]] == ["floor", "chair", "table"]
    assert [row["points"] for row in result["classes"]] == [5, 3, 2]
    assert [row["accuracy"] for row in result["classes"]] == pytest.approx([80.0, 200 / 3, 50.0])
    assert [row["iou"] for row in result["classes"]] == pytest.approx([400 / 6, 50.0, 50.0])
    assert result["mAcc"] == pytest.approx(100 * (0.8 + 2 / 3 + 0.5) / 3, abs=1e-3)
    assert result["F-mIoU"] == pytest.approx(100 * (4 / 6 * 5 / 10 + 0.5 * 3 / 10 + 0.5 * 2 / 10), abs=1e-3)
    assert (result["pairs"], result["missed_points"], result["far_voxels"], result["radius_m"]) == (10, 1, 0, 0.1)
    assert result["confusion"][0] == [4, 0, 0, 0, 1] and result["confusion"][3] == [0, 0, 0, 0, 0]
    assert "| floor | 5 | 80.00 | 66.67 |" in printed and "mAcc: 65.56" in printed and "F-mIoU: 58.33" in printed
    assert RANDOM_NOTICE in printed and result["weights"] == RANDOM_NOTICE


def test_the_command_scores_a_ply_ground_truth_as_the_same_npz(scene, tmp_path):
    assert run_cli(scene, "--json", str(tmp_path / "npz.json")) == 0
    assert run_cli(scene, "--json", str(tmp_path / "ply.json"), truth="gt.ply") == 0
    from_ply, from_npz = (json.loads((tmp_path / name).read_text()) for name in ("ply.json", "npz.json"))
    assert from_ply.pop("ground_truth").endswith("gt.ply") and from_npz.pop("ground_truth").endswith("gt.npz")
    assert from_ply == from_npz and from_ply["pairs"] == 10


def test_the_command_pairs_as_concept_graphs_with_map_to_gt(scene, tmp_path, capsys):
    """Each voxel takes its nearest ground-truth point's class: the far floor point pairs with no voxel, so the
    rows are floor [4, 0, 0], chair [1, 2, 0], table [0, 1, 1]; the 'other' voxel is left out."""
    assert run_cli(scene, "--association", "map-to-gt", "--json", str(tmp_path / "out.json")) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert [row["points"] for row in result["classes"]] == [4, 3, 2] and result["radius_m"] is None
    assert result["mAcc"] == pytest.approx(100 * (1 + 2 / 3 + 0.5) / 3, abs=1e-3)
    assert result["F-mIoU"] == pytest.approx(100 * (0.8 * 4 / 9 + 0.5 * 3 / 9 + 0.5 * 2 / 9), abs=1e-3)
    assert (result["pairs"], result["missed_points"], result["far_voxels"]) == (9, 0, 0)


@pytest.mark.parametrize("change,needle", [
    (("--exclude", "sofa"), "--exclude: sofa not in --classes"),
    (("--radius", "0"), "--radius must be positive"),
])
def test_the_command_refuses_bad_options_with_the_reason(scene, capsys, change, needle):
    assert run_cli(scene, *change) == 2
    assert needle in capsys.readouterr().err


def test_a_map_of_another_model_is_refused(scene, tmp_path, capsys):
    save_map(voxel_row(np.eye(3, 8, dtype=np.float32)), tmp_path / "other.npz")
    assert main([str(tmp_path / "other.npz"), "--ground-truth", str(scene / "gt.npz"), "--classes",
                 str(scene / "classes.txt"), *TINY]) == 2
    assert "the map holds 8-d features" in capsys.readouterr().err
