"""Golden values for every loss, computed by hand on plain floats, plus a cross-check against TRL's code."""
from __future__ import annotations

import math

import pytest
import torch

from vlmdpo import losses as L
from vlmdpo.types import LogpPair

BETA = 0.5

# Three pairs. Summed completion log-probs, completion lengths, and the sums over the first
# min(len_c, len_r) tokens ("shared") for LD-DPO.
PC, PR = [-5.0, -7.5, -3.0], [-6.0, -7.0, -9.0]
RC, RR = [-5.5, -7.0, -4.0], [-5.5, -7.5, -8.0]
LC, LR = [5, 6, 3], [4, 7, 6]
PC_SH, PR_SH = [-4.5, -7.5, -3.0], [-6.0, -6.4, -4.0]
RC_SH, RR_SH = [-5.0, -7.0, -4.0], [-5.5, -6.0, -3.5]


def pair(c, r, lc=LC, lr=LR, csh=None, rsh=None) -> LogpPair:
    t = lambda v: None if v is None else torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return LogpPair(t(c), t(r), t([float(x) for x in lc]), t([float(x) for x in lr]), t(csh), t(rsh))


POLICY = pair(PC, PR, csh=PC_SH, rsh=PR_SH)
REF = pair(RC, RR, csh=RC_SH, rsh=RR_SH)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


# log-ratios by hand: chosen [0.5, -0.5, 1.0], rejected [-0.5, 0.5, -1.0]
CLR = [p - r for p, r in zip(PC, RC)]
RLR = [p - r for p, r in zip(PR, RR)]


def run(loss_type, **kw):
    loss, metrics = L.compute_loss(POLICY, REF, loss_type=loss_type, beta=kw.pop("beta", BETA), **kw)
    return loss.item(), {k: v.item() for k, v in metrics.items()}


def test_log_ratios_are_what_the_golden_values_assume():
    assert CLR == [0.5, -0.5, 1.0] and RLR == [-0.5, 0.5, -1.0]


def test_sigmoid_golden():
    # z = beta*(clr - rlr) = [0.5, -0.5, 1.0]
    want = mean(-logsig(0.5 * (c - r)) for c, r in zip(CLR, RLR))
    assert want == pytest.approx((-logsig(0.5) - logsig(-0.5) - logsig(1.0)) / 3)
    got, m = run("sigmoid")
    assert got == pytest.approx(want, abs=1e-6)
    assert m["loss"] == pytest.approx(want, abs=1e-6)
    assert m["rewards/chosen"] == pytest.approx(0.5 * mean(CLR), abs=1e-6)
    assert m["rewards/rejected"] == pytest.approx(0.5 * mean(RLR), abs=1e-6)
    assert m["rewards/accuracies"] == pytest.approx(2 / 3)  # pair 2 is ranked wrongly
    assert m["rewards/margins"] == pytest.approx(0.5 * (1 - 1 + 2) / 3, abs=1e-6)
    assert m["logps/chosen"] == pytest.approx(mean(PC)) and m["logps/rejected"] == pytest.approx(mean(PR))


def test_cdpo_label_smoothing_golden():
    eps = 0.2
    want = mean(-(1 - eps) * logsig(z) - eps * logsig(-z) for z in (0.5, -0.5, 1.0))
    got, _ = run("sigmoid", label_smoothing=eps)
    assert got == pytest.approx(want, abs=1e-6)


def test_hinge_golden():
    want = mean(max(0.0, 1 - z) for z in (0.5, -0.5, 1.0))  # [0.5, 1.5, 0] -> 2/3
    assert want == pytest.approx(2 / 3)
    assert run("hinge")[0] == pytest.approx(want, abs=1e-6)


def test_ipo_golden():
    # per-token averaged log-ratios, then (delta - 1/(2 beta))^2 with 1/(2*0.5) = 1
    deltas = [c / lc - r / lr for c, r, lc, lr in zip(CLR, RLR, LC, LR)]
    assert deltas[0] == pytest.approx(0.5 / 5 + 0.5 / 4)
    want = mean((d - 1.0) ** 2 for d in deltas)
    assert run("ipo")[0] == pytest.approx(want, abs=1e-6)


def test_robust_golden():
    eps = 0.1
    want = mean((-(1 - eps) * logsig(z) + eps * logsig(-z)) / (1 - 2 * eps) for z in (0.5, -0.5, 1.0))
    assert run("robust", label_smoothing=eps)[0] == pytest.approx(want, abs=1e-6)


def test_exo_pair_golden():
    eps = 0.1
    want = mean(sig(z) * (logsig(z) - math.log(1 - eps)) + sig(-z) * (logsig(-z) - math.log(eps))
                for z in (0.5, -0.5, 1.0))
    assert run("exo_pair", label_smoothing=eps)[0] == pytest.approx(want, abs=1e-6)


