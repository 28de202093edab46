"""Shared fixtures: tiny random-weight models (real open_clip code paths, small sizes) for fast tests."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helper modules next to the tests

import ros_harness  # noqa: E402

ros_harness.configure_environment()  # before anything imports rclpy

TINY_MODEL = "ViT-Tiny-16-test"


@pytest.fixture(scope="session")
def tiny_clip():
    from clip_dinoiser_ros.model import random_clip

    return random_clip(TINY_MODEL, seed=0)


@pytest.fixture()
def tiny_engine(tiny_clip):
    from clip_dinoiser_ros.model import ClipDinoiser

    return ClipDinoiser(tiny_clip, None)


@pytest.fixture(scope="session")
def ros():
    """One rclpy context for the test process; nodes under test run in their own processes."""
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
