"""The engine's features for mappers: the guided-pooled, normalised patch features and the objectness come from
the pass that segments the frame, and reproduce its class probabilities for any text."""
import numpy as np
import pytest
import torch

from clip_dinoiser_ros.model.guided_pooling import LOGIT_SCALE
from clip_dinoiser_ros.spatial import PatchGrid

PROMPTS = ["background", "road", "car", "tree"]


@pytest.fixture()
def engine(tiny_engine):
    tiny_engine.set_prompts(PROMPTS)
    return tiny_engine


def count_vit_passes(engine):
    calls = []
    handle = engine.encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def scores_from_features(features, objectness, texts, delta, background):
    """What a consumer does with the features: 100 * cosine, softmax, the background rule on the objectness."""
    logits = LOGIT_SCALE * np.einsum("ehw,ke->khw", features, texts)
    probs = np.exp(logits - logits.max(axis=0))
    probs /= probs.sum(axis=0)
    if background:
        rule = (probs.max(axis=0) < delta) & (objectness <= 0.5)
        probs[0][rule] = 1.0
    return probs


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("height,width", [(120, 160), (97, 61)])
def test_features_reproduce_the_engine_s_patch_probabilities_from_one_pass(engine, height, width, background):
    image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    calls, handle = count_vit_passes(engine)
    try:
        result = engine.segment(image, short_side=112, background=background, features=True)
    finally:
        handle.remove()
    assert len(calls) == 1, "features must come from the pass that segmented the frame"
    frame = result.features
    dim = engine.vocabulary.text_embeddings.shape[1]
    assert frame.grid.image_size == (height, width) and frame.features.shape == (dim, *frame.grid.shape)
    assert frame.objectness.shape == frame.grid.shape and frame.features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(frame.features, axis=0), 1.0, atol=1e-5)
    assert ((frame.objectness > 0) & (frame.objectness < 1)).all()

    with torch.inference_mode():
        resized = engine._resized_tensor(image, 112)
        patch_probs = engine._patch_outputs(resized, engine.vocabulary, background, engine.gamma)[0][0].numpy()
    texts = engine.vocabulary.text_embeddings.numpy()
    ours = scores_from_features(frame.features, frame.objectness, texts, engine.delta, background)
    np.testing.assert_allclose(ours, patch_probs, atol=2e-4)
    np.testing.assert_array_equal(result.labels, engine.segment(image, short_side=112, background=background).labels)


def test_the_grid_maps_every_pixel_to_the_patch_that_holds_it(engine):
    image = np.zeros((100, 150, 3), np.uint8)
    grid = engine.segment(image, short_side=64, features=True).features.grid
    assert grid == PatchGrid((100, 150), (64, 96), engine.patch_size)
    patches = grid.pixel_patches()
    assert patches.shape == (100, 150) and patches.max() == grid.shape[0] * grid.shape[1] - 1
    # pixel u's centre lands on resized column (u + 0.5) * 96 / 150: 15.68 for u = 24, 16.32 for u = 25
    assert (patches[0, 24], patches[0, 25]) == (0, 1)
    assert patches[99, 149] == grid.shape[0] * grid.shape[1] - 1


def test_a_batch_of_cameras_gives_each_its_features_from_one_shared_pass(engine):
    images = [np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8) for seed in (1, 2)]
    calls, handle = count_vit_passes(engine)
    try:
        results = engine.segment_batch(images, short_side=64, features=True)
    finally:
        handle.remove()
    assert len(calls) == 1
    alone = engine.segment(images[1], short_side=64, features=True).features
    np.testing.assert_allclose(results[1].features.features, alone.features, atol=1e-4)
    assert not np.allclose(results[0].features.features, alone.features, atol=1e-2)


def test_features_are_refused_where_no_single_grid_exists(engine):
    assert engine.segment(np.zeros((32, 32, 3), np.uint8)).features is None
    with pytest.raises(ValueError, match="mode='whole'"):
        engine.segment(np.zeros((32, 32, 3), np.uint8), mode="slide", features=True)
