"""Shared fixtures: tiny random-weight models (real open_clip code paths, small sizes) for fast tests."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helper modules next to the tests

TINY_MODEL = "ViT-Tiny-16-test"


@pytest.fixture(scope="session")
def tiny_clip():
    from clip_dinoiser_ros.model import random_clip

    return random_clip(TINY_MODEL, seed=0)


@pytest.fixture()
def tiny_engine(tiny_clip):
    from clip_dinoiser_ros.model import ClipDinoiser

    return ClipDinoiser(tiny_clip, None)
