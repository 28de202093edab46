"""What rosdep and pip install is what the code imports: package.xml, setup.py and its extras, clip_dinoiser_ros.extras."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from functools import lru_cache
from pathlib import Path

import pytest
import setuptools

from clip_dinoiser_ros.extras import EXTRAS

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "clip_dinoiser_ros").rglob("*.py"), *(REPO / "launch").rglob("*.py")])
# Which extra a module's imports may use beyond INSTALL_REQUIRES (everything else is the node's core path).
ROOMS = {"train": "train", "evaluation": "eval", "cli/eval.py": "eval", "cli/train.py": "train", "demo": "demo",
         "supervision.py": "demo",  # the demo starts the node with it (so do the tests)
         "model/onnx_export.py": "onnx", "model/onnx_backend.py": "onnx", "cli/export.py": "onnx"}
# Declared for a package that imports it itself: torch.onnx's exporter runs on onnxscript.
USED_WITHOUT_IMPORT = {"onnxscript"}
# Declared without a direct import: the generated messages' runtime, and the node's lifecycle services.
ROS_WITHOUT_IMPORT = {"rosidl_default_runtime", "lifecycle_msgs"}
# ROS packages whose Python module has another name: tf2_ros_py installs tf2_ros.
ROS_MODULE_PACKAGES = {"tf2_ros": "tf2_ros_py"}


def imported_names(path: Path) -> set[str]:
    """Dotted names of every absolute import in a file, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] not in {"__future__", "clip_dinoiser_ros"}}


def imported_modules(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_names(path)}


def room(path: Path) -> str | None:
    relative = path.relative_to(REPO / "clip_dinoiser_ros").as_posix() if "clip_dinoiser_ros" in path.parts else ""
    for prefix, extra in ROOMS.items():
        if relative == prefix or relative.startswith(prefix + "/"):
            return extra
    return None


def ros_packages() -> dict[str, str]:
    """The ROS package of each Python module that a package in the ament index provides."""
    from ament_index_python import get_packages_with_prefixes

    packages = set(get_packages_with_prefixes())
    return {**{name: name for name in packages},
            **{module: package for module, package in ROS_MODULE_PACKAGES.items() if package in packages}}


