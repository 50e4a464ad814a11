"""Under FSDP / DeepSpeed only the final model is saved: the default save_steps then quietly means no
intermediate checkpoints (said once), and an explicit request for checkpoints is a clear error."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from vlmdpo.config import TrainConfig
from vlmdpo.errors import FixableError
from vlmdpo.train.run import _checkpoint_every

BASE = dict(model_name_or_path="tiny:causal_lm", dataset="x.jsonl")


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_default_save_steps_means_final_model_only(kind):
    said: list[str] = []
    assert _checkpoint_every(TrainConfig(**BASE), SimpleNamespace(distributed_type=kind), said.append) is None
    assert said and kind in said[0] and "final model" in said[0]


@pytest.mark.parametrize("extra", [dict(save_steps=10), dict(val_size=2, early_stopping_patience=1)])
def test_asking_for_checkpoints_under_fsdp_is_refused(extra):
    with pytest.raises(FixableError, match="save_steps: null"):
        _checkpoint_every(TrainConfig(**BASE, **extra), SimpleNamespace(distributed_type="FSDP"), print)


def test_ddp_keeps_save_steps():
    cfg = TrainConfig(**BASE, save_steps=7)
    assert _checkpoint_every(cfg, SimpleNamespace(distributed_type="MULTI_GPU"), print) == 7
