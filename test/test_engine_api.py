"""The engine's public API: inputs of every shape, errors with a fix, checkpoints, caching."""
import pickle
import threading

import numpy as np
import pytest
import torch

from clip_dinoiser_ros.model import (
    CheckpointError,
    ClipDinoiser,
    DinoiserHeads,
    WeightsUnavailableError,
    load_clip,
    random_clip,
    save_checkpoint,
)
from clip_dinoiser_ros.model import engine as engine_module
from clip_dinoiser_ros.model import guided_pooling
from clip_dinoiser_ros.model import precision as precision_module
from clip_dinoiser_ros.model.heads import HEAD_KEYS, build_heads


@pytest.fixture()
def engine(tiny_engine):
    tiny_engine.set_prompts(["background", "road", "car"])
    return tiny_engine


def assert_valid(segmentation, height, width, classes=3):
    assert segmentation.labels.shape == (height, width)
    assert segmentation.labels.dtype == np.int32
    assert segmentation.probs.shape == (classes, height, width)
    assert segmentation.probs.dtype == np.float32
    np.testing.assert_allclose(segmentation.probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(segmentation.labels, segmentation.probs.argmax(axis=0))
    np.testing.assert_allclose(segmentation.confidence, segmentation.probs.max(axis=0))
    np.testing.assert_array_equal(segmentation.class_max, segmentation.probs.reshape(classes, -1).max(axis=1))


@pytest.mark.parametrize("height,width", [(360, 480), (480, 360), (9, 17), (1, 1), (16, 16), (3000, 4000)])
@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_any_image_size_gives_outputs_at_input_resolution(engine, height, width, mode):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert_valid(engine.segment(image, mode=mode), height, width)


def test_grayscale_converted_image_works(engine):
    gray = np.random.default_rng(1).integers(0, 256, (50, 70), dtype=np.uint8)
    assert_valid(engine.segment(np.repeat(gray[:, :, None], 3, axis=2)), 50, 70)


def test_non_contiguous_input_equals_contiguous(engine):
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    flipped = image[:, ::-1]
    np.testing.assert_array_equal(
        engine.segment(flipped).labels, engine.segment(np.ascontiguousarray(flipped)).labels
    )


@pytest.mark.parametrize(
    "image,needle",
    [
        (np.zeros((10, 10), np.uint8), "HxWx3 uint8"),
        (np.zeros((10, 10, 4), np.uint8), "HxWx3 uint8"),
        (np.zeros((10, 10, 3), np.float32), "HxWx3 uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "HxWx3 uint8"),
    ],
)
def test_bad_images_raise_a_clear_value_error(engine, image, needle):
    with pytest.raises(ValueError, match=needle):
        engine.segment(image)


def test_extreme_aspect_ratios_are_capped_and_huge_passes_point_to_slide_mode(engine):
    """The long side is capped at 2048/448 of the short side's target (mmcv); beyond the cap, slide mode."""
    assert_valid(engine.segment(np.zeros((1, 3000, 3), np.uint8)), 1, 3000)
    with pytest.raises(ValueError, match="slide"):
        engine.segment(np.zeros((100, 1000, 3), np.uint8), short_side=2000)  # 914x9143: 33,176 patches
    assert_valid(engine.segment(np.zeros((1, 3000, 3), np.uint8), mode="slide", short_side=16), 1, 3000)


def test_segment_before_set_prompts_says_what_to_do(tiny_engine):
    with pytest.raises(RuntimeError, match="set_prompts"):
        tiny_engine.segment(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize(
    "prompts,needle",
    [([], "empty"), (["a", " "], "empty"), (["car", "Car"], "duplicate"), (["a|"], "empty"), ("car", "list")],
)
def test_invalid_prompts_are_rejected_and_the_old_vocabulary_stays(engine, prompts, needle):
    before = engine.vocabulary
    with pytest.raises(ValueError, match=needle):
        engine.set_prompts(prompts)
    assert engine.vocabulary is before


def test_known_vocabulary_is_served_from_the_cache(engine, monkeypatch):
    engine.set_prompts(["sky", "tree"])
    calls = []
    original = engine.prompt_encoder.embed_class_names
    monkeypatch.setattr(engine.prompt_encoder, "embed_class_names",
                        lambda names, cancelled=None: calls.append(names) or original(names, cancelled))
    engine.set_prompts(["tree", "sky"])
    assert calls == []
    engine.set_prompts(["tree", "house"])
    assert calls == [["house"]]


def test_background_filter_follows_class_zero_name_or_the_override(tiny_clip):
    heads = DinoiserHeads(64)
    torch.nn.init.zeros_(heads.bkg_decoder.weight)
    torch.nn.init.constant_(heads.bkg_decoder.bias, -5.0)  # nothing is salient
    engine = ClipDinoiser(tiny_clip, heads.state_dict(), delta=1.01)  # every patch is uncertain
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    engine.set_prompts(["background", "car", "tree"])
    assert (engine.segment(image).labels == 0).all()
    assert not (engine.segment(image, background=False).labels == 0).all()
    engine.set_prompts(["floor", "car", "tree"])
    assert not (engine.segment(image).labels == 0).all()
    assert (engine.segment(image, background=True).labels == 0).all()


def test_background_filter_spares_salient_patches(tiny_clip):
    heads = DinoiserHeads(64)
    torch.nn.init.zeros_(heads.bkg_decoder.weight)
    torch.nn.init.constant_(heads.bkg_decoder.bias, 5.0)  # everything is salient
    engine = ClipDinoiser(tiny_clip, heads.state_dict())
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    engine.set_prompts(["background", "car", "tree"])
    np.testing.assert_array_equal(engine.segment(image).labels, engine.segment(image, background=False).labels)


def test_concurrent_segmentation_at_different_sizes_equals_sequential(engine):
    images = [np.random.default_rng(i).integers(0, 256, (40 + 16 * i, 90 - 8 * i, 3), dtype=np.uint8) for i in range(4)]
    expected = [engine.segment(image).probs for image in images]
    results = [None] * len(images)

    def run(i):
        for _ in range(3):
            results[i] = engine.segment(images[i]).probs

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_checkpoint_in_published_format_round_trips(tmp_path, engine):
    heads = DinoiserHeads(64)
    path = tmp_path / "last.pt"
    save_checkpoint(heads, path, epoch=100)
    content = torch.load(path, weights_only=True)
    assert set(content) == {"epoch", "model_state_dict"} and content["epoch"] == 100
    assert set(content["model_state_dict"]) == set(HEAD_KEYS)
    loaded = build_heads(path, 64)
    for key, value in heads.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert sum(p.numel() for p in DinoiserHeads(768).parameters()) == 1_770_497


class FailsToSave:
    def __reduce__(self):
        raise RuntimeError("cannot be saved (simulated)")


def test_a_checkpoint_write_that_fails_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(DinoiserHeads(64), path, epoch=1)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(DinoiserHeads(64), path, epoch=2, training_state=FailsToSave())  # fails while writing
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    "content,needle",
    [
        ({"epoch": 1, "model_state_dict": {"obj_proj.weight": torch.zeros(256, 64, 3, 3)}}, "missing"),
        ({"model_state_dict": {**{k: torch.zeros(1) for k in HEAD_KEYS}}}, "expected"),
        ({"model_state_dict": {**DinoiserHeads(64).state_dict(), "extra.weight": torch.zeros(1)}}, "unexpected"),
        ({"model_state_dict": DinoiserHeads(768).state_dict()}, "width 64"),
        ([1, 2, 3], "holds a list"),
    ],
)
def test_malformed_checkpoints_fail_naming_the_problem(tmp_path, content, needle):
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=needle):
        build_heads(path, 64)


def test_truncated_and_code_carrying_checkpoints_are_refused(tmp_path, capsys):
    good = tmp_path / "good.pt"
    save_checkpoint(DinoiserHeads(64), good, epoch=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        build_heads(truncated, 64)
    evil = tmp_path / "evil.pt"
    torch.save({"model_state_dict": Exploit()}, evil, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="refused for safety"):
        build_heads(evil, 64)
    assert "pwned" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="does not exist"):
        build_heads(tmp_path / "absent.pt", 64)


def test_missing_weights_raise_with_model_cache_and_command(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # an empty cache of its own: weights someone downloaded must not make this load succeed
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError) as error:
        load_clip("ViT-B-16", "laion2b_s34b_b88k")
    message = str(error.value)
    assert "ViT-B-16" in message and "laion2b_s34b_b88k" in message
    assert str(huggingface_hub.constants.HF_HUB_CACHE) in message
    assert "open_clip.create_model('ViT-B-16', pretrained='laion2b_s34b_b88k')" in message
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_clip("ViT-B-16", str(tmp_path / "weights.bin"))
    with pytest.raises(ValueError, match="not an open_clip pretrained tag"):
        load_clip("ViT-B-16", "no-such-tag")


def test_local_weights_file_loads_into_the_named_architecture(tmp_path, tiny_clip):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.state_dict(), path)
    model = load_clip("ViT-Tiny-16-test", str(path))  # tiny_clip registered the test tower
    for key, value in tiny_clip.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    assert not any(p.requires_grad for p in model.parameters())