def normalized(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()


@pytest.fixture(scope="module")
def setup_arguments():
    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **arguments: captured.update(arguments)
    try:
        import runpy

        runpy.run_path(str(REPO / "setup.py"), run_name="setup_under_test")
    finally:
        setuptools.setup = original
    return captured


@lru_cache(maxsize=1)
def module_providers() -> dict[str, list[str]]:
    """Top-level module -> distributions, read once: each read scans every installed distribution (~0.1 s)."""
    return importlib.metadata.packages_distributions()


def distributions_of(module: str, dotted: set[str]) -> set[str]:
    """The distributions providing ``module``; for a namespace shared by several (rosbags, rosbags-image),
    only those that hold one of the submodules actually imported (``dotted``)."""
    names = module_providers().get(module, [])
    if len(names) > 1:
        wanted = {"/".join(name.split(".")[:2]) for name in dotted if name.split(".")[0] == module and "." in name}
        names = [name for name in names if any(
            str(file).startswith(tuple(f"{prefix}/" for prefix in wanted)) or str(file)[:-3] in wanted
            for file in importlib.metadata.distribution(name).files or ())]
    return {normalized(name) for name in names}


def third_party(modules: set[str], ros: dict[str, str]) -> set[str]:
    return {module for module in modules if module not in sys.stdlib_module_names and module not in ros}


def test_package_xml_declares_exactly_the_ros_packages_the_code_imports():
    ros = ros_packages()
    imported = {ros[module] for path in SOURCES for module in imported_modules(path) if module in ros}
    manifest = ElementTree.parse(REPO / "package.xml").getroot()
    declared = {element.text for tag in ("depend", "exec_depend") for element in manifest.iter(tag)}
    declared_ros = {name for name in declared if not name.startswith("python3-")}
    assert declared_ros - ROS_WITHOUT_IMPORT == imported, (
        f"imported but not in package.xml: {sorted(imported - declared_ros)}; "
        f"in package.xml but not imported: {sorted(declared_ros - ROS_WITHOUT_IMPORT - imported)}"
    )
    assert "python3-opencv" not in declared  # OpenCV comes from pip only (opencv-python-headless)


def test_setup_py_declares_each_import_in_its_room_and_nothing_unused(setup_arguments):
    ros = ros_packages()
    core = {normalized(requirement) for requirement in setup_arguments["install_requires"]}
    extras = {name: {normalized(r) for r in requirements} for name, requirements in setup_arguments["extras_require"].items()}
    used = set()
    for path in SOURCES:
        allowed = core | extras.get(room(path), set())
        for module in third_party(imported_modules(path), ros):
            providers = distributions_of(module, imported_names(path))
            assert providers, f"{path.relative_to(REPO)} imports {module}, which no installed distribution provides"
            assert providers & allowed, (
                f"{path.relative_to(REPO)} imports {module} ({sorted(providers)}), which is not in "
                f"{'INSTALL_REQUIRES' if room(path) is None else f'INSTALL_REQUIRES or [{room(path)}]'}"
            )
            used |= providers & allowed
    test_only = {"pytest", "pytest-timeout", "mcap", "mcap-ros2-support"}
    declared = core | set().union(*(extras[name] for name in ("train", "eval", "demo", "onnx")))
    assert declared - used - USED_WITHOUT_IMPORT == set(), f"declared but imported nowhere: {sorted(declared - used)}"
    assert extras["test"] == declared - core | test_only  # the tests run every command
    assert not any("opencv" in name and name != "opencv-python-headless" for name in declared | extras["test"])


def test_the_extras_guard_names_the_same_distributions_as_setup_py(setup_arguments):
    for extra, modules in EXTRAS.items():
        assert {normalized(name) for name in modules.values()} == {
            normalized(r) for r in setup_arguments["extras_require"][extra]
        }, extra


def test_pinned_requirements_list_every_declared_distribution_and_no_other_python_one(setup_arguments):
    declared = {normalized(r) for r in setup_arguments["install_requires"]}
    declared |= {normalized(r) for requirements in setup_arguments["extras_require"].values() for r in requirements}
    for distro in ("kilted", "jazzy"):
        lines = (REPO / ".ci" / f"requirements-{distro}.txt").read_text().splitlines()
        pinned = {normalized(line) for line in lines if "==" in line and not line.startswith("#")}
        assert declared <= pinned, (distro, sorted(declared - pinned))
        assert "rosbags-image" not in pinned and not {name for name in pinned if "std-srvs" in name}, distro
        assert sum("opencv" in name for name in pinned) == 1, distro


# Imported in a fresh interpreter outside the source tree, with the extras' modules made unimportable.
# (PyYAML stays: rclpy itself imports it.)
BLOCK_EXTRAS = """
import sys
for name in ("timm", "matplotlib", "skimage", "mcap", "mcap_ros2", "onnx", "onnxruntime", "onnxscript"):
    sys.modules[name] = None  # as if not installed: import raises ModuleNotFoundError, find_spec gives None
"""


def run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_EXTRAS + textwrap.dedent(code)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_the_node_and_its_commands_work_with_install_requires_alone(tmp_path):
    result = run_without_extras("""
        import importlib, pkgutil, sys
        import clip_dinoiser_ros
        assert not clip_dinoiser_ros.__file__.startswith(%r), clip_dinoiser_ros.__file__
        for room in ("model", "pipeline", "ros", "bag", "visualization"):
            package = importlib.import_module(f"clip_dinoiser_ros.{room}")
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{package.__name__}.{module.name}")
        import clip_dinoiser_ros.cli.segment, clip_dinoiser_ros.cli.bag, clip_dinoiser_ros.ros.run_node
        import numpy as np
        from clip_dinoiser_ros.model import ClipDinoiser, random_clip
        engine = ClipDinoiser(random_clip("ViT-Tiny-16-test", seed=0), None)
        engine.set_prompts(["sky", "road"])
        engine.segment(np.zeros((64, 80, 3), np.uint8), short_side=64)
        print("core ok", sorted(name for name, module in sys.modules.items()
                                if module is not None and name.split(".")[0] in {"timm", "matplotlib", "skimage"}))
    """ % str(REPO / "clip_dinoiser_ros"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "core ok []" in result.stdout


@pytest.mark.parametrize("command,arguments,extra,missing", [
    ("train", ["--images", "images", "--out", "heads.pt"], "train", "timm, matplotlib"),
    ("eval", ["--all", "--root", "data"], "eval", "matplotlib"),
])
def test_a_command_without_its_extra_says_which_to_install(tmp_path, command, arguments, extra, missing):
    result = run_without_extras(f"""
        import sys
        from clip_dinoiser_ros.cli.{command} import main
        sys.exit(main({arguments!r}))
    """, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"pip install 'clip_dinoiser_ros[{extra}]'" in result.stderr and f"({missing} not installed)" in result.stderr
    assert "Traceback" not in result.stderr


def test_package_xml_and_cmakelists_name_no_ros_distribution():
    """colcon builds them on any ROS 2 distribution from Jazzy on: nothing in them may name one."""
    distributions = ("humble", "iron", "jazzy", "kilted", "lyrical", "rolling")
    for name in ("package.xml", "CMakeLists.txt"):
        text = (REPO / name).read_text().lower()
        assert not [d for d in distributions if d in text], name


def test_make_defaults_to_jazzy_in_dot_venv():
    """The LTS is what a plain `make test`/`make demo` sets up (a sourced ROS 2 setup would export ROS_DISTRO)."""
    inherited = ("ROS_DISTRO", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # make test ROS_DISTRO=kilted passes it on
    environment = {name: value for name, value in os.environ.items() if name not in inherited}
    result = subprocess.run(["make", "-n", "-p", "--no-print-directory", "venv"], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env=environment)
    variables = dict(line.split(" := ", 1) for line in result.stdout.splitlines() if " := " in line)
    assert variables.get("VENV_ABS") == str(REPO / ".venv"), variables.get("VENV_ABS")
    assert variables.get("REQUIREMENTS") == ".ci/requirements-jazzy.txt"
