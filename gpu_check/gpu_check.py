"""Check a GPU machine with nothing but ``python3`` and torch (with CUDA) on it, offline.

    python3 gpu_bundle/gpu_check.py --out DIR [--device cuda] [--steps precision bench_gpu ...]

Built by ``make gpu-bundle`` (gpu_check/make_bundle.py). Runs the engine's CUDA checks (fp16 and bf16 vs
fp32 on real CamVid frames: whole, slide, a batch of two cameras), bench/bench_gpu.py, the ONNX export
and ONNX Runtime on CUDA/TensorRT (skipped, with the reason, without a GPU build), torch.compile and CUDA
graphs (bench/bench_compile.py) and distributed.Ranks' NCCL set-up with every collective the tools use.
Each step runs on its own: a failing one is recorded with its traceback and the others still run, a step
past ``--step-timeout`` is stopped (where it comes back to Python) and recorded as failed. DIR/results.json
and DIR/results.md are written again after every step, so a run killed by the device's time limit still
leaves the steps it finished. Exits 1 when a step failed. Random weights throughout:
arithmetic and timing, never segmentation quality. ``--device cpu`` runs the tiny tower (the test suite).
"""
from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import bundle_env

BUNDLE = Path(__file__).resolve().parent
MODELS = {"cuda": "ViT-B-16", "cpu": "ViT-Tiny-16-test"}
STEP_TIMEOUT_S = 240  # a lent GPU has 15 minutes in all: one hung step must not take the others' time


class StepTimeout(Exception):
    pass


def _time_is_up(*_: Any) -> None:
    raise StepTimeout("the step ran past its time limit (--step-timeout)")


def run_steps(check: Any, steps: dict[str, Any], names: list[str], timeout_s: float = STEP_TIMEOUT_S,
              on_step: Callable[[dict[str, dict[str, Any]]], None] = lambda results: None) -> dict[str, dict[str, Any]]:
    """Each step isolated: passed with its figures, skipped with the reason, or failed with the traceback
    (a time-out too); ``on_step`` gets the results so far after each step."""
    from check_steps import Skipped

    results: dict[str, dict[str, Any]] = {}
    previous = signal.signal(signal.SIGALRM, _time_is_up)
    try:
        for name in names:
            started = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                results[name] = {"status": "passed", "details": steps[name](check)}
            except Skipped as reason:
                results[name] = {"status": "skipped", "reason": str(reason)}
            except Exception as error:  # recorded; the other steps still run
                results[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                 "traceback": traceback.format_exc()}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            results[name]["seconds"] = round(time.perf_counter() - started, 2)
            print(f"gpu_check: {name} {results[name]['status']} in {results[name]['seconds']} s", file=sys.stderr,
                  flush=True)
            on_step(results)
            if check.cuda:
                torch.cuda.empty_cache()
    finally:
        signal.signal(signal.SIGALRM, previous)
    return results


def markdown(report: dict[str, Any]) -> str:
    """results.md: the environment, one line per step, the benchmark tables, the other figures."""
    env = report["environment"]
    lines = [f"# GPU check: {env['device_name']}", "",
             f"torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, model {env['model']} with RANDOM "
             f"weights (arithmetic and timing, not segmentation quality); stood in for: {env['stood_in'] or 'nothing'}",
             "", "| step | status | seconds | note |", "| --- | --- | --- | --- |"]
    for name, step in report["steps"].items():
        note = step.get("reason") or step.get("error") or ""
        lines.append(f"| {name} | {step['status']} | {step['seconds']} | {note.splitlines()[0] if note else ''} |")
    bench = report["steps"].get("bench_gpu", {})
    if bench.get("status") == "passed":
        import bench_gpu

        lines += ["", "## bench_gpu", "", bench_gpu.markdown(bench["details"])]
    for name, step in report["steps"].items():
        if name != "bench_gpu" and step["status"] == "passed":
            lines += ["", f"## {name}", "", "```json", json.dumps(step["details"], indent=1), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json, results.md, work files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", nargs="+", help="run only these steps (default: all)")
    parser.add_argument("--step-timeout", type=float, default=STEP_TIMEOUT_S, help="seconds allowed to each step")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepared = bundle_env.prepare(BUNDLE, args.out / "work")
    from check_steps import STEPS, Check  # after prepare: they import the bundle's open_clip

    device = torch.device(args.device)
    names = args.steps or list(STEPS)
    unknown = sorted(set(names) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; steps: {list(STEPS)}")
    frames = [np.load(path) for path in sorted((BUNDLE / "frames").glob("*.npy"))]
    check = Check(device, MODELS[device.type], frames, args.out)
    report = {"environment": {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if check.cuda else platform.processor()
        or "CPU", "model": check.model, "frames": [f"{f.shape[0]}x{f.shape[1]}" for f in frames], **prepared}}

    def save(results: dict[str, dict[str, Any]]) -> None:
        report["steps"] = results
        report["seconds"] = round(time.perf_counter() - started, 1)
        (args.out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        (args.out / "results.md").write_text(markdown(report))

    save({})  # the environment, before any step can hang
    run_steps(check, STEPS, names, args.step_timeout, on_step=save)
    print(f"gpu_check: {args.out / 'results.md'} ({report['seconds']} s)", file=sys.stderr)
    return 1 if any(step["status"] == "failed" for step in report["steps"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
