"""Prompt lists: parsing of synonyms and the validation every entry point shares.

A prompt may name synonyms separated by ``|`` ("chair|seat"): one class, named by its first synonym,
scored by the best-matching synonym.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    import torch

SYNONYM_SEPARATOR = "|"
DEFAULT_MAX_PROMPTS = 256
DEFAULT_MAX_PROMPT_LENGTH = 200
BACKGROUND_PROMPT = "background"
BACKGROUND_SETTINGS = {"auto": None, "on": True, "off": False}  # user-facing names of `background=`


@dataclass(frozen=True)
class ClassPrompt:
    """One class of the vocabulary: its display name and the texts that describe it."""

    name: str
    synonyms: tuple[str, ...]


@dataclass(frozen=True)
class Vocabulary:
    """An encoded prompt list: one row of ``text_embeddings`` per synonym, mapped to its class."""

    classes: tuple[ClassPrompt, ...]
    text_embeddings: torch.Tensor  # (S, E), L2-normalised, CPU float32
    synonym_to_class: torch.Tensor  # (S,) int64

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def class_embeddings(self) -> torch.Tensor:
        """(K, E): one unit vector per class, its synonyms' embeddings averaged and L2-normalised again.

        For consumers that score a class with one dot product (``~/encode_texts``). The engine itself
        scores a class by its best synonym (max of their logits): for a one-synonym class both are equal."""
        sums = self.text_embeddings.new_zeros((len(self), self.text_embeddings.shape[1]))
        sums.index_add_(0, self.synonym_to_class, self.text_embeddings)
        return sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12)


def parse_prompt(prompt: str) -> ClassPrompt:
    """Split ``"chair|seat"`` into a class named ``chair`` with two synonyms."""
    synonyms = tuple(part.strip() for part in prompt.split(SYNONYM_SEPARATOR))
    if not all(synonyms):
        raise ValueError(f"prompt {prompt!r} is empty or has an empty synonym")
    return ClassPrompt(name=synonyms[0], synonyms=synonyms)


def parse_prompts(
    prompts: Sequence[str],
    *,
    max_prompts: int = DEFAULT_MAX_PROMPTS,
    max_length: int = DEFAULT_MAX_PROMPT_LENGTH,
) -> tuple[ClassPrompt, ...]:
    """Validate a whole prompt list; raise ValueError with the first problem found."""
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise ValueError("prompts must not be empty")
    if len(prompts) > max_prompts:
        raise ValueError(f"{len(prompts)} prompts exceed max_prompts={max_prompts}")
    classes = []
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompt {index} is a {type(prompt).__name__}, not a string")
        if len(prompt) > max_length:
            raise ValueError(f"prompt {index} is {len(prompt)} characters long (max {max_length})")
        classes.append(parse_prompt(prompt))
    names = [c.name.casefold() for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {', '.join(duplicates)}")
    return tuple(classes)


def uses_background(vocabulary: Vocabulary, background: Optional[bool]) -> bool:
    """Automatic: on exactly when class 0 is named "background", as in the reference."""
    if background is None:
        return vocabulary.names[0].casefold() == BACKGROUND_PROMPT
    if background and len(vocabulary) < 2:
        raise ValueError("background filtering needs class 0 plus at least one other class")
    return bool(background)
