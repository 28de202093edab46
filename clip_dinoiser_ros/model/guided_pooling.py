"""The two "DINO tricks" applied at patch resolution: correlation-guided pooling and background filtering."""
from __future__ import annotations

import torch
import torch.nn.functional as F

POOLING_EPS = 1e-6
LOGIT_SCALE = 100.0


def patch_correlation(projected: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between all patches: (B, C, h, w) -> (B, hw, hw)."""
    flat = F.normalize(projected.flatten(2), dim=1)
    return flat.transpose(1, 2) @ flat


def guided_pool(features: torch.Tensor, correlation: torch.Tensor, gamma: float) -> torch.Tensor:
    """F+_p = sum_q A_pq F_q / (sum_q A_pq + eps) with A < gamma zeroed, over every patch of the crop.

    ``features`` is (B, C, h, w), ``correlation`` (B, hw, hw); returns (B, C, h, w).
    """
    weights = correlation.masked_fill(correlation < gamma, 0.0)
    flat = features.flatten(2)
    pooled = torch.einsum("bpq,bcq->bcp", weights, flat)
    pooled = pooled / (weights.sum(dim=2).unsqueeze(1) + POOLING_EPS)
    return pooled.view_as(features)


def synonym_logits(features: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """100 * cosine(feature, text): (B, C, h, w) and (S, C) L2-normalised rows -> (B, S, h, w)."""
    return LOGIT_SCALE * torch.einsum("bchw,sc->bshw", F.normalize(features, dim=1), text_embeddings)


def pooled_features(maskclip: torch.Tensor, projected: torch.Tensor, gamma: float) -> torch.Tensor:
    """MaskCLIP features (B, E, h, w) pooled along the heads' correlations, in fp32, not normalised."""
    return guided_pool(maskclip.float(), patch_correlation(projected.float()), gamma)


def dinoised_logits(maskclip: torch.Tensor, projected: torch.Tensor, text_embeddings: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    """The synonyms' logits of the pooled MaskCLIP features, in fp32."""
    return synonym_logits(pooled_features(maskclip, projected, gamma), text_embeddings)


def class_probabilities(logits: torch.Tensor, synonym_to_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Softmax over classes of the synonyms' ``logits`` (B, S, h, w); a class scores its best synonym.

    ``synonym_to_class`` (S,) is the class index of each synonym. Returns (B, K, h, w).
    """
    if logits.shape[1] != num_classes:
        index = synonym_to_class.view(1, -1, 1, 1).expand_as(logits)
        best = torch.full(
            (logits.shape[0], num_classes, *logits.shape[2:]), float("-inf"), dtype=logits.dtype, device=logits.device
        )
        logits = best.scatter_reduce(1, index, logits, reduce="amax")
    return logits.softmax(dim=1)


def filter_background(probs: torch.Tensor, objectness_logit: torch.Tensor, delta: float) -> torch.Tensor:
    """Patches that are uncertain (max prob < delta) and not salient get probability 1 for class 0.

    Like the reference, the other classes keep their values; callers normalise per pixel at the end.
    """
    uncertain = probs.amax(dim=1, keepdim=True) < delta
    background = uncertain & (objectness_logit <= 0.0)  # sigmoid(x) > 0.5  <=>  x > 0
    filtered = probs.clone()
    filtered[:, :1] = torch.where(background, torch.ones_like(probs[:, :1]), probs[:, :1])
    return filtered
