"""Work and memory nobody asked for: no full-resolution class map without ``probs``, a bounded cache."""
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from clip_dinoiser_ros.model import ClipDinoiser, DinoiserHeads
from clip_dinoiser_ros.model import dense_clip
from clip_dinoiser_ros.model import full_resolution as full_res

PROMPTS = ["background", "car", "tree", "road", "sky", "person", "wall", "grass"]


@pytest.fixture(scope="module")
def engine(tiny_clip):
    """Random heads whose objectness varies over the image, every patch uncertain (delta > 1): the
    background filter rewrites some patches and not others, leaving their probabilities unnormalised."""
    torch.manual_seed(4)
    heads = DinoiserHeads(64)
    for parameter in heads.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    engine = ClipDinoiser(tiny_clip, heads.state_dict(), delta=1.01)
    engine.set_prompts(PROMPTS)
    return engine


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


SETTINGS = {
    "whole-448": dict(mode="whole"),
    "whole-96": dict(mode="whole", short_side=96),
    "slide-96": dict(mode="slide", short_side=96, window=64, stride=32),
}


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("height,width", [(150, 230), (233, 141)])
def test_without_probs_equals_with_probs_in_small_chunks(engine, monkeypatch, height, width, setting, background):
    image = photo(height, width)
    kwargs = dict(SETTINGS[setting], background=background)
    full = engine.segment(image, **kwargs)  # all 8 classes in one chunk at this size
    monkeypatch.setattr(full_res, "CHUNK_VALUES", 3 * height * width)  # chunks of 3, 3 and 2 classes
    light = engine.segment(image, probs=False, **kwargs)
    assert light.probs is None
    np.testing.assert_array_equal(light.labels, full.labels)
    np.testing.assert_allclose(light.confidence, full.confidence, rtol=0, atol=1e-6)
    np.testing.assert_allclose(light.class_max, full.class_max, rtol=0, atol=1e-6)
    assert light.labels.dtype == np.int32 and light.labels.shape == (height, width)
    assert light.confidence.dtype == np.float32 and light.confidence.shape == (height, width)
    assert light.class_max.dtype == np.float32 and light.class_max.shape == (len(PROMPTS),)
    if background:
        assert 0 < (full.labels == 0).mean() < 1, "the background filter should rewrite some patches only"


@pytest.mark.parametrize("keep", [True, False])
def test_class_max_is_the_maximum_of_each_class_map(engine, keep):
    image = photo(150, 230, seed=1)
    probs = engine.segment(image).probs
    class_max = engine.segment(image, probs=keep).class_max
    np.testing.assert_array_equal(class_max, probs.reshape(len(PROMPTS), -1).max(axis=1))


def test_chunked_outputs_equal_one_resize_of_all_classes(monkeypatch):
    """Against the direct formula (resize every class, divide by the per-pixel sum, argmax), on maps whose
    per-pixel sums are not 1, as background filtering leaves them, and with ties across chunks."""
    torch.manual_seed(0)
    inference_probs = torch.rand(1, 7, 19, 26).softmax(dim=1)
    inference_probs[:, 0] = torch.where(torch.rand(19, 26) < 0.4, 1.0, inference_probs[:, 0])
    inference_probs[:, 4] = inference_probs[:, 1] = inference_probs[:, 1:].amax(dim=1)  # the first one wins
    size = (45, 61)
    direct = F.interpolate(inference_probs, size=size, mode="bilinear", align_corners=False)[0]
    direct = direct / direct.sum(dim=0, keepdim=True)
    monkeypatch.setattr(full_res, "CHUNK_VALUES", 2 * size[0] * size[1])
    chunked = full_res.full_resolution(inference_probs, size, keep_probs=True)
    light = full_res.full_resolution(inference_probs, size, keep_probs=False)
    confidence, labels = direct.max(dim=0)
    for outputs in (chunked, light):
        torch.testing.assert_close(outputs.labels, labels, rtol=0, atol=0)
        torch.testing.assert_close(outputs.confidence, confidence, rtol=0, atol=1e-6)
        torch.testing.assert_close(outputs.class_max, direct.amax(dim=(1, 2)), rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked.probs, direct, rtol=0, atol=1e-6)
    assert light.probs is None


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any torch operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.numel = max([self.numel, *sizes])
        return out


def largest_tensor_of(call) -> int:
    with LargestTensor() as spy:
        call()
    return spy.numel


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_no_full_resolution_class_map_without_probs(engine, monkeypatch, mode):
    """A 200x300 image at 48 pixels short side: only the full-resolution outputs are large. With 8
    classes the K x H x W map has 8HW values; without it nothing exceeds the image itself (3HW floats)."""
    height, width = 200, 300
    image = photo(height, width, seed=2)
    monkeypatch.setattr(full_res, "CHUNK_VALUES", 2 * height * width)
    kwargs = dict(mode=mode, short_side=48, window=32, stride=16)
    assert largest_tensor_of(lambda: engine.segment(image, **kwargs)) >= len(PROMPTS) * height * width
    assert largest_tensor_of(lambda: engine.segment(image, probs=False, **kwargs)) <= 3 * height * width


def test_positional_embedding_cache_keeps_the_most_recently_used_sizes(tiny_engine):
    encoder = tiny_engine.encoder
    first = encoder.positional_embedding((3, 5), torch.float32).clone()
    evicted = encoder.positional_embedding((1, 7), torch.float32).clone()
    for rows in range(2, 3 * dense_clip.POS_CACHE_SIZE):
        encoder.positional_embedding((rows, 7), torch.float32)
        encoder.positional_embedding((3, 5), torch.float32)  # used again and again: never dropped
        assert len(encoder._pos_cache) <= dense_clip.POS_CACHE_SIZE
    assert len(encoder._pos_cache) == dense_clip.POS_CACHE_SIZE
    cached_grids = {key[0] for key in encoder._pos_cache}
    assert (3, 5) in cached_grids and (1, 7) not in cached_grids
    assert torch.equal(encoder.positional_embedding((1, 7), torch.float32), evicted)
    assert torch.equal(encoder.positional_embedding((3, 5), torch.float32), first)


def test_positional_embedding_cache_from_many_threads_equals_sequential(tiny_engine):
    encoder = tiny_engine.encoder
    grids = [(rows, cols) for rows in range(1, 7) for cols in range(1, 7)]
    expected = {grid: encoder._resize_positional_embedding(encoder.visual.positional_embedding, grid) for grid in grids}
    failures = []

    def run(offset: int) -> None:
        for grid in grids[offset:] + grids[:offset]:
            if not torch.equal(encoder.positional_embedding(grid, torch.float32), expected[grid]):
                failures.append(grid)

    threads = [threading.Thread(target=run, args=(i * 5,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(encoder._pos_cache) == dense_clip.POS_CACHE_SIZE
