"""Run by `accelerate launch` from test_distributed.py / test_fsdp2.py: train, then save this
rank's trainable weights (whole tensors: FSDP2 shards are gathered) and what rank 0 said."""
from __future__ import annotations

import json
import sys

import torch


def _whole(p: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu()


def main() -> None:
    torch.set_num_threads(1)
    from accelerate import PartialState

    from vlmdpo.config import load_config
    from vlmdpo.train.loop import run_training

    values, out = json.loads(sys.argv[1]), sys.argv[2]
    said: list[str] = []
    res = run_training(load_config(None, values), echo=said.append)
    state = PartialState()
    rank = state.process_index
    said.append(f"distributed_type: {state.distributed_type.value}")
    weights = {n: _whole(p) for n, p in res.model.named_parameters() if p.requires_grad}
    torch.save(weights, f"{out}/rank{rank}.pt")
    with open(f"{out}/rank{rank}.log", "w") as fh:
        fh.write("\n".join(said) + "\n")


if __name__ == "__main__":
    main()
