"""One training run: data stream, teachers' targets (cached), student steps, checkpoints, the run's record.

Started by ``torchrun``, each process trains on its slice of every global batch and DistributedDataParallel
averages the gradients, which equals one process on the whole batch (the loss is a mean over equal slices).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..distributed import Ranks
from ..model.build import resolve_device
from ..model.clip_loading import load_clip, random_clip
from ..model.heads import save_checkpoint
from ..model.heads_download import cache_dir
from ..model.precision import autocast, resolve_precision
from ..provenance import versions
from .agreement import teacher_agreement
from .images import list_images, split_held_out
from .report import companion, plot_losses, write_run
from .settings import TrainSettings
from .stream import AugmentedImages, RankPositions, SampleStream
from .student import FrozenClipFeatures, losses, new_heads, predictions
from .target_cache import TargetCache
from .teachers import CORRELATION_TEACHER, OBJECTNESS_TEACHER, FOUND_DECODER, Teachers, load_dino, load_found_decoder


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    run_file: Path
    loss_plot: Path
    history: list[list[float]]  # [step, total, correlation, objectness] per step trained in this process' run
    agreement: dict[str, float]


def train(settings: TrainSettings) -> TrainResult:
    """Train the heads as ``settings`` say; every process of a torchrun job calls this."""
    settings.check()
    device = resolve_device(settings.device)
    ranks = Ranks(device.type)
    try:
        if device.type == "cuda" and ranks.world > 1:
            device = torch.device("cuda", ranks.local_rank)  # Ranks made it the current device
        return Trainer(settings, ranks, device).run()
    finally:
        ranks.close()


class Trainer:
    def __init__(self, settings: TrainSettings, ranks: Ranks, device: torch.device) -> None:
        if settings.batch_size % ranks.world:
            raise ValueError(f"--batch-size {settings.batch_size} must be a multiple of the {ranks.world} processes")
        self.settings, self.ranks, self.device = settings, ranks, device
        self.dtype = resolve_precision(settings.precision, device)
        self.autocast = partial(autocast, device, self.dtype)
        images = list_images(Path(settings.images))
        self.train_images, self.held_out = split_held_out(images, settings.held_out)
        if len(self.train_images) < settings.batch_size:
            raise ValueError(f"{len(self.train_images)} training images are fewer than --batch-size "
                             f"{settings.batch_size}")
        self.features = FrozenClipFeatures(self._clip()).to(device)
        self.grid = self.features.grid(settings.image_size)
        self.heads = new_heads(self.features.width, settings.seed, settings.projection_dim).to(device)
        self._teachers: Optional[Teachers] = None
        self.cache = TargetCache(settings.target_cache or cache_dir("targets"), self._target_key()) \
            if settings.cache_targets else None

    def _clip(self) -> torch.nn.Module:
        settings = self.settings
        if settings.random_weights:
            return random_clip(settings.clip_model, seed=settings.seed)
        return load_clip(settings.clip_model, settings.clip_pretrained)

    def teachers(self) -> Teachers:
        """Loaded on first need: a run whose targets are all cached never loads them."""
        if self._teachers is None:
            settings = self.settings
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(settings.seed + 1)
                self._teachers = Teachers(
                    load_dino(CORRELATION_TEACHER, settings.dino, settings.random_weights),
                    load_dino(OBJECTNESS_TEACHER, settings.found_encoder, settings.random_weights),
                    load_found_decoder(settings.found_decoder, settings.random_weights),
                ).to(self.device)
        return self._teachers

    def _target_key(self) -> dict[str, Any]:
        settings = self.settings
        listing = hashlib.sha256("\n".join(
            f"{path.relative_to(settings.images)}:{path.stat().st_size}" for path in self.train_images).encode())
        return {
            "images": str(Path(settings.images).resolve()), "listing": listing.hexdigest(),
            "image_size": settings.image_size, "grid": self.grid, "seed": settings.seed,
            "precision": str(self.dtype), "random_weights": settings.random_weights,
            "correlation_teacher": (CORRELATION_TEACHER, file_identity(settings.dino)),
            "objectness_teacher": (OBJECTNESS_TEACHER, file_identity(settings.found_encoder)),
            "found_decoder": file_identity(settings.found_decoder) or FOUND_DECODER.sha256,
        }

    def targets(self, padded: torch.Tensor, images: list[int], views: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's targets: from the cache where present, the teachers compute (and store) the rest."""
        found = [self.cache.load(i, v, self.grid) if self.cache else None for i, v in zip(images, views)]
        missing = [index for index, item in enumerate(found) if item is None]
        if missing:
            with self.autocast():
                correlation, objectness = self.teachers().targets(padded[missing], self.grid)
            for row, index in enumerate(missing):
                found[index] = (correlation[row], objectness[row])
                if self.cache:
                    self.cache.store(images[index], views[index], correlation[row], objectness[row])
        return (torch.stack([c.to(self.device) for c, _ in found]),
                torch.stack([o.to(self.device) for _, o in found]))

    def run(self) -> TrainResult:
        settings, ranks = self.settings, self.ranks
        model = self.heads if ranks.world == 1 else DistributedDataParallel(
            self.heads, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        optimizer = torch.optim.AdamW(
            [{"params": self.heads.obj_proj.parameters(), "lr": settings.lr_obj_proj},
             {"params": self.heads.bkg_decoder.parameters(), "lr": settings.lr_bkg_decoder}],
            weight_decay=settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(settings.lr_milestones), settings.lr_gamma)
        start, history = self._restore(optimizer) if settings.resume else (0, [])
        scheduler.last_epoch = start  # the restored optimizer holds the learning rates of step `start`
        stream = SampleStream(len(self.train_images), settings.seed, settings.views)
        local_batch = settings.batch_size // ranks.world
        loader = DataLoader(
            AugmentedImages(self.train_images, stream, settings.image_size), batch_size=local_batch,
            sampler=RankPositions(start, settings.iterations, settings.batch_size, ranks.rank, ranks.world),
            num_workers=settings.workers, persistent_workers=False, pin_memory=self.device.type == "cuda")
        started = time.perf_counter()
        progress = tqdm(total=settings.iterations, initial=start, unit="step", dynamic_ncols=True,
                        disable=not (ranks.main and settings.progress), desc="training heads")
        step = start
        for views, images, view_ids in loader:
            padded = self.features.padded(views.to(self.device, non_blocking=True))
            correlation_target, objectness_target = self.targets(padded, images.tolist(), view_ids.tolist())
            with self.autocast():
                head_input = self.features(padded)
            terms = losses(*predictions(model, head_input), correlation_target, objectness_target)
            optimizer.zero_grad(set_to_none=True)
            terms.total.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            history.append([step, *self._mean_over_ranks(terms)])
            progress.update()
            progress.set_postfix(loss=f"{history[-1][1]:.4f}")
            if ranks.main and step % settings.checkpoint_every == 0 and step < settings.iterations:
                self._save(optimizer, step, history)
        progress.close()
        seconds = time.perf_counter() - started
        if ranks.main:
            self._save(optimizer, step, history)
            agreement = teacher_agreement(self.held_out, self.features, self.heads.eval(), self.teachers(),
                                          settings.image_size, self.device, self.autocast) if self.held_out else {}
            self._write_record(history, agreement, step - start, seconds)
        else:
            agreement = {}
        ranks.barrier()
        out = Path(settings.out)
        return TrainResult(out, companion(out, ".run.json"), companion(out, ".loss.png"), history, agreement)

    def _mean_over_ranks(self, terms) -> list[float]:
        values = torch.stack([terms.total, terms.correlation, terms.objectness]).detach().float()
        if self.ranks.world > 1:
            dist.all_reduce(values)
            values /= self.ranks.world
        return values.tolist()

    def _save(self, optimizer: torch.optim.Optimizer, step: int, history: list[list[float]]) -> None:
        """The published layout (epoch, model_state_dict) plus what --resume needs; written atomically."""
        out = Path(self.settings.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.heads, out, epoch=step * self.settings.batch_size // len(self.train_images),
                        training_state={"step": step, "optimizer": optimizer.state_dict(), "history": history,
                                        "settings": self.settings.result_settings()})

    def _restore(self, optimizer: torch.optim.Optimizer) -> tuple[int, list[list[float]]]:
        out = Path(self.settings.out)
        if not out.is_file():
            raise FileNotFoundError(f"--resume: {out} does not exist yet; start without --resume")
        content = torch.load(out, map_location="cpu", weights_only=True)
        state = content.get("training_state") if isinstance(content, dict) else None
        if state is None:
            raise ValueError(f"--resume: {out} holds heads but no training state (not written by clip-dinoiser-train)")
        saved, now = state["settings"], self.settings.result_settings()
        different = {key: (saved.get(key), value) for key, value in now.items() if saved.get(key) != value}
        if different:
            details = "; ".join(f"{key} was {old!r}, now {new!r}" for key, (old, new) in different.items())
            raise ValueError(f"--resume: {out} was trained with other settings ({details}): resuming would not "
                             f"give the run those settings describe")
        self.heads.load_state_dict(content["model_state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        return int(state["step"]), [list(row) for row in state["history"]]

    def _write_record(self, history: list[list[float]], agreement: dict[str, float], steps: int,
                      seconds: float) -> None:
        settings, out = self.settings, Path(self.settings.out)
        title = f"{settings.clip_model} heads" + (" (random weights: plumbing only)" if settings.random_weights else "")
        plot_losses(history, companion(out, ".loss.png"), title)
        write_run(companion(out, ".run.json"), {
            "checkpoint": str(out),
            "data": {"images": str(Path(settings.images).resolve()), "train": len(self.train_images),
                     "held_out": len(self.held_out)},
            "settings": settings.as_json(),
            "seeds": {"data_and_heads": settings.seed, "random_teachers": settings.seed + 1},
            "teachers": {"correlation": asdict(CORRELATION_TEACHER), "objectness": asdict(OBJECTNESS_TEACHER),
                         "found_decoder": str(settings.found_decoder or FOUND_DECODER.url)},
            "processes": self.ranks.world, "device": str(self.device), "precision": str(self.dtype),
            "steps": history[-1][0] if history else 0, "steps_this_run": steps,
            "steps_per_second": steps / seconds if seconds > 0 else None,
            "final_loss": dict(zip(("total", "correlation", "objectness"), history[-1][1:])) if history else None,
            "teacher_agreement_held_out": agreement,
            "versions": versions(),
        })


def file_identity(path: Optional[Path]) -> Optional[str]:
    """A local weights file as the cache key sees it: its path, size and modification time."""
    if path is None or not Path(path).is_file():
        return None if path is None else str(path)  # a missing file fails when the teacher loads, clearly
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
