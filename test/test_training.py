"""Training the heads: teachers against a straightforward re-computation, the loss, checkpoints, --resume,
torchrun, other CLIP widths, and the command line. Teachers and students have the real architectures with
random weights (no weights can be downloaded here); images are small to keep the tests fast."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clip_dinoiser_ros.model import ClipDinoiser, random_clip
from clip_dinoiser_ros.model.errors import CheckpointError, WeightsUnavailableError
from clip_dinoiser_ros.model.preprocessing import normalize
from clip_dinoiser_ros.train import TrainSettings, train
from clip_dinoiser_ros.train.images import augmented_view, list_images, load_rgb, view_generator
from clip_dinoiser_ros.train.run import Trainer
from clip_dinoiser_ros.train.student import FrozenClipFeatures, losses, new_heads, predictions
from clip_dinoiser_ros.train.teachers import (CORRELATION_TEACHER, OBJECTNESS_TEACHER, Teachers, load_dino,
                                              load_found_decoder)
from clip_dinoiser_ros.distributed import Ranks
from conftest import TINY_MODEL
from frame_sources import require_shared_data

SIZE = 64  # training crops: a 4x4 grid for patch-16 CLIPs, 8x8 for the ViT-S/8 teacher


@pytest.fixture(scope="module")
def images():
    return require_shared_data("imagenet_sample")


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(1)
    return Teachers(load_dino(CORRELATION_TEACHER, random=True), load_dino(OBJECTNESS_TEACHER, random=True),
                    load_found_decoder(random=True))


def settings(images: Path, out: Path, **changes) -> TrainSettings:
    values = dict(images=images, out=out, iterations=6, batch_size=4, image_size=SIZE, clip_model=TINY_MODEL,
                  random_weights=True, device="cpu", precision="fp32", workers=0, progress=False,
                  target_cache=out.parent / "targets", checkpoint_every=3)
    values.update(changes)
    return TrainSettings(**values)


def batch_of(images: Path, count: int) -> torch.Tensor:
    paths = list_images(images)[:count]
    return torch.stack([augmented_view(load_rgb(p), SIZE, view_generator(0, i, 0)) for i, p in enumerate(paths)])


def reference_style_embeddings(vit, images: torch.Tensor, kind: str) -> torch.Tensor:
    """As the reference takes them: a hook on the last block's qkv, reshaped per head; (B, hw, C) without CLS."""
    captured = {}
    handle = vit.blocks[-1].attn.qkv.register_forward_hook(lambda module, inputs, output: captured.update(qkv=output))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        vit.forward_features((images - mean) / std)
    handle.remove()
    qkv = captured["qkv"]
    batch, tokens, channels = qkv.shape
    heads = vit.blocks[-1].attn.num_heads
    qkv = qkv.reshape(batch, tokens, 3, heads, channels // heads // 3).permute(2, 0, 3, 1, 4)
    return qkv["qkv".index(kind)].transpose(1, 2)[:, 1:].flatten(-2, -1)


def test_teacher_targets_equal_a_straightforward_computation(images, teachers):
    """At 224 pixels both teachers run at their native grids, where timm's forward is DINO's."""
    pixels = torch.stack([augmented_view(load_rgb(p), 224, view_generator(0, i, 0))
                          for i, p in enumerate(list_images(images)[:2])])
    correlation, objectness = teachers.targets(pixels, (14, 14))

    values = reference_style_embeddings(teachers.correlation.vit, pixels, "v")
    values = values / values.norm(dim=-1, keepdim=True)
    expected = values @ values.transpose(1, 2)
    expected[expected < 0.2] = 0.0
    assert torch.equal(correlation, expected > 0)
    assert 0 < correlation.float().mean() < 1

    keys = reference_style_embeddings(teachers.objectness.vit, pixels, "k")  # 28x28 tokens at 224 px
    keys = keys.reshape(2, 28, 28, -1).permute(0, 3, 1, 2)
    saliency = torch.sigmoid(teachers.decoder(keys))
    expected_mask = F.interpolate(saliency, size=(14, 14), mode="bilinear", align_corners=False)[:, 0] > 0.5
    assert torch.equal(objectness, expected_mask)


def test_teachers_resize_their_position_embedding_as_dino_does(teachers):
    """DINO's interpolate_pos_encoding: bicubic with scale factor (grid + 0.1) / 14, CLS position kept."""
    teacher = teachers.correlation
    pos = teacher.vit.pos_embed
    assert teacher.positions((14, 14)) is pos
    resized = teacher.positions((4, 6))
    grid = pos[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(4.1 / 14, 6.1 / 14), mode="bicubic")
    assert resized.shape == (1, 1 + 24, pos.shape[-1]) and torch.equal(resized[:, :1], pos[:, :1])
    torch.testing.assert_close(resized[0, 1:], expected[0].flatten(1).T, rtol=0, atol=0)
    by_size = F.interpolate(grid, size=(4, 6), mode="bicubic")  # what timm's dynamic size would use
    assert not torch.allclose(resized[0, 1:], by_size[0].flatten(1).T)


def test_the_real_found_decoder_loads_with_its_exact_shapes_and_a_wrong_file_fails(tmp_path):
    real = require_shared_data("found/decoder_weights.pt")
    decoder = load_found_decoder(real)
    assert tuple(decoder.weight.shape) == (1, 384, 1, 1) and tuple(decoder.bias.shape) == (1,)
    stored = torch.load(real, map_location="cpu", weights_only=True)["decoder"]
    assert torch.equal(decoder.weight, stored["weight"]) and torch.equal(decoder.bias, stored["bias"])

    wrong = tmp_path / "wrong.pt"
    torch.save({"decoder": {"weight": torch.zeros(1, 768, 1, 1), "bias": torch.zeros(1)}}, wrong)
    with pytest.raises(CheckpointError, match=r"does not have FOUND's layout.*\(1, 768, 1, 1\)"):
        load_found_decoder(wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_found_decoder(garbage)


def test_missing_teacher_weights_offline_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsUnavailableError, match="(?s)vit_base_patch16_224.dino.*connected machine.*--dino PATH"):
        load_dino(CORRELATION_TEACHER)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_dino(OBJECTNESS_TEACHER, weights=tmp_path / "absent.pth")


def test_training_steps_decrease_the_loss_on_a_fixed_batch(images, teachers):
    """The full-size student (ViT-B/16, random weights) on small crops; the recipe's optimiser."""
    features = FrozenClipFeatures(random_clip("ViT-B-16", seed=0))
    heads = new_heads(features.width, seed=0)
    pixels = batch_of(images, 4)
    targets = teachers.targets(pixels, features.grid(SIZE))
    head_input = features(pixels)
    optimizer = torch.optim.AdamW([{"params": heads.obj_proj.parameters(), "lr": 5e-5},
                                   {"params": heads.bkg_decoder.parameters(), "lr": 1e-2}])
    history = []
    for _ in range(20):
        terms = losses(*predictions(heads, head_input), *targets)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        history.append((terms.correlation.item(), terms.objectness.item()))
    assert history[-1][0] < history[0][0] and history[-1][1] < history[0][1], history


def test_a_run_writes_a_checkpoint_the_engine_loads_a_loss_plot_and_its_record(images, tmp_path):
    result = train(settings(images, tmp_path / "heads.pt"))
    content = torch.load(result.checkpoint, weights_only=True)
    assert set(content["model_state_dict"]) == {"obj_proj.weight", "obj_proj.bias", "bkg_decoder.weight",
                                                "bkg_decoder.bias"}
    assert tuple(content["model_state_dict"]["obj_proj.weight"].shape) == (256, 64, 3, 3)  # the tiny ViT's width
    engine = ClipDinoiser(random_clip(TINY_MODEL, seed=0), str(result.checkpoint))
    for key, value in content["model_state_dict"].items():
        assert torch.equal(engine.heads.state_dict()[key], value)
    engine.set_prompts(["sky", "road"])
    assert engine.segment(np.zeros((48, 64, 3), np.uint8)).labels.shape == (48, 64)

    assert result.loss_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads(result.run_file.read_text())
    assert record["steps"] == 6 and len(result.history) == 6
    assert record["data"] == {"images": str(images.resolve()), "train": 95, "held_out": 5}
    assert {"torch", "open_clip", "timm"} <= set(record["versions"]) and record["settings"]["seed"] == 0
    agreement = record["teacher_agreement_held_out"]
    assert agreement["images"] == 5 and 0 <= agreement["correlation_iou"] <= 1 and agreement["objectness_bce"] > 0


def test_resume_gives_the_uninterrupted_runs_weights(images, tmp_path):
    """Resumed after the learning-rate step at 2: the schedule continues, it does not start again."""
    straight = train(settings(images, tmp_path / "straight" / "heads.pt", iterations=6, lr_milestones=(2,)))
    first = settings(images, tmp_path / "resumed" / "heads.pt", iterations=3, lr_milestones=(2,))
    train(first)
    resumed = train(settings(images, first.out, iterations=6, resume=True, lr_milestones=(2,)))
    assert [row[0] for row in resumed.history] == [1, 2, 3, 4, 5, 6]
    a = torch.load(straight.checkpoint, weights_only=True)["model_state_dict"]
    b = torch.load(resumed.checkpoint, weights_only=True)["model_state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="seed was 0, now 5"):
        train(settings(images, first.out, iterations=8, resume=True, seed=5, lr_milestones=(2,)))


def test_cached_targets_spare_the_teachers(images, tmp_path, teachers):
    trainer = Trainer(settings(images, tmp_path / "heads.pt"), Ranks("cpu"), torch.device("cpu"))
    trainer._teachers = teachers
    pixels = batch_of(images, 2)
    computed = trainer.targets(pixels, [0, 1], [0, 0])
    again = Trainer(settings(images, tmp_path / "heads.pt"), Ranks("cpu"), torch.device("cpu"))
    cached = again.targets(pixels, [0, 1], [0, 0])
    assert again._teachers is None
    assert torch.equal(cached[0], computed[0]) and torch.equal(cached[1], computed[1])
    other = Trainer(settings(images, tmp_path / "heads.pt", seed=3), Ranks("cpu"), torch.device("cpu"))
    assert other.cache.folder != again.cache.folder  # other settings never read these targets


def test_torchrun_two_processes_equal_one_with_the_same_global_batch(images, tmp_path):
    single = train(settings(images, tmp_path / "single" / "heads.pt", iterations=4))
    out = tmp_path / "ddp" / "heads.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               shutil.which("clip-dinoiser-train", path=str(Path(sys.executable).parent)),
               "--images", str(images), "--out", str(out), "--iterations", "4", "--batch-size", "4",
               "--image-size", str(SIZE), "--clip-model", TINY_MODEL, "--random-weights", "--device", "cpu",
               "--precision", "fp32", "--workers", "0", "--no-progress", "--target-cache", str(tmp_path / "targets")]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert finished.stdout.count("wrote ") == 1  # only rank 0 reports
    record = json.loads(out.with_name("heads.run.json").read_text())
    assert record["processes"] == 2
    a = torch.load(single.checkpoint, weights_only=True)["model_state_dict"]
    b = torch.load(out, weights_only=True)["model_state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_the_command_line_refuses_what_cannot_work(images, tmp_path):
    from clip_dinoiser_ros.cli.train import main

    assert main(["--images", str(tmp_path / "absent"), "--out", str(tmp_path / "h.pt"), "--random-weights"]) == 2
    assert main(["--images", str(images), "--out", str(tmp_path / "h.pt"), "--batch-size", "0"]) == 2
    assert main(["--images", str(images), "--out", str(tmp_path / "h.pt"), "--resume", "--random-weights",
                 "--clip-model", TINY_MODEL, "--device", "cpu", "--target-cache", str(tmp_path / "targets")]) == 2


def test_new_heads_follow_the_seed_and_leave_the_callers_random_stream_alone():
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    first = new_heads(64, seed=1)
    assert torch.equal(torch.rand(3), expected_next)
    assert torch.equal(first.obj_proj.weight, new_heads(64, seed=1).obj_proj.weight)
    assert not torch.equal(first.obj_proj.weight, new_heads(64, seed=2).obj_proj.weight)


def test_the_student_reads_the_engines_own_block_features():
    """Training and inference see the same features: block -3's ln_2 output, through the engine's encoder."""
    features = FrozenClipFeatures(random_clip(TINY_MODEL, seed=0))
    pixels = torch.rand(2, 3, SIZE, SIZE)
    torch.testing.assert_close(features(pixels), features.encoder(normalize(pixels)).head_input, rtol=0, atol=0)


def test_the_found_decoder_download_is_verified_and_offline_says_what_to_do(tmp_path, monkeypatch):
    from clip_dinoiser_ros.model.heads_download import RemoteFile, cache_file_name
    from clip_dinoiser_ros.train import teachers as teachers_module

    unreachable = RemoteFile("http://127.0.0.1:9/decoder_weights.pt", sha256="ab" * 32, what="FOUND decoder",
                             local_option="--found-decoder /path/to/decoder_weights.pt")
    monkeypatch.setattr(teachers_module, "FOUND_DECODER", unreachable)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="(?s)could not download the FOUND decoder.*--found-decoder"):
        load_found_decoder()
    placed = tmp_path / "clip_dinoiser_ros" / "found" / cache_file_name(unreachable.url)
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.write_bytes(b"hand-placed, wrong")
    with pytest.raises(CheckpointError, match="FOUND decoder refused.*sha256"):
        load_found_decoder()
