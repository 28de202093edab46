"""This process's share of a run started by torchrun (RANK, WORLD_SIZE); a plain run is rank 0 of 1.

PyTorch's own launcher does the process management. Every torchrun entry point (training, evaluation, the
bag fleet) sets its group up here, one way: on a GPU process the GPU of LOCAL_RANK is made current first,
then one group carries CPU tensors and picklable objects over gloo and CUDA tensors over NCCL, so that the
tools' CPU-side totals and gathers work beside NCCL (NCCL alone refuses CPU tensors).
"""
from __future__ import annotations

import inspect
import os

import numpy as np


def uses_cuda(device: str) -> bool:
    """Whether a process of ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) runs on a GPU."""
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def backend_spec(cuda: bool) -> str:
    """The process-group backend: CPU tensors and objects over gloo always, CUDA tensors over NCCL on GPUs."""
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def process_device(requested: str) -> str:
    """Under torchrun each process takes the GPU of its LOCAL_RANK (``auto`` or ``cuda``); else ``requested``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and requested in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return requested


class Ranks:
    def __init__(self, device: str, always_group: bool = False) -> None:
        """``always_group``: set the group up for a world of one too (the GPU check runs NCCL on one GPU)."""
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.grouped = self.world > 1 or always_group
        if self.grouped:
            self._init_group(uses_cuda(device))

    def _init_group(self, cuda: bool) -> None:
        import torch
        import torch.distributed as dist

        options = {}
        if cuda:
            torch.cuda.set_device(self.local_rank)
            if "device_id" in inspect.signature(dist.init_process_group).parameters:  # torch >= 2.3
                options["device_id"] = torch.device("cuda", self.local_rank)
        dist.init_process_group(backend_spec(cuda), **options)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def total(self, matrix: np.ndarray) -> np.ndarray:
        """The sum over processes (int64, exact)."""
        if not self.grouped:
            return matrix
        import torch
        import torch.distributed as dist

        tensor = torch.from_numpy(matrix.copy())
        dist.all_reduce(tensor)
        return tensor.numpy()

    def gather(self, value: object) -> list[object]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if not self.grouped:
            return [value]
        import torch.distributed as dist

        values: list[object] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.grouped:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.grouped:
            import torch.distributed as dist

            dist.destroy_process_group()
