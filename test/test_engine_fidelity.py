"""The engine against independent formulations of the method (DESIGN.md), with identical weights."""
import numpy as np
import open_clip
import pytest
import torch

import reference_clip_dinoiser as reference
from frame_sources import camvid_frames
from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model.dense_clip import DenseClipEncoder
from clip_dinoiser_ros.model.guided_pooling import class_probabilities, guided_pool, patch_correlation, synonym_logits
from clip_dinoiser_ros.model.heads import DinoiserHeads
from clip_dinoiser_ros.model.templates import TEMPLATE_SETS

PROMPTS = ["background", "car", "tree", "road"]


def random_heads(feature_dim: int, seed: int = 1) -> dict:
    torch.manual_seed(seed)
    heads = DinoiserHeads(feature_dim)
    for parameter in heads.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return {k: v.detach().clone() for k, v in heads.state_dict().items()}


def textured_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random blobs: regions large enough that labels form areas, like a real photo."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    small = torch.from_numpy(coarse).permute(2, 0, 1)[None]
    big = torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    noise = rng.normal(0, 8, size=(height, width, 3))
    return np.clip(big[0].permute(1, 2, 0).numpy() + noise, 0, 255).astype(np.uint8)


def test_guided_pooling_equals_brute_force_per_patch():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 3, 4)
    projected = torch.randn(2, 7, 3, 4)
    gamma = 0.2
    pooled = guided_pool(features, patch_correlation(projected), gamma)
    flat_p = projected.flatten(2)
    flat_f = features.flatten(2)
    for b in range(2):
        for p in range(12):
            weights = []
            for q in range(12):
                a = torch.dot(flat_p[b, :, p], flat_p[b, :, q]) / (flat_p[b, :, p].norm() * flat_p[b, :, q].norm())
                weights.append(a if a >= gamma else torch.tensor(0.0))
            weights = torch.stack(weights)
            expected = (weights[None, :] * flat_f[b]).sum(dim=1) / (weights.sum() + 1e-6)
            torch.testing.assert_close(pooled[b].flatten(1)[:, p], expected, rtol=1e-5, atol=1e-6)


def test_maskclip_and_head_features_equal_hooked_open_clip(tiny_clip):
    encoder = DenseClipEncoder(tiny_clip.visual)
    pixels = torch.randn(2, 3, 48, 80)  # a grid (3x5) unlike the 14x14 training grid
    with torch.no_grad():
        ours = encoder(pixels)
    maskclip, ln2 = reference.clip_features(tiny_clip, pixels)
    torch.testing.assert_close(ours.maskclip, maskclip, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.head_input, ln2, rtol=1e-4, atol=1e-5)


def test_positional_embedding_of_the_model_is_never_modified(tiny_clip, tiny_engine):
    before = tiny_clip.visual.positional_embedding.detach().clone()
    version = tiny_clip.visual.positional_embedding._version
    tiny_engine.set_prompts(["a", "b"])
    tiny_engine.segment(np.zeros((100, 300, 3), np.uint8))
    assert torch.equal(tiny_clip.visual.positional_embedding, before)
    assert tiny_clip.visual.positional_embedding._version == version


def test_text_embedding_equals_encode_text_over_the_80_templates(tiny_clip, tiny_engine):
    names = ["traffic light", "car", "a much longer class name with several words"]
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=tiny_clip.context_length)
    expected = reference.text_embeddings(tiny_clip, tokenizer, names, TEMPLATE_SETS["imagenet"])
    assert len(TEMPLATE_SETS["imagenet"]) == 80
    vocabulary = tiny_engine.encode_prompts(names)
    torch.testing.assert_close(vocabulary.text_embeddings, expected, rtol=0, atol=1e-5)


def test_synonym_class_scores_its_best_synonym():
    torch.manual_seed(0)
    features = torch.randn(1, 8, 4, 5)
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)  # chair, seat, person
    split = class_probabilities(synonym_logits(features, text), torch.tensor([0, 1, 2]), 3)
    merged = class_probabilities(synonym_logits(features, text), torch.tensor([0, 0, 1]), 2)
    logits = 100 * torch.einsum("bchw,sc->bshw", torch.nn.functional.normalize(features, dim=1), text)
    best = torch.maximum(logits[:, 0], logits[:, 1])
    expected = torch.stack([best, logits[:, 2]], dim=1).softmax(dim=1)
    torch.testing.assert_close(merged, expected)
    assert torch.equal(merged.argmax(dim=1) == 0, split.argmax(dim=1) < 2)


def test_synonyms_name_the_class_by_the_first_synonym(tiny_engine):
    vocabulary = tiny_engine.encode_prompts(["chair | seat", "person"])
    assert vocabulary.names == ("chair", "person")
    assert vocabulary.synonym_to_class.tolist() == [0, 0, 1]
    assert tiny_engine.segment(textured_image(40, 40), vocabulary=vocabulary).probs.shape == (2, 40, 40)


