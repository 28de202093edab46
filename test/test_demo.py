"""clip-dinoiser-demo end to end: node process, real photos over DDS, files out, clear refusal without weights.

Random tiny weights keep this fast; the checks are about plumbing (exit codes, files, banners), not quality.
"""
import os
import socket
import subprocess
import sys

import numpy as np
from PIL import Image

from clip_dinoiser_ros.demo.checks import NO_HEADS_MESSAGE, check_weights
from clip_dinoiser_ros.demo.stream_photos import build_parser
from clip_dinoiser_ros.visualization import RANDOM_NOTICE, RANDOM_STAMP
from clip_dinoiser_ros.visualization import class_palette

PROMPTS = ["background", "person", "cat", "cup", "rocket"]


def run_demo(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clip_dinoiser_ros.demo.stream_photos", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_random_weights_demo_streams_photos_and_writes_files(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(
        "--random-weights", "--clip-model", "ViT-Tiny-16-test", "--frames", "4", "--rate", "4", "--out", str(out),
        env=dict(os.environ),
    )
    log = (out / "node.log").read_text(errors="replace") if (out / "node.log").exists() else "(no node log)"
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n--- node log ---\n{log}"
    assert "Traceback" not in result.stdout + result.stderr
    # The banner at the start, in the summary and at the end.
    assert result.stdout.count(RANDOM_NOTICE) >= 3
    assert "===== clip-dinoiser-demo summary =====" in result.stdout
    assert "frames sent: 4" in result.stdout and "median" in result.stdout
    assert "node stopped (SIGINT, exit status 0)" in result.stdout
    inputs = sorted(out.glob("*_input.png"))
    assert inputs, result.stdout
    for path in inputs:
        index = path.name.split("_")[0]
        assert Image.open(path).size == (640, 480)
        mask = Image.open(out / f"{index}_mask.png")
        assert mask.mode == "P" and mask.size == (640, 480)
        assert np.asarray(mask).max() < len(PROMPTS)
        palette = np.frombuffer(mask.palette.tobytes(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(palette[: len(PROMPTS)], class_palette(len(PROMPTS)))
        overlay = np.asarray(Image.open(out / f"{index}_overlay.png"))
        assert overlay.shape == (480, 640, 3)
        # The random-weights stamp: a red band across the bottom.
        bottom = overlay[-3:].reshape(-1, 3).astype(int)
        assert (bottom[:, 0] > 150).mean() > 0.5 and (bottom[:, 1] < 60).mean() > 0.5
    assert "RANDOM WEIGHTS" in RANDOM_STAMP


def test_the_published_heads_are_the_default_and_empty_heads_are_asked_for(tmp_path):
    assert build_parser().parse_args([]).heads == "published"  # `make demo` needs no arguments
    args = build_parser().parse_args(["--heads", "", "--clip-pretrained", str(tmp_path / "absent.bin")])
    assert check_weights(args)[0] == NO_HEADS_MESSAGE


def test_without_weights_the_demo_stops_with_instructions(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path)}
    out = tmp_path / "demo"
    with socket.socket() as probe:  # a port nobody listens on: the heads download fails at once, as offline
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/checkpoints/last.pt"
    result = run_demo("--out", str(out), "--heads", url, env=env, timeout=120)
    assert result.returncode == 2, f"{result.stdout}\n{result.stderr}"
    assert f"could not download the CLIP-DINOiser heads checkpoint from {url}" in result.stderr
    assert str(tmp_path / "clip_dinoiser_ros" / "heads") in result.stderr and "--heads PATH" in result.stderr
    assert "ViT-B-16/laion2b_s34b_b88k are not in the cache" in result.stderr
    assert "make demo WEIGHTS=random" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not out.exists() or not list(out.glob("*.png"))
