"""Evaluation results written for people: a markdown table, CSV/JSON for tools, and plots.

matplotlib is imported only when plots are drawn, so metrics stay usable without it; the object API
(``Figure`` + ``savefig``) keeps pyplot's global state and GUI backends out of the way.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .metrics import Scores, scores

MAX_CONFUSION_CLASSES = 60  # beyond this a confusion heatmap is unreadable
ANNOTATE_CONFUSION_CLASSES = 20  # write the percentage in each cell up to this many classes
NO_CLASS = "no class"


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.2f}"


def _check_names(names: Sequence[str], count: int) -> None:
    if len(names) != count:
        raise ValueError(f"{len(names)} class names for {count} classes")


def summary_table(names: Sequence[str], scores: Scores) -> str:
    """Per-class IoU and accuracy in percent as a markdown table, then mIoU, mAcc and aAcc lines."""
    _check_names(names, len(scores.iou))
    lines = ["| class | IoU % | Acc % |", "| --- | ---: | ---: |"]
    for name, iou, accuracy in zip(names, scores.iou, scores.accuracy):
        cell = name.replace("|", "\\|")  # a bare "|" would split the markdown cell
        lines.append(f"| {cell} | {_percent(iou)} | {_percent(accuracy)} |")
    lines += [
        "",
        f"mIoU: {_percent(scores.miou)}",
        f"mAcc: {_percent(scores.mean_accuracy)}",
        f"aAcc: {_percent(scores.pixel_accuracy)}",
    ]
    return "\n".join(lines)


def _number(value: float) -> float | None:
    """JSON has no NaN: unmeasured values become null."""
    return None if math.isnan(value) else float(value)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def write_reports(
    out: Path,
    names: Sequence[str],
    matrix: np.ndarray,
    per_frame: Sequence[tuple[float, float]] | None,
    meta: dict,
    title: str = "",
) -> list[Path]:
    """Write metrics.md/.csv/.json and plots into the existing directory ``out``; return the paths.

    ``per_frame`` holds (time in seconds, frame mIoU as a fraction) and adds miou_over_time.png.
    ``title`` heads every plot, so a picture shared alone still says what made it (e.g. random weights).
    """
    out = Path(out)
    matrix = np.asarray(matrix)
    result = scores(matrix)
    _check_names(names, len(result.iou))
    written = []

    path = out / "metrics.md"
    header = ["# Segmentation metrics", ""] + [f"- {key}: {value}" for key, value in meta.items()]
    path.write_text("\n".join(header + ["", summary_table(names, result), ""]), encoding="utf-8")
    written.append(path)

    path = out / "metrics.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        rows = csv.writer(stream)
        rows.writerow(["class", "iou", "accuracy"])
        rows.writerows([name, _cell(iou), _cell(acc)] for name, iou, acc in zip(names, result.iou, result.accuracy))
        rows.writerow(["mIoU", _cell(result.miou), ""])
        rows.writerow(["mean accuracy", "", _cell(result.mean_accuracy)])
        rows.writerow(["pixel accuracy", "", _cell(result.pixel_accuracy)])
    written.append(path)

    path = out / "metrics.json"
    report = {
        "classes": [
            {"name": name, "iou": _number(iou), "accuracy": _number(acc)}
            for name, iou, acc in zip(names, result.iou, result.accuracy)
        ],
        "miou": _number(result.miou),
        "mean_accuracy": _number(result.mean_accuracy),
        "pixel_accuracy": _number(result.pixel_accuracy),
        "pixels": result.pixels,
        "confusion": matrix.tolist(),
        "meta": meta,
    }
    path.write_text(json.dumps(report, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
    written.append(path)

    if len(names) <= MAX_CONFUSION_CLASSES:
        written.append(_plot_confusion(out / "confusion.png", names, matrix, title))
    written.append(_plot_iou(out / "iou_per_class.png", names, result.iou, title))
    if per_frame is not None:
        written.append(_plot_over_time(out / "miou_over_time.png", per_frame, "mIoU %", title))
    return written


def write_over_time(stem: Path, series: Sequence[tuple[float, float]], label: str, title: str = "") -> list[Path]:
    """``series`` of (time s, fraction) as STEM.csv and a plot STEM.png."""
    path = stem.with_suffix(".csv")
    with path.open("w", newline="", encoding="utf-8") as stream:
        rows = csv.writer(stream)
        rows.writerow(["time_s", label.split()[0].lower()])
        rows.writerows([f"{time:.6f}", repr(float(value))] for time, value in series)
    return [path, _plot_over_time(stem.with_suffix(".png"), series, label, title)]


def write_summary(out: Path, rows: Sequence[dict], total: dict, meta: dict) -> list[Path]:
    """summary.json and summary.md: frames, mIoU, TC and frames/s per bag and over all of them."""
    json_path, md_path = out / "summary.json", out / "summary.md"
    json_path.write_text(json.dumps({"meta": meta, "bags": list(rows), "total": total}, indent=2, allow_nan=False,
                                    default=str) + "\n", encoding="utf-8")
    lines = ["# Bag evaluation", ""] + [f"- {key}: {value}" for key, value in meta.items()] + [
        "", "| bag | frames | matched | mIoU % | TC % | frames/s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in [*rows, total]:
        name = f"**{row['bag']}**" if row is total else str(row["bag"]).replace("|", "\\|")
        lines.append(f"| {name} | {row['frames']} | {row['frames_matched']} | {_optional(row['miou'])} | "
                     f"{_optional(row['tc'])} | {row['frames_per_s']:.2f} |")
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [json_path, md_path]


def _optional(value: float | None) -> str:
    return "—" if value is None else _percent(value)


def _plot_confusion(path: Path, names: Sequence[str], matrix: np.ndarray, title: str) -> Path:
    """Row-normalised, so each row reads as "where did this ground-truth class go"."""
    from matplotlib.figure import Figure

    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = 3 + 0.35 * len(names)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of ground-truth pixels")
    ax.set_xticks(range(len(names) + 1), [*names, NO_CLASS], rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    if len(names) <= ANNOTATE_CONFUSION_CLASSES:
        for (row, column), share in np.ndenumerate(shares):
            if share > 0:
                colour = "white" if share > 0.5 else "black"
                ax.text(column, row, f"{100 * share:.0f}", ha="center", va="center", fontsize=7, color=colour)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def _plot_iou(path: Path, names: Sequence[str], iou: np.ndarray, title: str) -> Path:
    """Unmeasured (NaN) classes keep their row but get no bar, so they are not mistaken for 0."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 1.5 + 0.25 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    rows = np.arange(len(names))
    measured = ~np.isnan(iou)
    ax.barh(rows[measured], 100 * iou[measured], color="tab:blue")
    ax.set_yticks(rows, names)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first class on top, as in the tables
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU %")
    ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path


def _plot_over_time(path: Path, per_frame: Sequence[tuple[float, float]], label: str, title: str) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.add_subplot()
    times = [time for time, _ in per_frame]
    values = [100 * miou for _, miou in per_frame]
    ax.plot(times, values, marker=".", linewidth=1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("time s")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
