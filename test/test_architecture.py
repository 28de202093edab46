"""Functional core, imperative shell: the engine, the frame pipeline, the RGB-D geometry, evaluation and
training never use rclpy.

Checked twice: no source file there names rclpy in an import, and importing every module there (in a
fresh interpreter, so nothing else has loaded it) leaves rclpy unloaded. Message packages (sensor_msgs,
vision_msgs) are data classes and allowed: the pipeline builds the messages the node publishes.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clip_dinoiser_ros"  # the sources (not the generated msg/, srv/)
CORE = ["model", "pipeline", "spatial", "evaluation", "train", "mapping"]
IMPORT_ALL = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(module.name)
    if "rclpy" in sys.modules:
        sys.exit(f"importing {module.name} loaded rclpy")
"""


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room", CORE)
def test_no_source_file_of_the_core_imports_rclpy(room):
    offenders = [str(path.relative_to(PACKAGE)) for path in sorted((PACKAGE / room).rglob("*.py"))
                 if any(name == "rclpy" or name.startswith("rclpy.") for name in imported_modules(path))]
    assert not offenders, offenders


@pytest.mark.parametrize("room", CORE)
def test_importing_every_module_of_the_core_leaves_rclpy_unloaded(room):
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL, f"clip_dinoiser_ros.{room}"], capture_output=True,
                            text=True, timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_check_sees_an_rclpy_import(tmp_path):
    """The AST check is not blind: it finds both spellings."""
    module = tmp_path / "shell.py"
    module.write_text("import rclpy.node\nfrom rclpy.qos import QoSProfile\n")
    assert imported_modules(module) == {"rclpy.node", "rclpy.qos"}


def test_importing_the_product_leaves_open_clip_s_registry_alone():
    """The tiny test tower is registered where random weights need it, never as a side effect of an import."""
    probe = ("import importlib, pkgutil, open_clip, clip_dinoiser_ros as p\n"
             "[importlib.import_module(m.name) for m in pkgutil.walk_packages(p.__path__, 'clip_dinoiser_ros.')\n"
             " if m.name.startswith(('clip_dinoiser_ros.model', 'clip_dinoiser_ros.cli', 'clip_dinoiser_ros.pipeline'))]\n"
             "assert 'ViT-Tiny-16-test' not in open_clip.list_models(), 'registered on import'\n"
             "from clip_dinoiser_ros.model.clip_loading import random_clip\n"
             "random_clip('ViT-Tiny-16-test')\n"
             "assert 'ViT-Tiny-16-test' in open_clip.list_models()\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_module_is_over_400_lines():
    long = {str(path.relative_to(PACKAGE)): lines for path in PACKAGE.rglob("*.py")
            if (lines := len(path.read_text().splitlines())) > 400}
    assert not long, long