def test_bco_pair_golden_with_and_without_running_delta():
    want0 = mean(-logsig(BETA * c) - logsig(-BETA * r) for c, r in zip(CLR, RLR))
    assert run("bco_pair")[0] == pytest.approx(want0, abs=1e-6)
    d = 0.3
    want = mean(-logsig(BETA * c - d) - logsig(-(BETA * r - d)) for c, r in zip(CLR, RLR))
    assert run("bco_pair", bco_delta=d)[0] == pytest.approx(want, abs=1e-6)


def test_running_mean_and_bco_batch_reward():
    # batch reward = mean(beta*[clr, rlr]) = 0.5 * 0 = 0 for our pairs; shift the policy to make it non-zero
    shifted = pair([x + 1 for x in PC], PR)
    r = L.bco_batch_reward(shifted, REF, beta=BETA).item()
    assert r == pytest.approx(BETA * (sum(CLR) + 3 + sum(RLR)) / 6)
    rm = L.RunningMean()
    rm.update(torch.tensor(2.0))
    rm.update(torch.tensor([4.0, 6.0]))
    assert rm.mean == pytest.approx(4.0) and rm.count == 3
    copy = L.RunningMean()
    copy.load_state_dict(rm.state_dict())
    assert copy == rm


def test_sppo_hard_golden():
    want = mean((c - 0.5 / BETA) ** 2 + (r + 0.5 / BETA) ** 2 for c, r in zip(CLR, RLR))
    assert want == pytest.approx(mean([0.25 + 0.25, 2.25 + 2.25, 0 + 0]))
    assert run("sppo_hard")[0] == pytest.approx(want, abs=1e-6)


def test_nca_pair_golden():
    want = mean(-logsig(BETA * c) - 0.5 * logsig(-BETA * c) - 0.5 * logsig(-BETA * r) for c, r in zip(CLR, RLR))
    assert run("nca_pair")[0] == pytest.approx(want, abs=1e-6)


def test_apo_zero_and_down_golden():
    zero = mean(1 - sig(BETA * c) + sig(BETA * r) for c, r in zip(CLR, RLR))
    down = mean(sig(BETA * c) + 1 - sig(BETA * (c - r)) for c, r in zip(CLR, RLR))
    assert run("apo_zero")[0] == pytest.approx(zero, abs=1e-6)
    assert run("apo_down")[0] == pytest.approx(down, abs=1e-6)


def test_sft_is_token_mean_nll_over_chosen():
    want = -(sum(PC)) / sum(LC)  # 15.5 / 14
    got, m = run("sft")
    assert got == pytest.approx(15.5 / 14, abs=1e-6) and got == pytest.approx(want)
    assert m["nll_loss"] == pytest.approx(want)
    # reference-free: needs no ref
    loss, _ = L.compute_loss(POLICY, None, loss_type="sft")
    assert loss.item() == pytest.approx(want, abs=1e-6)


def test_simpo_golden_reference_free():
    beta, gamma = 2.0, 0.5
    avg_c = [c / n for c, n in zip(PC, LC)]  # [-1, -1.25, -1]
    avg_r = [r / n for r, n in zip(PR, LR)]  # [-1.5, -1, -1.5]
    assert avg_c == [-1.0, -1.25, -1.0] and avg_r == [-1.5, -1.0, -1.5]
    want = mean(-logsig(beta * (c - r) - gamma) for c, r in zip(avg_c, avg_r))  # z = [0.5, -1, 0.5]
    assert want == pytest.approx((-2 * logsig(0.5) - logsig(-1.0)) / 3)
    loss, m = L.compute_loss(POLICY, None, loss_type="simpo", beta=beta, simpo_gamma=gamma)
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(beta * mean(avg_c))
    assert m["logps/rejected"].item() == pytest.approx(mean(avg_r))
    assert m["rewards/accuracies"].item() == pytest.approx(2 / 3)


def test_orpo_golden_reference_free():
    beta = 0.1
    avg_c, avg_r = [-1.0, -1.25, -1.0], [-1.5, -1.0, -1.5]

    def log_odds(c, r):  # log(p/(1-p)) difference by hand
        return (c - math.log(1 - math.exp(c))) - (r - math.log(1 - math.exp(r)))

    nll = 15.5 / 14
    ratio = [logsig(log_odds(c, r)) for c, r in zip(avg_c, avg_r)]
    want = nll - beta * mean(ratio)
    loss, m = L.compute_loss(POLICY, None, loss_type="orpo", beta=beta)
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert m["nll_loss"].item() == pytest.approx(nll, abs=1e-6)
    assert m["log_odds_chosen"].item() == pytest.approx(mean(log_odds(c, r) for c, r in zip(avg_c, avg_r)), abs=1e-6)


