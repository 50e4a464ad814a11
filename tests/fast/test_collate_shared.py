"""Shared-prefix / plain / packed layouts, masks and positions, on hand-made pairs."""
from __future__ import annotations

import pytest
import torch

from vlmdpo.batching.shared import collate_shared
from vlmdpo.model.families import ADAPTERS
from vlmdpo.model.fast.masks import image_blocks, visibility
from vlmdpo.types import EncodedPair, FastOptions

PAD = 0
FAM = "llava"  # hand-made pairs: any family whose pixel_values are joined by concatenation
A = EncodedPair("a", prompt_ids=[1, 2, 3], chosen_ids=[4, 5], rejected_ids=[6, 7, 8])
B = EncodedPair("b", prompt_ids=[9], chosen_ids=[10], rejected_ids=[11, 12])


def test_shared_layout_rows_positions_branches():
    b = collate_shared([A, B], pad_token_id=PAD, family=FAM)
    assert b.layout == "shared"
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 0, 0, 0, 0]]
    # rejected restarts at the prompt's end
    assert b.positions.tolist() == [[0, 1, 2, 3, 4, 3, 4, 5], [0, 1, 1, 2, 0, 0, 0, 0]]
    assert b.branch.tolist() == [[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 0, 0, 0, 0]]
    assert b.doc.tolist() == [[0] * 8, [1, 1, 1, 1, -1, -1, -1, -1]]
    assert b.chosen_lengths.tolist() == [2, 1] and b.rejected_lengths.tolist() == [3, 2]
    assert b.num_tokens == 12 and b.stats["padding"] == 4


def test_shared_layout_predictors():
    c = collate_shared([A, B], pad_token_id=PAD, family=FAM).completion
    # the first rejected token (6, column 5) is predicted from the prompt's last token (column 2)
    assert c.target.tolist() == [4, 5, 6, 7, 8, 10, 11, 12]
    assert c.row.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert c.pred.tolist() == [2, 3, 2, 5, 6, 0, 0, 2]
    assert c.pair.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert c.side.tolist() == [0, 0, 1, 1, 1, 0, 1, 1]
    assert c.k.tolist() == [0, 1, 0, 1, 2, 0, 0, 1]


def test_plain_layout_matches_the_plain_collator_order():
    b = collate_shared([A, B], pad_token_id=PAD, family=FAM, options=FastOptions(shared_prefix=False))
    assert b.layout == "plain"
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5, 0], [9, 10, 0, 0, 0, 0], [1, 2, 3, 6, 7, 8], [9, 11, 12, 0, 0, 0]]
    assert b.completion.pred.tolist() == [2, 3, 0, 2, 3, 4, 0, 1]
    assert b.vision_repeats


def test_packed_layout_and_row_budget():
    one = collate_shared([A, B], pad_token_id=PAD, family=FAM, options=FastOptions(padding_free=True))
    assert one.layout == "packed" and one.input_ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    assert one.doc.tolist() == [[0] * 8 + [1] * 4]
    assert one.positions.tolist() == [[0, 1, 2, 3, 4, 3, 4, 5, 0, 1, 1, 2]]
    assert one.completion.pred.tolist() == [2, 3, 2, 5, 6, 8, 8, 10]
    assert one.stats["padding"] == 0
    two = collate_shared([A, B, A], pad_token_id=PAD, family=FAM, options=FastOptions(padding_free=True, max_tokens_per_row=12))
    assert two.input_ids.shape == (2, 12)
    assert two.doc[0].tolist() == [0] * 8 + [1] * 4 and two.doc[1].tolist() == [2] * 8 + [-1] * 4


def test_contrast_pair_becomes_two_documents():
    c = EncodedPair("c", prompt_ids=[1, 2], chosen_ids=[3], rejected_ids=[3], vision={"pixel_values": torch.ones(1, 2)},
                    rejected_prompt_ids=[1, 5], rejected_vision={"pixel_values": torch.zeros(1, 2)})
    b = collate_shared([c], pad_token_id=PAD, family=FAM)
    assert b.input_ids.tolist() == [[1, 2, 3, 1, 5, 3]]
    assert b.doc.tolist() == [[0, 0, 0, 1, 1, 1]]
    assert b.positions.tolist() == [[0, 1, 2, 0, 1, 2]]
    assert b.completion.pred.tolist() == [1, 4]
    assert b.vision["pixel_values"].tolist() == [[1.0, 1.0], [0.0, 0.0]]  # document order
    assert not collate_shared([c], pad_token_id=PAD, family=FAM, options=FastOptions(shared_prefix=False)).vision_repeats