def test_random_weights_follow_the_seed_and_leave_the_callers_random_stream_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = random_clip("ViT-Tiny-16-test", seed=4)
    assert torch.equal(torch.rand(3), expected_next)
    second, other = random_clip("ViT-Tiny-16-test", seed=4), random_clip("ViT-Tiny-16-test", seed=5)
    weight = "visual.conv1.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_half_precision_on_cpu_is_refused_with_the_fix(tiny_clip):
    with pytest.raises(ValueError, match="'fp16' is for CUDA devices.*use 'bf16', 'fp32' or 'auto'"):
        ClipDinoiser(tiny_clip, None, precision="fp16")


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_precision_on_cpu_is_bf16_only_where_the_cpu_has_it(tiny_clip, monkeypatch, native, expected):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    monkeypatch.delenv(precision_module.FORCE_FP32_VARIABLE, raising=False)  # make test PRECISION=fp32 sets it
    assert ClipDinoiser(tiny_clip, None).dtype == expected
    assert ClipDinoiser(tiny_clip, None, precision="fp32").dtype == torch.float32


def test_bf16_on_a_cpu_without_it_is_refused_with_the_fix(tiny_clip, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="needs a CPU with native bf16 .*use 'fp32' or 'auto'"):
        ClipDinoiser(tiny_clip, None, precision="bf16")


