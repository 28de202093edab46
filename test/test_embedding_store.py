"""Class embeddings persist across restarts: reused only for the same tower, templates and tokenizer,
never from a corrupt or foreign file, written atomically, bounded in size."""
import warnings

import numpy as np
import open_clip
import pytest
import torch

from clip_dinoiser_ros.model.clip_loading import random_clip
from clip_dinoiser_ros.model import embedding_store
from clip_dinoiser_ros.model.embedding_store import EmbeddingStore
from clip_dinoiser_ros.model.heads_download import cache_dir
from clip_dinoiser_ros.model.text_encoder import PromptEncoder
from conftest import TINY_MODEL

PROMPTS = ["road", "car|automobile", "tree"]


def encoder(clip_model, store: EmbeddingStore, templates: str = "simple") -> PromptEncoder:
    """A fresh encoder: what a restarted process has (an empty in-memory cache)."""
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=clip_model.context_length)
    return PromptEncoder(clip_model, tokenizer, templates, store=store)


def entry_files(store: EmbeddingStore) -> list:
    return sorted(store.folder.glob("*.npz"))


def test_a_restart_restores_known_prompts_and_encodes_only_new_ones(tiny_clip, tmp_path):
    store = EmbeddingStore(tmp_path / "cache")
    first = encoder(tiny_clip, store).encode(PROMPTS)
    assert len(entry_files(store)) == 4  # one per prompt text: car and automobile apart

    restarted = encoder(tiny_clip, store)
    again = restarted.encode(PROMPTS)
    assert (restarted.restored_texts, restarted.encoded_texts) == (4, 0)
    assert torch.equal(again.text_embeddings, first.text_embeddings)
    assert torch.equal(again.synonym_to_class, first.synonym_to_class)

    grown = restarted.encode([*PROMPTS, "person"])
    assert (restarted.restored_texts, restarted.encoded_texts) == (4, 1)
    fresh = encoder(tiny_clip, None).encode([*PROMPTS, "person"])
    assert torch.allclose(grown.text_embeddings, fresh.text_embeddings, atol=1e-6)


def test_entries_of_other_weights_or_templates_are_not_used(tiny_clip, tmp_path):
    store = EmbeddingStore(tmp_path / "cache")
    encoder(tiny_clip, store).encode(PROMPTS)
    other_weights = encoder(random_clip(TINY_MODEL, seed=1), store)
    other_weights.encode(PROMPTS)
    other_templates = encoder(tiny_clip, store, templates="none")
    other_templates.encode(PROMPTS)
    assert other_weights.restored_texts == other_templates.restored_texts == 0
    assert other_weights.encoded_texts == other_templates.encoded_texts == 4
    assert len(entry_files(store)) == 12


def test_a_fine_tuned_layer_is_another_tower(tiny_clip, tmp_path):
    store = EmbeddingStore(tmp_path / "cache")
    encoder(tiny_clip, store).encode(PROMPTS)
    tuned = random_clip(TINY_MODEL, seed=0)
    with torch.no_grad():
        weight = tuned.transformer.resblocks[-1].mlp.c_fc.weight
        weight += 1e-4 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    restarted = encoder(tuned, store)
    restarted.encode(PROMPTS)
    assert restarted.restored_texts == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "not a unit vector"])
def test_a_damaged_or_foreign_file_is_ignored_with_a_warning_and_encoded_again(tiny_clip, tmp_path, damage):
    store = EmbeddingStore(tmp_path / "cache")
    expected = encoder(tiny_clip, store).encode(["road", "car"])
    road, car = (store._path(encoder(tiny_clip, store)._entry_key(text), store.folder) for text in ("road", "car"))
    if damage == "garbage":
        road.write_bytes(b"\x93NUMPY not really" * 10)
    elif damage == "truncated":
        road.write_bytes(road.read_bytes()[:40])
    elif damage == "foreign":
        road.write_bytes(car.read_bytes())  # a valid entry, of another key
    else:
        with np.load(road) as entry:
            key = str(entry["key"])
        np.savez(road.open("wb"), key=np.array(key), embedding=np.full(expected.text_embeddings.shape[1], 3.0,
                                                                        dtype=np.float32))
    restarted = encoder(tiny_clip, store)
    with pytest.warns(RuntimeWarning, match=f"ignoring {road}"):
        again = restarted.encode(["road", "car"])
    assert (restarted.restored_texts, restarted.encoded_texts) == (1, 1)
    assert torch.allclose(again.text_embeddings, expected.text_embeddings, atol=1e-6)
    with warnings.catch_warnings():  # re-encoded and rewritten: trusted again
        warnings.simplefilter("error")
        assert encoder(tiny_clip, store).encode(["road", "car"]) is not None


def test_the_folder_stays_within_its_bound_keeping_the_most_recent(tiny_clip, tmp_path):
    unbounded = EmbeddingStore(tmp_path / "measure")
    encoder(tiny_clip, unbounded).encode(["a thing"])
    entry_size = entry_files(unbounded)[0].stat().st_size
    store = EmbeddingStore(tmp_path / "cache", max_bytes=3 * entry_size)
    for batch in (["one", "two"], ["three", "four"], ["five"]):
        encoder(tiny_clip, store).encode(batch)
    assert len(entry_files(store)) == 3
    restarted = encoder(tiny_clip, store)
    restarted.encode(["four", "five"])
    assert restarted.restored_texts == 2
    assert not list(store.folder.glob(".*.part"))  # atomic writes leave no temporaries


def test_an_unwritable_cache_falls_back_to_a_private_folder_with_one_warning(tiny_clip, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = encoder(tiny_clip, EmbeddingStore(blocked / "cache"))
        vocabulary = first.encode(PROMPTS)
        again = encoder(tiny_clip, EmbeddingStore(blocked / "cache"))  # another engine of the same process
        again.encode([*PROMPTS, "person"])
    assert len(vocabulary) == 3 and first.encoded_texts == 4
    assert (again.restored_texts, again.encoded_texts) == (4, 1)  # from the private stand-in
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "cannot be written" in messages[0] and str(blocked / "cache") in messages[0]


def test_a_cache_whose_files_cannot_be_touched_is_still_read(tiny_clip, tmp_path, monkeypatch):
    """A read-only cache in a container image: marking an entry recently used fails, the entry is used."""
    store = EmbeddingStore(tmp_path / "cache")
    encoder(tiny_clip, store).encode(PROMPTS)

    def refused(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(embedding_store.os, "utime", refused)
    restarted = encoder(tiny_clip, EmbeddingStore(tmp_path / "cache"))
    restarted.encode([*PROMPTS, "person"])
    assert (restarted.restored_texts, restarted.encoded_texts) == (4, 1)


def test_the_engine_builder_keeps_embeddings_in_the_user_cache(monkeypatch, tmp_path):
    from clip_dinoiser_ros.model.build import EngineSettings, build_engine

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    engine = build_engine(EngineSettings(device="cpu", clip_model=TINY_MODEL, random_weights=True, templates="none"))
    engine.set_prompts(PROMPTS)
    assert cache_dir("text_embeddings") == tmp_path / "clip_dinoiser_ros" / "text_embeddings"
    assert len(list(cache_dir("text_embeddings").glob("*.npz"))) == 4
    off = build_engine(EngineSettings(device="cpu", clip_model=TINY_MODEL, random_weights=True, templates="none",
                                      embedding_cache=False))
    off.set_prompts(["door"])
    assert len(list(cache_dir("text_embeddings").glob("*.npz"))) == 4
