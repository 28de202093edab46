"""Shared fixtures: tiny random-weight models (real open_clip code paths, small sizes) for fast tests."""
import atexit
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# No test uses downloaded weights, and several check what happens when they are NOT cached (CLIP, the
# heads, the DINO teachers): the model caches of the person running the tests must not decide those. So
# this process and every process it starts (nodes, CLIs) see empty caches of their own, set before
# anything imports huggingface_hub (which reads HF_HOME once, on import).
_CACHES = tempfile.mkdtemp(prefix="clip_dinoiser_test_caches-")
atexit.register(shutil.rmtree, _CACHES, True)
for _variable, _folder in (("HF_HOME", "huggingface"), ("XDG_CACHE_HOME", "xdg"), ("TORCH_HOME", "torch")):
    os.environ[_variable] = os.path.join(_CACHES, _folder)
for _variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):  # these would override HF_HOME
    os.environ.pop(_variable, None)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helper modules next to the tests

import ros_harness  # noqa: E402

ros_harness.configure_environment()  # before anything imports rclpy
FIRST_DOMAIN = int(os.environ["ROS_DOMAIN_ID"])

TINY_MODEL = "ViT-Tiny-16-test"


@pytest.fixture(scope="session")
def tiny_clip():
    from clip_dinoiser_ros.model import random_clip

    return random_clip(TINY_MODEL, seed=0)


@pytest.fixture()
def tiny_engine(tiny_clip):
    from clip_dinoiser_ros.model import ClipDinoiser

    return ClipDinoiser(tiny_clip, None)


@pytest.fixture(autouse=True)
def own_user_cache(tmp_path_factory, monkeypatch):
    """Every test, and each process it starts, gets an empty user cache: text embeddings one test stored
    (the engine keeps them there across runs) must not spare another test the encoding it is about."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))


_MODULES = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def ros_domain():
    """Each test module talks in a DDS domain of its own, it and every process it starts.

    Once in CI, from one module on, every later test of the run failed discovery in the one shared domain
    (the probe, ``ros2 launch`` and the CLI alike): whatever breaks a domain now breaks one module.
    """
    domain = ros_harness.module_domain(FIRST_DOMAIN, next(_MODULES))
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    return domain


@pytest.fixture(scope="module")
def ros(ros_domain):
    """The test process's rclpy context, in this module's domain; nodes under test run in their own processes."""
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def probe(ros, request):
    """A test-side node shared by the tests of one module."""
    probe = ros_harness.Probe(f"probe_{request.module.__name__}")
    yield probe
    probe.close()
