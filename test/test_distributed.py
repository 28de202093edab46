"""The one process-group set-up of every torchrun entry point, and every collective the tools use through it.

NCCL cannot even be created without a GPU, so here the CPU runs the same set-up with gloo in two real
torchrun processes; which backend spec a GPU process gets is checked as a value (the GPU check runs NCCL).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clip_dinoiser_ros.distributed import Ranks, backend_spec, uses_cuda

COLLECTIVES = """
import json, sys
import numpy as np
import torch.distributed as dist
from clip_dinoiser_ros.distributed import Ranks

ranks = Ranks("cpu")
try:
    total = ranks.total(np.full((2, 2), ranks.rank + 1, dtype=np.int64))
    gathered = ranks.gather({"rank": ranks.rank, "text": "x" * (ranks.rank + 1)})
    ranks.barrier()
    backend = str(dist.get_backend())
finally:
    ranks.close()
result = {"rank": ranks.rank, "world": ranks.world, "total": total.tolist(), "gathered": gathered, "backend": backend}
with open(f"{sys.argv[1]}/rank{ranks.rank}.json", "w") as sink:  # a file each: the ranks' stdout interleaves
    json.dump(result, sink)
"""


def test_gpu_processes_send_cpu_tensors_over_gloo_and_cuda_ones_over_nccl():
    assert backend_spec(cuda=True) == "cpu:gloo,cuda:nccl"
    assert backend_spec(cuda=False) == "gloo"
    assert uses_cuda("cuda") and uses_cuda("cuda:1") and not uses_cuda("cpu")


def test_a_plain_run_is_rank_0_of_1_without_a_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ranks = Ranks("cuda")  # no group, so no GPU is touched either
    assert (ranks.rank, ranks.world, ranks.main) == (0, 1, True)
    matrix = np.ones((2, 2), dtype=np.int64)
    assert ranks.gather("only") == ["only"] and ranks.total(matrix) is matrix


def test_two_torchrun_processes_run_every_collective_the_tools_use(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"{torchrun} is not installed")
    finished = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert finished.returncode == 0, finished.stdout + finished.stderr
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in results] == [0, 1] and all(r["world"] == 2 for r in results)
    for result in results:
        assert result["total"] == [[3, 3], [3, 3]]  # 1 + 2 on every element, on every process
        assert result["gathered"] == [{"rank": 0, "text": "x"}, {"rank": 1, "text": "xx"}]
        assert result["backend"] == "gloo"
