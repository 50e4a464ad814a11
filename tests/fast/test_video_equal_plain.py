"""A pair with a video on tiny:qwen2_vl: every fast layout equals the plain layout (log-probs and gradients)."""
from __future__ import annotations

import pytest
import torch

from fast_helpers import ATOL_GRAD, ATOL_LOGP, grads_of, pad_id, plain_logps, records, tiny
from vlmdpo.batching.shared import collate_shared
from vlmdpo.encode import encode_pair
from vlmdpo.model.fast import fast_batch_logps
from vlmdpo.model.tiny import tiny_video
from vlmdpo.types import FastOptions, ImageRef, PreferenceRecord


def _video_pairs(tmp_path):
    clip = tiny_video(tmp_path / "clip.mp4", frames=4)
    video = PreferenceRecord("video", [{"role": "user", "content": [{"type": "video"},
                                                                     {"type": "text", "text": "What happens?"}]}],
                             [{"role": "assistant", "content": [{"type": "text", "text": "Colours flicker."}]}],
                             [{"role": "assistant", "content": [{"type": "text", "text": "A cat sleeps on a mat."}]}],
                             videos=[ImageRef(path=str(clip))])
    _, processor, adapter = tiny("qwen2_vl")
    # the video pair between an image pair and a text pair: positions and features must line up
    recs = [records("qwen2_vl")[0], video, records("qwen2_vl")[1]]
    return [encode_pair(r, processor, adapter, max_length=None) for r in recs]


@pytest.mark.parametrize("options", [FastOptions(), FastOptions(padding_free=True)], ids=["shared", "packed"])
def test_video_pair_fast_layout_equals_plain(tmp_path, options):
    model, processor, adapter = tiny("qwen2_vl")
    pairs = _video_pairs(tmp_path)
    assert "pixel_values_videos" in pairs[1].vision and "video_grid_thw" in pairs[1].vision
    ref, ref_grads = grads_of(model, lambda: plain_logps(model, processor, adapter, pairs))
    batch = collate_shared(pairs, pad_token_id=pad_id(processor), family="qwen2_vl", options=options)
    out, grads = grads_of(model, lambda: fast_batch_logps(model, batch))
    for side in ("chosen", "rejected"):
        n = getattr(ref, f"{side}_lengths")
        got, want = getattr(out, f"{side}_logps"), getattr(ref, f"{side}_logps")
        assert ((got - want).abs() <= ATOL_LOGP * n).all(), (side, got, want)
    assert set(grads) == set(ref_grads)
    visual = [n for n in ref_grads if ".visual." in n]
    assert visual and any(ref_grads[n].abs().sum() > 0 for n in visual)  # the video reached the vision tower
    for name, g in ref_grads.items():
        tol = ATOL_GRAD * max(1.0, g.abs().max().item())
        assert (grads[name] - g).abs().max().item() <= tol, name


def test_a_dropped_video_would_be_caught(tmp_path):
    # the comparison above can fail: without its frames the video pair scores differently
    model, processor, adapter = tiny("qwen2_vl")
    pairs = _video_pairs(tmp_path)
    frozen = [p.vision["pixel_values_videos"] for p in pairs[1:2]]
    with torch.no_grad():
        ref = plain_logps(model, processor, adapter, pairs)
        pairs[1].vision["pixel_values_videos"] = torch.zeros_like(frozen[0])
        bad = plain_logps(model, processor, adapter, pairs)
    assert (bad.chosen_logps[1] - ref.chosen_logps[1]).abs() > 1e-3