@pytest.mark.parametrize("background", [False, True])
def test_whole_mode_matches_reference_on_real_vit_b16_architecture(background):
    """Real ViT-B-16 architecture, random weights: >= 99.9% equal labels, probabilities within 1e-4."""
    model = random_clip("ViT-B-16", seed=3)
    heads = random_heads(768)
    engine = ClipDinoiser(model, heads, precision="fp32")
    vocabulary = engine.set_prompts(PROMPTS)
    image = textured_image(448, 448, seed=5)
    ours = engine.segment(image, background=background)
    ref_probs, ref_labels = reference.segment(model, heads, vocabulary.text_embeddings, image, background=background)
    agreement = (ours.labels == ref_labels).mean()
    assert agreement >= 0.999, f"labels agree on {agreement:.4%} of pixels"
    if background:
        assert (ref_labels == 0).any() and (ref_labels != 0).any(), "test image should exercise the filter"
    else:
        np.testing.assert_allclose(ours.probs, ref_probs, atol=1e-4)


def test_tiny_model_matches_reference_with_padding(tiny_clip):
    """A size that needs padding: the cropped upsampling matches the reference demo."""
    heads = random_heads(64)
    engine = ClipDinoiser(tiny_clip, heads, precision="fp32")
    vocabulary = engine.set_prompts(["sky", "road", "car"])
    image = textured_image(100, 130, seed=2)
    ours = engine.segment(image, short_side=100)
    ref_probs, ref_labels = reference.segment(tiny_clip, heads, vocabulary.text_embeddings, image)
    np.testing.assert_allclose(ours.probs, ref_probs, atol=1e-4)
    assert (ours.labels == ref_labels).mean() >= 0.999


def assert_matches_slide_reference(ours, ref_probs, ref_labels, background):
    """Probabilities within 1e-4, labels equal on >= 99.9 % of pixels.

    The reference leaves class 0 at 1.0 beside the other classes where it filters the background (only
    the argmax is used); the engine normalises per pixel, so with background the reference is compared
    normalised.
    """
    if background:
        ref_probs = ref_probs / ref_probs.sum(axis=0, keepdims=True)
        assert (ref_labels == 0).any() and (ref_labels != 0).any(), "test image should exercise the filter"
    np.testing.assert_allclose(ours.probs, ref_probs, atol=1e-4, rtol=0)
    agreement = (ours.labels == ref_labels).mean()
    assert agreement >= 0.999, f"labels agree on {agreement:.4%} of pixels"


@pytest.mark.parametrize("background", [False, True])
def test_slide_mode_matches_benchmark_protocol_on_a_real_camvid_frame(background):
    """Real ViT-B-16 architecture, random weights, a real 480x360 frame: resized to 597x448, two windows."""
    (image,) = camvid_frames(1)
    model = random_clip("ViT-B-16", seed=3)
    heads = random_heads(768)
    engine = ClipDinoiser(model, heads, precision="fp32")
    vocabulary = engine.set_prompts(PROMPTS)
    ours = engine.segment(image, mode="slide", background=background)
    ref_probs, ref_labels = reference.slide_segment(model, heads, vocabulary.text_embeddings, image,
                                                    background=background)
    assert_matches_slide_reference(ours, ref_probs, ref_labels, background)


@pytest.mark.parametrize("height, width", [(60, 400), (449, 1000), (97, 131)])
def test_slide_mode_matches_benchmark_protocol_at_awkward_sizes(tiny_clip, height, width):
    """Windows whose side is no multiple of the patch (60x400 resizes to 307x2048, the long side capped):
    the padded grid's output is stretched onto the window, as the evaluation's encode_decode does."""
    heads = random_heads(64)
    engine = ClipDinoiser(tiny_clip, heads, precision="fp32")
    vocabulary = engine.set_prompts(["sky", "road", "car"])
    image = textured_image(height, width, seed=height)
    ours = engine.segment(image, mode="slide")
    ref_probs, ref_labels = reference.slide_segment(tiny_clip, heads, vocabulary.text_embeddings, image)
    assert_matches_slide_reference(ours, ref_probs, ref_labels, background=False)


def test_slide_mode_equals_whole_mode_on_448_square(tiny_clip):
    engine = ClipDinoiser(tiny_clip, random_heads(64), precision="fp32")
    engine.set_prompts(["background", "car", "tree"])
    image = textured_image(448, 448, seed=7)
    whole = engine.segment(image, mode="whole")
    slide = engine.segment(image, mode="slide")
    np.testing.assert_allclose(slide.probs, whole.probs, atol=1e-6)
    np.testing.assert_array_equal(slide.labels, whole.labels)
