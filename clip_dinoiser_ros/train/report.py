"""A run's record next to its checkpoint: the loss curve (PNG) and a short JSON of data, settings, versions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SMOOTHING_STEPS = 50


def companion(checkpoint: Path, suffix: str) -> Path:
    """``heads.pt`` -> ``heads.loss.png`` / ``heads.run.json``."""
    return checkpoint.with_name(f"{checkpoint.stem}{suffix}")


def plot_losses(history: list[list[float]], path: Path, title: str) -> None:
    """Total, correlation and objectness loss per step, raw (faint) and as a running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    if history:
        values = np.asarray(history, dtype=float)
        steps = values[:, 0]
        window = max(1, min(SMOOTHING_STEPS, len(values) // 10 or 1))
        for column, label in ((1, "total"), (2, "correlation (DINO)"), (3, "objectness (FOUND)")):
            line, = axis.plot(steps, values[:, column], alpha=0.25, linewidth=0.8)
            smooth = np.convolve(values[:, column], np.ones(window) / window, mode="valid")
            axis.plot(steps[window - 1:], smooth, color=line.get_color(), label=label)
        axis.legend()
    axis.set_xlabel("step")
    axis.set_ylabel("BCE loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_run(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
