"""The GPU bundle (``make gpu-bundle``): built, then its check run on the CPU by a bare interpreter.

That interpreter sees torch, numpy and opencv (and what they need) and nothing else: not open_clip,
not ROS, not this package's install, so the bundle's own wheels and stand-ins must carry the run, as on
a GPU machine with only ``python3`` and torch. The CPU run takes the tiny tower and skips, with the
reason, what needs a GPU build (ONNX, ONNX Runtime on CUDA).
"""
import importlib.metadata as metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from frame_sources import require_shared_data

REPO = Path(__file__).resolve().parents[1]
VISIBLE = ("torch", "numpy", "opencv-python-headless")
MUST_RUN_ON_CPU = {"precision", "bench_gpu", "torch_compile", "process_group"}


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "gpu_check" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requirement_closure(roots: tuple[str, ...]) -> set[str]:
    """The distributions ``roots`` need to import (their requirements without extras, transitively)."""
    seen, todo = set(), list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name not in seen:
            seen.add(name)
            todo += [r.name for r in map(Requirement, metadata.requires(name) or [])
                     if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen


def bare_site(folder: Path) -> Path:
    """A folder of links to only the VISIBLE distributions' top-level files, as a bare machine's site-packages."""
    folder.mkdir()
    for name in sorted(requirement_closure(VISIBLE)):
        dist = metadata.distribution(name)
        root = Path(dist.locate_file(""))
        for top in {file.parts[0] for file in dist.files or [] if file.parts[0] not in ("..", "__pycache__")}:
            if (root / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(root / top)
    return folder


def bare_python(site: Path, cwd: Path, *arguments: str, timeout: int) -> subprocess.CompletedProcess:
    """The venv's interpreter without its site-packages (-S -s), seeing only ``site``."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(cwd)), "PYTHONPATH": str(site),
           "HF_HUB_OFFLINE": "1", **{k: os.environ[k] for k in ("HF_HOME", "XDG_CACHE_HOME", "TORCH_HOME")
                                     if k in os.environ}}
    return subprocess.run([sys.executable, "-s", "-S", *arguments], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_bundle_checks_the_cpu_with_only_torch_numpy_and_opencv_present(tmp_path):
    data = require_shared_data("camvid").parent
    manifest = load("make_bundle").build(tmp_path / "gpu_bundle", data)
    assert manifest["bytes"] < 40 * 2**20 and len(manifest["frames"]) == 3
    assert all(wheel.endswith("-py3-none-any.whl") for wheel in manifest["wheels"])
    site = bare_site(tmp_path / "site")

    probe = bare_python(site, tmp_path, "-c", "import importlib.util as u; print([m for m in ('torch', 'numpy', "
                        "'cv2', 'open_clip', 'rclpy', 'clip_dinoiser_ros', 'regex', 'torchvision') if u.find_spec(m)])",
                        timeout=120)
    assert probe.stdout.strip() == "['torch', 'numpy', 'cv2']", probe.stderr

    out = tmp_path / "results"
    run = bare_python(site, tmp_path, str(tmp_path / "gpu_bundle" / "gpu_check.py"), "--out", str(out),
                      "--device", "cpu", timeout=800)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((out / "results.json").read_text())
    assert Path(report["environment"]["open_clip_from"]).is_relative_to(out)  # the bundle's wheel, unpacked
    assert {"regex", "torchvision"} <= set(report["environment"]["stood_in"])
    steps = report["steps"]
    assert all(step["status"] == "passed" for name, step in steps.items() if name in MUST_RUN_ON_CPU), steps
    assert all(step["status"] == "skipped" and step["reason"] for name, step in steps.items()
               if name not in MUST_RUN_ON_CPU), steps
    assert steps["precision"]["details"]["fp16"]["skipped"]  # the engine's own refusal, recorded
    assert steps["process_group"]["details"]["backend"] == "gloo"
    assert len(steps["bench_gpu"]["details"]["engine_vs_encode_image"]) == 2  # 448x448, batches 1 and 2
    markdown = (out / "results.md").read_text()
    assert "| process_group | passed |" in markdown and "engine/encode_image" in markdown


def test_the_regex_stand_in_tokenizes_as_regex_does(monkeypatch):
    import open_clip

    from clip_dinoiser_ros.model.templates import TEMPLATE_SETS

    texts = [template(name) for name in ("traffic light", "chair|seat", "Straße", "café", "x_y 3-4 a!?", "日本 語")
             for template in TEMPLATE_SETS["imagenet"]]
    reference = open_clip.tokenizer.SimpleTokenizer()  # built once: a tokenizer takes ~0.08 s to build
    expected = [reference.encode(text) for text in texts]
    monkeypatch.setattr(open_clip.tokenizer, "re", load("bundle_env").regex_stand_in())
    standing_in = open_clip.tokenizer.SimpleTokenizer()
    assert [standing_in.encode(text) for text in texts] == expected


def test_a_binary_wheel_is_not_carried(tmp_path):
    with pytest.raises(SystemExit, match="numpy .* is not a pure-Python wheel"):
        load("make_bundle").pure_wheel("numpy", tmp_path)


def test_each_step_is_saved_as_it_ends_and_a_hung_step_is_stopped(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "gpu_check"))
    gpu_check = load("gpu_check")
    from check_steps import Skipped

    def skipped(_):
        raise Skipped("no GPU build here")

    saved = []
    started = time.monotonic()
    results = gpu_check.run_steps(SimpleNamespace(cuda=False), {
        "quick": lambda _: {"figure": 1}, "hangs": lambda _: time.sleep(600), "skipped": skipped,
    }, ["quick", "hangs", "skipped"], timeout_s=1.0, on_step=lambda so_far: saved.append(dict(so_far)))
    assert time.monotonic() - started < 300  # the hung step did not run its 600 s
    assert [list(step) for step in saved] == [["quick"], ["quick", "hangs"], ["quick", "hangs", "skipped"]]
    assert results["quick"] == {"status": "passed", "details": {"figure": 1}, "seconds": results["quick"]["seconds"]}
    assert results["hangs"]["status"] == "failed" and "time limit" in results["hangs"]["error"]
    assert results["skipped"]["status"] == "skipped"
