"""Exceptions the engine raises for problems a user can fix (missing weights, bad checkpoints)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither on disk nor downloadable from here."""


class CheckpointError(ValueError):
    """A heads checkpoint is unreadable or does not have the published layout."""


class EncodingCancelled(Exception):
    """A vocabulary's encoding was stopped between batches by its caller (shutting down)."""
