"""Class-name embeddings with prompt templates, encoded fast and cached.

CLIP's text transformer is causal and pools the end-of-text token, so tokens after it never influence
the result: each batch is cut to its longest real prompt instead of the full 77-token context. With an
EmbeddingStore, what was encoded once is read back from disk after a restart instead.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .embedding_store import EmbeddingStore, encoder_key
from .fingerprint import TEXT, EngineFingerprint
from .errors import EncodingCancelled
from .templates import TemplatesSpec, resolve_templates
from .vocabulary import Vocabulary, parse_prompts

TEXT_BATCH = 256
Cancelled = Callable[[], bool]  # asked between batches: stop now?


class PromptEncoder:
    """Encodes class prompts with an open_clip model's text tower; one instance per model."""

    def __init__(self, clip_model: nn.Module, tokenizer, templates: TemplatesSpec = "imagenet",
                 store: Optional[EmbeddingStore] = None, fingerprint: Optional[EngineFingerprint] = None) -> None:
        self.model = clip_model
        self.tokenizer = tokenizer
        self.templates_key, self.templates = resolve_templates(templates)
        self._cache: dict[tuple[str, str], torch.Tensor] = {}
        self._lock = threading.Lock()
        self._tower = _CausalTextTower.from_model(clip_model)
        self._store = store
        self._fingerprint = fingerprint or EngineFingerprint(clip_model)  # the engine's, when it has one
        self._store_key: Optional[str] = None  # the tower's fingerprint is taken on the store's first use
        self.restored_texts = 0  # prompt texts read from the store, since construction
        self.encoded_texts = 0  # prompt texts run through the text tower

    def encode(self, prompts: Sequence[str], cancelled: Optional[Cancelled] = None, **limits: int) -> Vocabulary:
        """Validate ``prompts`` and return their embeddings; known prompts cost a dict look-up.

        ``cancelled`` is asked between text batches (a 100-class list is ~30 of them on a CPU); when it
        answers True, EncodingCancelled is raised and nothing is cached.
        """
        classes = parse_prompts(prompts, **limits)
        texts = [s for c in classes for s in c.synonyms]
        missing = list(dict.fromkeys(t for t in texts if (self.templates_key, t) not in self._cache))
        restored = self._restored(missing)
        unknown = [t for t in missing if t not in restored]
        encoded = dict(zip(unknown, self.embed_class_names(unknown, cancelled))) if unknown else {}
        with self._lock:
            for text, embedding in {**restored, **encoded}.items():
                self._cache[(self.templates_key, text)] = embedding
            self.restored_texts += len(restored)
            self.encoded_texts += len(encoded)
        if encoded and self._store is not None:
            self._store.save((self._entry_key(t), e.numpy()) for t, e in encoded.items())
        rows = torch.stack([self._cache[(self.templates_key, t)] for t in texts])
        owners = torch.tensor([i for i, c in enumerate(classes) for _ in c.synonyms], dtype=torch.long)
        return Vocabulary(classes=classes, text_embeddings=rows, synonym_to_class=owners)

    def _restored(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Those of ``texts`` the store holds for this tower, templates and tokenizer."""
        if self._store is None or not texts:
            return {}
        width = int(self.model.visual.output_dim)  # both towers project into the joint space
        found = {text: self._store.load(self._entry_key(text), width) for text in texts}
        return {text: torch.from_numpy(vector) for text, vector in found.items() if vector is not None}

    def _entry_key(self, text: str) -> str:
        if self._store_key is None:
            self._store_key = encoder_key(self._fingerprint((TEXT,)), self.templates, self.tokenizer)
        return f"{self._store_key}\x1e{text}"

    @torch.no_grad()
    def embed_class_names(self, names: Sequence[str], cancelled: Optional[Cancelled] = None) -> torch.Tensor:
        """(N, E): per name, the normalised mean of its normalised template embeddings."""
        strings = [template(name) for name in names for template in self.templates]
        tokens = self.tokenizer(strings)
        features = F.normalize(self.encode_tokens(tokens, cancelled).float(), dim=-1)
        per_name = features.view(len(names), len(self.templates), -1).mean(dim=1)
        return F.normalize(per_name, dim=-1).cpu()

    def encode_tokens(self, tokens: torch.Tensor, cancelled: Optional[Cancelled] = None) -> torch.Tensor:
        """Same result as ``encode_text(tokens)``, cut to each batch's real length when that is exact."""
        device = next(self.model.parameters()).device
        tokens = tokens.to(device)
        if self._tower is None:
            return torch.cat([self.model.encode_text(_checked(chunk, cancelled)) for chunk in tokens.split(TEXT_BATCH)])
        lengths = tokens.argmax(dim=-1) + 1
        order = lengths.argsort()
        out = torch.empty(len(tokens), self._tower.output_dim, device=device)
        for index in order.split(TEXT_BATCH):
            _checked(index, cancelled)
            length = int(lengths[index].max())
            out[index] = self._tower(tokens[index, :length]).float()
        return out


def _checked(batch: torch.Tensor, cancelled: Optional[Cancelled]) -> torch.Tensor:
    if cancelled is not None and cancelled():
        raise EncodingCancelled("vocabulary encoding cancelled")
    return batch


@dataclass
class _CausalTextTower:
    """The text-tower modules of an open_clip model whose pooling makes truncation exact."""

    token_embedding: nn.Module
    positional_embedding: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: object
    attn_mask: torch.Tensor

    @classmethod
    def from_model(cls, model: nn.Module) -> "_CausalTextTower | None":
        tower = getattr(model, "text", model)
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
        mask = getattr(tower, "attn_mask", None)
        exact = (
            isinstance(model, open_clip.CLIP)
            and pool == "argmax"
            and mask is not None
            and not getattr(tower, "use_pad_mask", False)
            and getattr(tower, "cls_emb", None) is None
        )
        if not exact:
            return None
        return cls(tower.token_embedding, tower.positional_embedding, tower.transformer, tower.ln_final,
                   tower.text_projection, mask)

    @property
    def output_dim(self) -> int:
        projection = self.text_projection
        if isinstance(projection, nn.Linear):
            return projection.out_features
        return int(projection.shape[1]) if projection is not None else int(self.positional_embedding.shape[1])

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(tokens).to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection if self.text_projection is not None else x
