"""clip-dinoiser-segment end to end: real photos in, PNG files out, failures reported with exit codes.

Random tiny weights keep this fast; the tests check files, formats and error handling, not quality.
"""
import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

import clip_dinoiser_ros.model.heads
from clip_dinoiser_ros.cli.segment import NO_HEADS_MESSAGE, main
from clip_dinoiser_ros.model import DinoiserHeads, save_checkpoint
from clip_dinoiser_ros.model.heads_download import RemoteFile, resolve_heads
from clip_dinoiser_ros.visualization import RANDOM_NOTICE, class_palette

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["background", "person", "cat", "cup"]
RANDOM_TINY = ["--clip-model", "ViT-Tiny-16-test", "--random-weights", "--short-side", "224"]


def write_photo(folder: Path, name: str, array: np.ndarray, mode: str = "RGB") -> Path:
    path = folder / name
    Image.fromarray(array).convert(mode).save(path)
    return path


def run_cli(images, out: Path, *extra: str) -> int:
    return main([*map(str, images), "--prompts", *PROMPTS, "--out", str(out), *RANDOM_TINY, *extra])


def run_subprocess(*args: str, home: Path) -> subprocess.CompletedProcess:
    # empty model caches of its own (weights someone downloaded must not change the outcome)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HOME": str(home),
           "XDG_CACHE_HOME": str(home / "xdg"), "TORCH_HOME": str(home / "torch")}
    return subprocess.run(
        [sys.executable, "-m", "clip_dinoiser_ros.cli.segment", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )


def assert_outputs(out: Path, stem: str, size: tuple[int, int], num_classes: int) -> None:
    labels = Image.open(out / f"{stem}_labels.png")
    assert labels.mode == "P" and labels.size == size
    assert np.asarray(labels).max() < num_classes
    palette = np.frombuffer(labels.palette.tobytes(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette[:num_classes], class_palette(num_classes))
    assert json.loads(labels.text["classes"]) == PROMPTS[:num_classes]
    confidence = Image.open(out / f"{stem}_confidence.png")
    assert confidence.mode == "I;16" and confidence.size == size
    # The winning probability of K classes is at least 1/K.
    assert np.asarray(confidence).min() >= np.floor(65535 / num_classes)
    overlay = Image.open(out / f"{stem}_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == size


def test_photos_give_labels_overlay_and_confidence(tmp_path, capsys):
    png = write_photo(tmp_path, "astronaut.png", skimage.data.astronaut())
    jpeg = write_photo(tmp_path, "chelsea.jpg", skimage.data.chelsea())
    out = tmp_path / "out"
    assert run_cli([png, jpeg], out) == 0
    assert_outputs(out, "astronaut", (512, 512), len(PROMPTS))
    assert_outputs(out, "chelsea", (451, 300), len(PROMPTS))
    captured = capsys.readouterr()
    assert str(out / "astronaut_labels.png") in captured.out and " s\n" in captured.out
    assert "2/2" in captured.err  # the progress bar, shown for several images


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_images_are_read_as_rgb(tmp_path, mode):
    path = write_photo(tmp_path, f"coffee_{mode}.png", skimage.data.coffee(), mode)
    assert run_cli([path], tmp_path / "out", "--mode", "slide") == 0
    assert_outputs(tmp_path / "out", path.stem, (600, 400), len(PROMPTS))


def test_unreadable_images_are_reported_and_the_others_processed(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    missing = tmp_path / "missing.jpg"
    good = write_photo(tmp_path, "coffee.png", skimage.data.coffee())
    assert run_cli([broken, missing, good], tmp_path / "out") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert any(str(broken) in line for line in errors)
    assert any(str(missing) in line and "No such file" in line for line in errors)
    assert "error: 2 of 3 images failed" in errors
    assert_outputs(tmp_path / "out", "coffee", (600, 400), len(PROMPTS))
    assert not list((tmp_path / "out").glob("broken*"))


def test_random_weights_are_labelled_on_stderr_and_in_the_overlay(tmp_path, capsys):
    path = write_photo(tmp_path, "astronaut.png", skimage.data.astronaut())
    assert run_cli([path], tmp_path / "out") == 0
    assert RANDOM_NOTICE in capsys.readouterr().err
    overlay = np.asarray(Image.open(tmp_path / "out" / "astronaut_overlay.png")).astype(int)
    bottom = overlay[-5:]
    red = (bottom[..., 0] == 200) & (bottom[..., 1] == 0) & (bottom[..., 2] == 0)
    assert red.mean() > 0.9  # the "RANDOM WEIGHTS - NOT A RESULT" band
    metadata = Image.open(tmp_path / "out" / "astronaut_labels.png").text
    assert metadata["weights"] == RANDOM_NOTICE


def test_runs_as_a_module_in_a_fresh_process(tmp_path):
    path = write_photo(tmp_path, "chelsea.jpg", skimage.data.chelsea())
    result = run_subprocess(
        str(path), "--prompts", *PROMPTS, "--out", str(tmp_path / "out"), *RANDOM_TINY, home=tmp_path / "hf"
    )
    assert result.returncode == 0, result.stderr
    assert_outputs(tmp_path / "out", "chelsea", (451, 300), len(PROMPTS))


def test_missing_clip_weights_exit_2_with_instructions_and_no_traceback(tmp_path):
    heads = tmp_path / "last.pt"
    save_checkpoint(DinoiserHeads(64), heads, epoch=1)
    photo = write_photo(tmp_path, "coffee.png", skimage.data.coffee())
    result = run_subprocess(
        str(photo), "--prompts", *PROMPTS, "--out", str(tmp_path / "out"), "--heads", str(heads), home=tmp_path / "hf"
    )
    assert result.returncode == 2
    assert "ViT-B-16/laion2b_s34b_b88k are not in the cache" in result.stderr
    assert "--clip-pretrained PATH" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("*.png"))


def test_missing_heads_file_exits_2_naming_the_file(tmp_path, capsys):
    photo = write_photo(tmp_path, "coffee.png", skimage.data.coffee())
    missing = tmp_path / "checkpoints" / "last.pt"
    code = main([str(photo), "--prompts", *PROMPTS, "--out", str(tmp_path / "out"), "--heads", str(missing)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{missing} does not exist" in err and "published checkpoints/last.pt" in err
    assert "Traceback" not in err


def test_empty_heads_without_random_weights_the_published_heads_are_asked_for(tmp_path, capsys):
    photo = write_photo(tmp_path, "coffee.png", skimage.data.coffee())
    assert main([str(photo), "--prompts", *PROMPTS, "--out", str(tmp_path / "out"), "--heads", ""]) == 2
    err = capsys.readouterr().err
    assert NO_HEADS_MESSAGE in err and "--heads PATH" in err


def test_without_heads_the_published_checkpoint_is_fetched_and_offline_says_where_to_put_it(
    tmp_path, capsys, monkeypatch
):
    with socket.socket() as probe:  # a port nobody listens on: the download fails at once, as offline
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/checkpoints/last.pt"
    offline = functools.partial(resolve_heads, published=RemoteFile(url, "0" * 40))
    monkeypatch.setattr(clip_dinoiser_ros.model.heads, "resolve_heads", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    photo = write_photo(tmp_path, "coffee.png", skimage.data.coffee())
    assert main([str(photo), "--prompts", *PROMPTS, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"could not download the CLIP-DINOiser heads checkpoint from {url}" in err
    assert str(tmp_path / "cache" / "clip_dinoiser_ros" / "heads") in err and "--heads PATH" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "images,prompts,needle",
    [
        (["a/x.png", "b/x.png"], ["cat"], "overwrite each other"),
        (["x.png"], ["cat", "Cat"], "duplicate class names"),
    ],
)
def test_bad_arguments_exit_2_before_loading_anything(tmp_path, capsys, images, prompts, needle):
    argv = [*(str(tmp_path / i) for i in images), "--prompts", *prompts, "--out", str(tmp_path / "out"), *RANDOM_TINY]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_precision_the_cpu_cannot_run_exits_2_with_the_fix_and_fp32_runs(tmp_path, capsys):
    photo = write_photo(tmp_path, "photo.png", np.zeros((40, 60, 3), np.uint8))
    assert run_cli([photo], tmp_path / "out", "--precision", "fp16") == 2
    assert "--precision: precision 'fp16' is for CUDA devices" in capsys.readouterr().err
    assert run_cli([photo], tmp_path / "out", "--precision", "fp32") == 0
    assert (tmp_path / "out" / "photo_labels.png").exists()
