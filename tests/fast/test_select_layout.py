"""select_layout: the (collate_fn, logps_fn) pair of a run, chosen once from the options."""
from __future__ import annotations

from types import SimpleNamespace

from vlmdpo.batching.layout import select_layout
from vlmdpo.model.logps import batch_logps
from vlmdpo.types import Batch, EncodedPair, FastOptions, SharedBatch

PAIRS = [EncodedPair("a", [1, 2], [3], [4, 5])]
OFF = FastOptions(share_vision=False, shared_prefix=False, completion_only_logits=False, padding_free=False)


def model(attn: str = "sdpa"):
    return SimpleNamespace(config=SimpleNamespace(_attn_implementation=attn))


def layout(options: FastOptions, attn: str = "sdpa", distributed_type: str | None = None):
    return select_layout(options, model=model(attn), family="causal_lm", pad_token_id=0,
                         distributed_type=distributed_type)


def test_fast_layout_when_any_switch_is_on():
    lay = layout(FastOptions())
    assert lay.fast_paths == ("share_vision", "shared_prefix", "completion_only_logits") and lay.reason_off is None
    batch = lay.collate_fn(PAIRS)
    assert isinstance(batch, SharedBatch) and batch.layout == "shared" and lay.logps_fn is not batch_logps
    assert lay.logps_fn.keywords == {"family": "causal_lm"}


def test_plain_layout_when_every_switch_is_off():
    lay = layout(OFF)
    assert lay.fast_paths == () and lay.reason_off is None and lay.logps_fn is batch_logps
    assert isinstance(lay.collate_fn(PAIRS), Batch)


def test_the_attention_kernel_and_sharded_setups_turn_paths_off():
    lay = layout(FastOptions(padding_free=True), attn="flash_attention_2")
    assert lay.fast_paths == ("share_vision", "completion_only_logits") and lay.collate_fn(PAIRS).layout == "plain"
    for kind in ("MULTI_GPU", "FSDP2"):  # DDP and FSDP2 keep them (tests/train/test_distributed.py, test_fsdp2.py)
        assert layout(FastOptions(), distributed_type=kind).fast_paths
    for kind, fix in (("FSDP", "fsdp_version: 2"), ("DEEPSPEED", "FSDP2")):
        lay = layout(FastOptions(), distributed_type=kind)
        assert lay.logps_fn is batch_logps and lay.fast_paths == () and kind in lay.reason_off and fix in lay.reason_off
