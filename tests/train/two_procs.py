"""Launch a training worker in two CPU processes (gloo) under `accelerate launch`, read back each
rank's trainable weights and what rank 0 said, and compare them with a one-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from vlmdpo.net import free_port

HERE = Path(__file__).parent
CONFIGS = HERE.parents[1] / "examples" / "accelerate"
# The shipped accelerate configs, with 2 processes; fsdp_worker.py says why FSDP needs its own worker.
DDP, FSDP2 = CONFIGS / "ddp.yaml", CONFIGS / "fsdp2.yaml"


def launch_two(tmp_path: Path, values: dict, config: Path = DDP) -> tuple[dict, dict, str]:
    """Train with 2 CPU processes; each rank's trainable weights, and what rank 0 said."""
    # accelerate 1.x spawns several CPU processes with `--cpu` only through mpirun; without MPI,
    # the torchrun-based launcher plus ACCELERATE_USE_CPU gives real multi-CPU processes (gloo).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    worker = HERE / ("fsdp_worker.py" if config == FSDP2 else "ddp_worker.py")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(worker), json.dumps(values), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in (0, 1))
    return r0, r1, (tmp_path / "rank0.log").read_text()


def assert_same_training(r0: dict, r1: dict, single) -> None:
    """Both ranks hold the same weights, and those of one process trained on the same global batch."""
    w1 = {n: p.detach() for n, p in single.model.named_parameters() if p.requires_grad}
    assert r0.keys() == r1.keys() == w1.keys()
    for k in w1:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
        # Gradients agree to float rounding (all-reduce vs one batch mean); Adam's g/sqrt(v) can
        # magnify that for near-zero entries, so the bound is 1% of one lr-sized step. Training
        # on other pairs than the single process would be off by whole steps (~lr = 5e-3).
        torch.testing.assert_close(r0[k], w1[k], rtol=0, atol=5e-5, msg=lambda m: f"{k}: {m}")
    assert all(w1[k].abs().sum() > 0 for k in w1 if "lora_B" in k)  # LoRA really trained (B starts at 0)


def vision_check(rank: int, port: int, errors) -> None:
    """Spawned by test_fsdp2.py (here, for light imports): ranks 0 and 1 disagree on images."""
    import torch.distributed as dist

    from vlmdpo.batching.layout import _same_vision_everywhere
    from vlmdpo.errors import FixableError
    from vlmdpo.types import Batch

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:  # rank 0 has an image, rank 1 none
        batch = Batch(model_inputs={"pixel_values": 0} if rank == 0 else {}, completion_mask=None, ids=["p"],
                      num_pairs=1)
        _same_vision_everywhere(lambda m, b: None, "FSDP2", torch.nn.Linear(1, 1), batch)
    except FixableError as e:
        errors.put(str(e))
    finally:
        dist.destroy_process_group()
