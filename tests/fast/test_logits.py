"""Completion-only, chunked log-probs: golden values and equality with full logits."""
from __future__ import annotations

import math

import pytest
import torch

from vlmdpo.model.fast.logits import full_logits_logps, head_logps, reduce_completion_logps


def test_golden_value_by_hand():
    head = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    hidden = torch.tensor([[1.0, 2.0, 3.0]])
    got = head_logps(hidden, torch.tensor([2]), head)
    # log softmax of logits (1, 2, 3) at index 2
    want = 3.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(-0.40760596, abs=1e-7)


def test_softcap_golden_value_by_hand():
    head = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    hidden = torch.tensor([[1.0, 2.0, 3.0]])
    capped = [2.0 * math.tanh(x / 2.0) for x in (1.0, 2.0, 3.0)]
    want = capped[0] - math.log(sum(math.exp(c) for c in capped))
    got = head_logps(hidden, torch.tensor([0]), head, softcap=2.0)
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert got.item() != pytest.approx(head_logps(hidden, torch.tensor([0]), head).item(), abs=1e-3)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_equals_full_logits_values_and_grads(chunk, softcap):
    g = torch.Generator().manual_seed(0)
    R, T, d, V = 3, 11, 8, 50
    hidden = torch.randn(R, T, d, generator=g, requires_grad=True)
    head = torch.nn.Linear(d, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, d, generator=g))
    row = torch.tensor([0, 0, 1, 2, 2, 2])
    pred = torch.tensor([2, 3, 0, 4, 5, 9])
    tgt = torch.randint(0, V, (6,), generator=g)

    full = full_logits_logps(hidden, row, pred, tgt, head, softcap=softcap)
    (full * torch.arange(1.0, 7.0)).sum().backward()
    gh, gw = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None

    fast = head_logps(hidden[row, pred], tgt, head, softcap=softcap, chunk_size=chunk)
    (fast * torch.arange(1.0, 7.0)).sum().backward()
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden.grad, gh, atol=1e-5, rtol=0)
    torch.testing.assert_close(head.weight.grad, gw, atol=1e-5, rtol=0)


def test_tied_head_gets_gradients_from_both_uses():
    # An LM head tied to the input embeddings: the gradient reaching the shared weight must be
    # the same whether the head runs on every position or on completion positions in chunks.
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.Embedding(20, 6)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(20, 6, generator=g))
    head = torch.nn.Linear(6, 20, bias=False)
    head.weight = emb.weight
    ids = torch.randint(0, 20, (2, 5), generator=g)
    row, pred, tgt = torch.tensor([0, 1, 1]), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])

    full_logits_logps(emb(ids), row, pred, tgt, head).sum().backward()
    want = emb.weight.grad.clone()
    emb.weight.grad = None
    head_logps(emb(ids)[row, pred], tgt, head, chunk_size=2).sum().backward()
    assert want.abs().max() > 0.1  # both uses contribute
    torch.testing.assert_close(emb.weight.grad, want, atol=1e-5, rtol=0)


def test_chunks_never_exceed_chunk_size_and_recompute_in_backward():
    seen = []
    head = torch.nn.Linear(4, 9, bias=False)
    head.register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    hidden = torch.randn(10, 4, requires_grad=True)
    out = head_logps(hidden, torch.zeros(10, dtype=torch.long), head, chunk_size=4)
    assert seen == [(4, 9), (4, 9), (2, 9)]
    out.sum().backward()
    # checkpointed chunks are rebuilt one at a time during backward
    assert sorted(seen[3:]) == [(2, 9), (4, 9), (4, 9)]


def test_no_grad_needs_no_recompute():
    head = torch.nn.Linear(4, 9)
    with torch.no_grad():
        out = head_logps(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), head)
    assert out.shape == (5,) and not out.requires_grad
    assert head_logps(torch.randn(0, 4), torch.zeros(0, dtype=torch.long), head).shape == (0,)


def test_reduce_logps_golden():
    # pair 0: chosen tokens -1, -2 ; rejected -3, -4, -5     (shared length 2)
    # pair 1: chosen -0.5          ; rejected -0.25, -0.125  (shared length 1)
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0, -0.5, -0.25, -0.125])
    pair = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    side = torch.tensor([0, 0, 1, 1, 1, 0, 1, 1])
    k = torch.tensor([0, 1, 0, 1, 2, 0, 0, 1])
    out = reduce_completion_logps(lp, pair, side, k, torch.tensor([2, 1]), torch.tensor([3, 2]))
    assert out.chosen_logps.tolist() == [-3.0, -0.5]
    assert out.rejected_logps.tolist() == [-12.0, -0.375]
    assert out.chosen_shared_logps.tolist() == [-3.0, -0.5]
    assert out.rejected_shared_logps.tolist() == [-7.0, -0.25]
    assert out.chosen_lengths.tolist() == [2, 1] and out.rejected_lengths.tolist() == [3, 2]
