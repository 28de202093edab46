"""One fingerprint of the engine's weights, by part: the embedding store's (text tower), the ONNX export's
(image tower and heads) and the fleet's resume record (everything) come from it, each part hashed once."""
import numpy as np
import pytest
import torch

from clip_dinoiser_ros.model import ClipDinoiser, DinoiserHeads, random_clip
from clip_dinoiser_ros.model import fingerprint as fingerprint_module
from clip_dinoiser_ros.model.embedding_store import EmbeddingStore
from clip_dinoiser_ros.model.fingerprint import GRAPH_PARTS, HEADS, IMAGE, TEXT
from conftest import TINY_MODEL


def heads_state(width: int, seed: int) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DinoiserHeads(width).state_dict()


def test_each_part_answers_to_its_own_weights_only(tiny_clip):
    width = tiny_clip.visual.conv1.out_channels
    engine, other_heads = (ClipDinoiser(tiny_clip, heads_state(width, seed)) for seed in (0, 1))
    other_clip = ClipDinoiser(random_clip(TINY_MODEL, seed=5), heads_state(width, 0))
    assert engine.fingerprint((TEXT,)) == other_heads.fingerprint((TEXT,))
    assert engine.fingerprint(GRAPH_PARTS) != other_heads.fingerprint(GRAPH_PARTS)
    assert engine.fingerprint((IMAGE,)) == other_heads.fingerprint((IMAGE,)) != other_clip.fingerprint((IMAGE,))
    assert engine.fingerprint((TEXT,)) != other_clip.fingerprint((TEXT,))
    assert len({engine.fingerprint(), other_heads.fingerprint(), other_clip.fingerprint()}) == 3
    assert engine.fingerprint((HEADS, IMAGE)) == engine.fingerprint(GRAPH_PARTS)  # the parts' order is not a part
    with pytest.raises(ValueError, match="parts must be some of"):
        engine.fingerprint(("vision",))


def test_the_store_every_export_size_and_the_fleet_record_hash_each_part_once(tmp_path, monkeypatch):
    """A model of its own: an export swaps its parameters for fake tensors while it traces, and the shared
    ``tiny_clip`` must not be in that state when the next test uses it."""
    tiny_clip = random_clip(TINY_MODEL, seed=0)
    hashed = []
    original = fingerprint_module.weights_fingerprint

    def counted(tensors):
        tensors = list(tensors)
        hashed.append(tensors[0][0].split(".", 1)[0])  # names are 'part.module-name'
        return original(tensors)

    engine = ClipDinoiser(tiny_clip, heads_state(tiny_clip.visual.conv1.out_channels, 0), precision="fp32",
                          templates="simple", embedding_store=EmbeddingStore(tmp_path / "store"), backend="onnxruntime")
    monkeypatch.setattr(fingerprint_module, "weights_fingerprint", counted)
    engine.set_prompts(["road", "car"])
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for short_side in (32, 48, 64):  # three input sizes, three exports
        engine.segment(image, short_side=short_side)
    assert engine.onnx.wait_prepared(timeout=300)  # the last sizes are exported in the background
    engine.fingerprint()  # what the fleet's resume record holds
    assert sorted(hashed) == sorted([TEXT, IMAGE, HEADS])

