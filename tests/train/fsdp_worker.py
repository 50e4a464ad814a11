"""Run by `accelerate launch --config_file examples/accelerate/fsdp2.yaml` from test_fsdp2.py on CPU processes.

accelerate 1.15 turns FSDP on only for accelerator devices: `AcceleratorState.__init__` sets
DistributedType.FSDP inside its `elif self.distributed_type in [MULTI_GPU, MULTI_NPU, ...]`
branch, and a CPU launch is MULTI_CPU (gloo), so the plugin is dropped. torch's `fully_shard`
itself runs on CPU with gloo. This worker does what that branch does (distributed_type FSDP,
the plugin kept) for a CPU launch, so everything after it is accelerate's own FSDP2 path:
`fsdp2_prepare_model`, the optimizer swap, `get_state_dict`, `unwrap_model`, `clip_grad_norm_`.
"""
from __future__ import annotations

import functools

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

from ddp_worker import main


def _fsdp_on_cpu(init):
    @functools.wraps(init)
    def wrapped(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = self.distributed_type  # as __init__ ends
    return wrapped


if __name__ == "__main__":
    AcceleratorState.__init__ = _fsdp_on_cpu(AcceleratorState.__init__)
    main()