def test_ld_alpha_golden():
    a = 0.25
    ld = lambda tot, sh: sh + a * (tot - sh)  # noqa: E731
    clr = [ld(p, ps) - ld(r, rs) for p, ps, r, rs in zip(PC, PC_SH, RC, RC_SH)]
    rlr = [ld(p, ps) - ld(r, rs) for p, ps, r, rs in zip(PR, PR_SH, RR, RR_SH)]
    assert clr[0] == pytest.approx((-4.5 + 0.25 * -0.5) - (-5.0 + 0.25 * -0.5))
    want = mean(-logsig(BETA * (c - r)) for c, r in zip(clr, rlr))
    got, m = run("sigmoid", ld_alpha=a)
    assert got == pytest.approx(want, abs=1e-6)
    assert m["logps/chosen"] == pytest.approx(mean(ld(p, s) for p, s in zip(PC, PC_SH)), abs=1e-6)
    # ld_alpha = 1 is plain DPO
    assert run("sigmoid", ld_alpha=1.0)[0] == pytest.approx(run("sigmoid")[0], abs=1e-6)


def test_mpo_weighted_list_golden():
    sig_l = mean(-logsig(BETA * (c - r)) for c, r in zip(CLR, RLR))
    bco_l = mean(-logsig(BETA * c) - logsig(-BETA * r) for c, r in zip(CLR, RLR))
    sft_l = 15.5 / 14
    got, m = run(["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])
    assert got == pytest.approx(0.8 * sig_l + 0.2 * bco_l + 1.0 * sft_l, abs=1e-6)
    assert m["loss/bco_pair"] == pytest.approx(bco_l, abs=1e-6)


def test_rpo_alpha_adds_nll():
    base, _ = run("sigmoid")
    got, _ = run("sigmoid", rpo_alpha=0.5)
    assert got == pytest.approx(base + 0.5 * 15.5 / 14, abs=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss_weights"):
        L.compute_loss(POLICY, REF, loss_type=["sigmoid", "sft"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="unknown loss_type"):
        L.compute_loss(POLICY, REF, loss_type="sigmod")
    with pytest.raises(ValueError, match="needs reference"):
        L.compute_loss(POLICY, None, loss_type="sigmoid")
    with pytest.raises(ValueError, match="shared"):
        L.compute_loss(pair(PC, PR), REF, loss_type="sigmoid", ld_alpha=0.5)


def test_gradients_flow_to_policy_only():
    c = torch.tensor(PC, requires_grad=True)
    p = LogpPair(c, torch.tensor(PR), torch.tensor([5.0, 6, 3]), torch.tensor([4.0, 7, 6]))
    loss, m = L.compute_loss(p, REF, loss_type="sigmoid", beta=BETA)
    loss.backward()
    # d/dc of -logsig(beta*(c - ...)) = -beta * sig(-z) / B
    zs = [0.5, -0.5, 1.0]
    assert c.grad.tolist() == pytest.approx([-BETA * sig(-z) / 3 for z in zs], abs=1e-6)
    assert not any(v.requires_grad for v in m.values())


# ---------------------------------------------------------------- cross-check against TRL's own code
# We run TRL 1.16's DPOTrainer._compute_loss on a minimal object: a fake model returns per-token
# log-probs we chose, so TRL's masking, ld_alpha split, loss formulas and metrics all execute for
# real, and we compare with compute_loss on LogpPairs summed from the same tensors.

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")


class _FakeModel(torch.nn.Module):
    is_gradient_checkpointing = False

    def __init__(self, per_token):
        super().__init__()
        self.per_token = per_token

    def forward(self, **kwargs):
        from types import SimpleNamespace

        lp = self.per_token
        return SimpleNamespace(log_probs=lp, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp),
                               is_top1=torch.zeros_like(lp, dtype=torch.bool))


class _FakeAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    gather = gather_for_metrics


def _random_batch(seed, B=4, T=14):
    g = torch.Generator().manual_seed(seed)
    # completion_mask [2B, T]: prompt of 3..5 tokens, completion of 1..8 tokens, then padding
    mask = torch.zeros(2 * B, T, dtype=torch.long)
    for i in range(2 * B):
        p = int(torch.randint(3, 6, (1,), generator=g))
        n = int(torch.randint(1, 9, (1,), generator=g))
        mask[i, p:p + n] = 1
    shift = mask[:, 1:].float()
    pol = -torch.rand(2 * B, T - 1, generator=g) * 3 * shift
    ref = -torch.rand(2 * B, T - 1, generator=g) * 3 * shift
    return mask, shift, pol, ref


def _logp_pair(per_token, shift):
    B = per_token.shape[0] // 2
    lens = shift.sum(1)
    shared_len = torch.minimum(lens[:B], lens[B:]).repeat(2)
    pos = shift.cumsum(1)
    shared = (per_token * ((pos > 0) & (pos <= shared_len[:, None]))).sum(1)
    tot = per_token.sum(1)
    return LogpPair(tot[:B], tot[B:], lens[:B], lens[B:], shared[:B], shared[B:])


def _trl_loss(mask, pol, ref, *, loss_type, loss_weights=None, beta=0.1, label_smoothing=0.0, ld_alpha=None):
    from collections import defaultdict
    from types import SimpleNamespace

    t = object.__new__(trl_dpo.DPOTrainer)
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    attrs = dict(model=_FakeModel(pol), ref_model=_FakeModel(ref), accelerator=_FakeAccelerator(),
                 args=SimpleNamespace(gradient_checkpointing_kwargs=None), aux_loss_enabled=False,
                 ld_alpha=ld_alpha, precompute_ref_logps=False, f_divergence_type="reverse_kl",
                 loss_types=types, loss_weights=loss_weights or [1.0] * len(types), beta=beta,
                 label_smoothing=label_smoothing, use_weighting=False,
                 _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    for k, v in attrs.items():
        object.__setattr__(t, k, v)
    inputs = {"input_ids": torch.zeros_like(mask), "attention_mask": torch.ones_like(mask), "completion_mask": mask}
    loss = t._compute_loss(t.model, inputs, return_outputs=False)
    return loss, {k: v[0] for k, v in t._metrics["train"].items()}


TRL_CASES = [
    ("sigmoid", {}), ("hinge", {}), ("ipo", {}), ("robust", {"label_smoothing": 0.1}),
    ("exo_pair", {"label_smoothing": 0.1}), ("bco_pair", {}), ("sppo_hard", {}), ("nca_pair", {}),
    ("apo_zero", {}), ("apo_down", {}), ("sft", {}), ("sigmoid", {"ld_alpha": 0.3}), ("ipo", {"ld_alpha": 0.6}),
    (["sigmoid", "bco_pair", "sft"], {"loss_weights": [0.8, 0.2, 1.0]}),
]


@pytest.mark.parametrize("loss_type,kw", TRL_CASES, ids=lambda x: str(x))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_trl_dpo_trainer(loss_type, kw, seed):
    mask, shift, pol, ref = _random_batch(seed)
    beta = 0.3
    want, trl_metrics = _trl_loss(mask, pol, ref, loss_type=loss_type, beta=beta, **kw)
    got, ours = L.compute_loss(_logp_pair(pol, shift), _logp_pair(ref, shift), loss_type=loss_type, beta=beta, **kw)
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected"):
        assert ours[name].item() == pytest.approx(trl_metrics[name], abs=1e-5), name


def test_matches_trl_cpo_simpo_and_orpo_ratio():
    from types import SimpleNamespace

    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    mask, shift, pol, _ = _random_batch(3)
    p = _logp_pair(pol, shift)
    c_avg, r_avg = p.chosen_logps / p.chosen_lengths, p.rejected_logps / p.rejected_lengths
    fake = SimpleNamespace(alpha=0.0, beta=2.0, simpo_gamma=0.7, label_smoothing=0.0, loss_type="simpo",
                           accelerator=_FakeAccelerator())
    losses, c_rew, _ = cpo.CPOTrainer.cpo_loss(fake, c_avg, r_avg)
    got, m = L.compute_loss(p, None, loss_type="simpo", beta=2.0, simpo_gamma=0.7)
    assert got.item() == pytest.approx(losses.mean().item(), abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(c_rew.mean().item(), abs=1e-6)

    fake.beta = 0.1
    ratio_losses, c_rew, _, log_odds_ratio, log_odds_chosen = orpo.ORPOTrainer.odds_ratio_loss(fake, c_avg, r_avg)
    got, m = L.compute_loss(p, None, loss_type="orpo", beta=0.1)
    # TRL: loss = nll - losses.mean(); its nll covers prompt tokens too, ours the chosen completion (see losses.py)
    assert (got - m["nll_loss"]).item() == pytest.approx(-ratio_losses.mean().item(), abs=1e-6)
    assert m["log_odds_ratio"].item() == pytest.approx(log_odds_ratio.item(), abs=1e-6)
    assert m["log_odds_chosen"].item() == pytest.approx(log_odds_chosen.item(), abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(c_rew.mean().item(), abs=1e-6)