def test_visibility_by_hand():
    b = collate_shared([B], pad_token_id=PAD, family=FAM)  # [9 | 10 | 11 12]
    vis = visibility(b.doc, b.branch, b.positions)[0].int().tolist()
    assert vis == [
        [1, 0, 0, 0],  # prompt 9
        [1, 1, 0, 0],  # chosen 10
        [1, 0, 1, 0],  # rejected 11: prompt yes, chosen no
        [1, 0, 1, 1],  # rejected 12
    ]


def test_padding_sees_itself_and_documents_are_isolated():
    b = collate_shared([A, B], pad_token_id=PAD, family=FAM, options=FastOptions(padding_free=True, max_tokens_per_row=None))
    vis = visibility(b.doc, b.branch, b.positions)[0]
    assert not vis[8:, :8].any() and not vis[:8, 8:].any()
    p = collate_shared([A, B], pad_token_id=PAD, family=FAM)
    pv = visibility(p.doc, p.branch, p.positions)[1]
    assert pv[4:, 4:].equal(torch.eye(4, dtype=torch.bool)) and not pv[4:, :4].any() and not pv[:4, 4:].any()


def test_window_counts_logical_positions():
    b = collate_shared([A], pad_token_id=PAD, family=FAM)  # positions 0 1 2 3 4 3 4 5
    vis = visibility(b.doc, b.branch, b.positions, window=3)[0]
    # rejected token at column 7 (position 5) sees positions 3..5 only: columns 5, 6, 7
    assert vis[7].nonzero().flatten().tolist() == [5, 6, 7]
    # column 5 (position 3) sees prompt positions 1, 2 and itself
    assert vis[5].nonzero().flatten().tolist() == [1, 2, 5]


def test_image_blocks_are_bidirectional_within_one_image():
    ids = torch.tensor([[1, 7, 7, 2, 7, 3, 7, 7]])
    doc = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1]])
    blocks = image_blocks(ids, doc, image_token_id=7)
    assert blocks.tolist() == [[-1, 0, 0, -1, 1, -1, 2, 2]]
    branch = torch.zeros_like(ids)
    vis = visibility(doc, branch, torch.arange(8)[None], blocks=blocks)[0]
    assert vis[1, 2] and vis[2, 1] and not vis[1, 4] and not vis[6, 2]


def test_join_vision_pads_idefics_images_and_joins_the_rest():
    v1 = {"pixel_values": torch.ones(1, 2, 3, 4, 4), "pixel_attention_mask": torch.ones(1, 2, 4, 4, dtype=torch.bool)}
    v2 = {"pixel_values": torch.ones(1, 1, 3, 6, 2), "pixel_attention_mask": torch.ones(1, 1, 6, 2, dtype=torch.bool)}
    out = ADAPTERS["idefics3"].join_vision([v1, {}, v2])
    assert out["pixel_values"].shape == (1, 3, 3, 6, 4)
    assert out["pixel_attention_mask"][0, 2].sum() == 12 and out["pixel_attention_mask"][0, 0].sum() == 16
    q = ADAPTERS["qwen2_vl"].join_vision([{"pixel_values": torch.ones(4, 5), "image_grid_thw": torch.tensor([[1, 2, 2]])},
                                        {"pixel_values": torch.zeros(8, 5), "image_grid_thw": torch.tensor([[1, 2, 4]])}])
    assert q["pixel_values"].shape == (12, 5) and q["image_grid_thw"].tolist() == [[1, 2, 2], [1, 2, 4]]
    nxt = ADAPTERS["llava_next"].join_vision([{"pixel_values": torch.ones(1, 3, 3, 2, 2)}, {"pixel_values": torch.ones(1, 5, 3, 2, 2)}])
    assert nxt["pixel_values"].shape == (2, 5, 3, 2, 2) and nxt["pixel_values"][0, 3:].abs().sum() == 0
    assert ADAPTERS["idefics3"].join_vision([{}, {}]) == {}


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="at least one pair"):
        collate_shared([], pad_token_id=PAD, family=FAM)
    with pytest.raises(ValueError, match="empty prompt_ids"):
        collate_shared([EncodedPair("x", [], [1], [2])], pad_token_id=PAD, family=FAM)
    with pytest.raises(ValueError, match="no chosen or rejected"):
        collate_shared([EncodedPair("y", [1], [], [2])], pad_token_id=PAD, family=FAM)


def test_options_from_config_and_move():
    from vlmdpo.config import TrainConfig

    cfg = TrainConfig(model_name_or_path="tiny:llava", dataset="x.jsonl", share_vision=False, padding_free=True)
    o = cfg.fast_options()
    assert (o.share_vision, o.padding_free, o.logits_chunk_size) == (False, True, 1024)
    b = collate_shared([A], pad_token_id=PAD, family=FAM, options=o).to("cpu")
    assert b.options is o and b.layout == "packed"
