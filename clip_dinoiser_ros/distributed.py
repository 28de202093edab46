"""This process's share of a run started by torchrun (RANK, WORLD_SIZE); a plain run is rank 0 of 1.

PyTorch's own launcher does the process management: NCCL between GPUs, gloo on CPU.
"""
from __future__ import annotations

import os

import numpy as np


def process_device(requested: str) -> str:
    """Under torchrun each process takes the GPU of its LOCAL_RANK (``auto`` or ``cuda``); else ``requested``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and requested in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return requested


class Ranks:
    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def total(self, matrix: np.ndarray) -> np.ndarray:
        """The sum over processes (int64, exact)."""
        if self.world == 1:
            return matrix
        import torch
        import torch.distributed as dist

        tensor = torch.from_numpy(matrix.copy())
        dist.all_reduce(tensor)
        return tensor.numpy()

    def gather(self, value: object) -> list[object]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list[object] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