@pytest.mark.skipif(not precision_module.cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_cpu_bf16_runs_the_vit_in_bf16_and_keeps_pooling_and_softmax_in_fp32(tiny_clip, monkeypatch):
    seen = {}

    def recording(name, function):
        def wrapper(*args, **kwargs):
            seen[name] = args[0].dtype
            return function(*args, **kwargs)
        return wrapper

    for module, name in ((guided_pooling, "patch_correlation"), (guided_pooling, "guided_pool"),
                         (engine_module, "class_probabilities")):
        monkeypatch.setattr(module, name, recording(name, getattr(module, name)))
    image = np.random.default_rng(4).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    results = {}
    for name in ("fp32", "bf16"):
        engine = ClipDinoiser(tiny_clip, DinoiserHeads(64).state_dict(), precision=name)
        engine.set_prompts(["road", "car", "sky"])
        results[name] = engine.segment(image)
        assert seen == dict.fromkeys(("patch_correlation", "guided_pool", "class_probabilities"), torch.float32)
    assert (results["fp32"].labels == results["bf16"].labels).mean() > 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_autocast_agrees_with_fp32(tiny_clip, precision):
    image = np.random.default_rng(4).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    results = {}
    for name in ("fp32", precision):
        engine = ClipDinoiser(tiny_clip, DinoiserHeads(64).state_dict(), device="cuda", precision=name)
        engine.set_prompts(["road", "car", "sky"])
        results[name] = engine.segment(image)
    assert (results["fp32"].labels == results[precision].labels).mean() > 0.95


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_segment_batch_equals_segment_image_by_image(tiny_clip, device):
    """Same-size images share one pass, a differently sized one gets its own; results as if alone."""
    engine = ClipDinoiser(tiny_clip, DinoiserHeads(64).state_dict(), device=device, precision="fp32")
    engine.set_prompts(["road", "car", "sky"])
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(64, 96, 3), (96, 64, 3), (64, 96, 3)]]
    batched = engine.segment_batch(images, short_side=32)
    for image, together in zip(images, batched):
        alone = engine.segment(image, short_side=32)
        assert together.labels.shape == image.shape[:2]
        np.testing.assert_array_equal(together.labels, alone.labels)
        np.testing.assert_allclose(together.probs, alone.probs, atol=1e-5)
        np.testing.assert_allclose(together.class_max, alone.class_max, atol=1e-5)



def test_encoding_is_cancelled_between_text_batches_and_caches_nothing(engine, monkeypatch):
    from clip_dinoiser_ros.model import EncodingCancelled
    from clip_dinoiser_ros.model import text_encoder

    monkeypatch.setattr(text_encoder, "TEXT_BATCH", 4)  # several batches from a few prompts
    asked = []

    def cancelled() -> bool:
        asked.append(True)
        return len(asked) > 2  # stop before the third batch

    names = [f"thing {index}" for index in range(6)]
    with pytest.raises(EncodingCancelled):
        engine.encode_prompts(names, cancelled)
    assert len(asked) == 3
    assert not any(text in names for _, text in engine.prompt_encoder._cache)  # nothing half-done is kept
    vocabulary = engine.encode_prompts(names)  # not cancelled: all of it, as if never interrupted
    assert list(vocabulary.names) == names
