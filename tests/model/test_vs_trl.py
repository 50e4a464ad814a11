"""Cross-check with TRL 1.16's DPOTrainer on every tiny family, fp32, identical batches.

For each family: (1) TRL's own collator turns the same examples into exactly our batch (LLaVA:
ours adds the EOS its template lacks); (2) TRL's fused-LM-head forward on our batch gives our
per-pair chosen/rejected log-probs; (3) TRL's `_compute_loss` gives our sigmoid loss and metrics,
also with ld_alpha (which reads our shared-length sums).
"""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from vlmdpo.batching.plain import collate  # noqa: E402
from vlmdpo.encode import encode_pair  # noqa: E402
from vlmdpo.losses import compute_loss  # noqa: E402
from vlmdpo.model.families import adapter_for  # noqa: E402
from vlmdpo.model.logps import batch_logps  # noqa: E402
from vlmdpo.model.tiny import FAMILIES, build_tiny, tiny_image  # noqa: E402
from vlmdpo.types import ImageRef, PreferenceRecord  # noqa: E402

BETA, TOL = 0.1, 1e-4
# TRL's DPOConfig passes transformers' renamed `gradient_checkpointing` argument
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
QA = [("What is the cat doing?", "The cat is on the red mat.", "A dog."),
      ("Is the dog red?", "No.", "Yes, it is red and blue.")]


def examples(family):
    """TRL-format rows: conversational, images in an `images` column (1 and 2 images)."""
    rows = []
    for i, (q, c, r) in enumerate(QA):
        n_images = 0 if family == "causal_lm" else i + 1
        if family == "causal_lm":
            prompt = [{"role": "user", "content": q}]
            chosen, rejected = [{"role": "assistant", "content": c}], [{"role": "assistant", "content": r}]
        else:
            prompt = [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": q}]}]
            chosen = [{"role": "assistant", "content": [{"type": "text", "text": c}]}]
            rejected = [{"role": "assistant", "content": [{"type": "text", "text": r}]}]
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if n_images:
            row["images"] = [tiny_image(10 * i + k) for k in range(n_images)]
        rows.append(row)
    return rows


def as_record(i, row) -> PreferenceRecord:
    def norm(msgs):
        return [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]
                 if isinstance(m["content"], str) else m["content"]} for m in msgs]

    return PreferenceRecord(id=str(i), prompt=norm(row["prompt"]), chosen=norm(row["chosen"]),
                            rejected=norm(row["rejected"]), images=[ImageRef(pil=im) for im in row.get("images", [])])


def perturbed(model, seed=1):
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def trl_trainer(family, policy, ref, processor, rows, tmp_path):
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=2, max_length=None,
                     beta=BETA, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
                     save_strategy="no", logging_strategy="no", dataloader_num_workers=0)
    return DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(ref), args=args,
                      train_dataset=Dataset.from_list(copy.deepcopy(rows)), processing_class=copy.deepcopy(processor))


def trl_sequence_logps(model, batch):
    """TRL's own per-token log-probs (fused LM head), summed per row."""
    labels = batch.model_inputs["input_ids"].masked_fill(batch.completion_mask == 0, -100)
    out = model(**batch.model_inputs, use_cache=False, labels=labels, fused_lm_head=True)
    return out.log_probs.sum(dim=1).chunk(2)


@pytest.mark.parametrize("family", FAMILIES)
def test_logps_and_loss_match_trl(family, tmp_path):
    ref, processor = build_tiny(family)
    policy = perturbed(build_tiny(family)[0])
    rows = examples(family)
    ad = adapter_for(policy)
    tok = getattr(processor, "tokenizer", processor)
    pairs = [encode_pair(as_record(i, r), processor, ad, max_length=None) for i, r in enumerate(rows)]
    batch = collate(pairs, pad_token_id=tok.pad_token_id, family=ad)
    with torch.no_grad():
        ours, ours_ref = batch_logps(policy, batch), batch_logps(ref, batch)
    loss, metrics = compute_loss(ours, ours_ref, loss_type="sigmoid", beta=BETA)
    trainer = trl_trainer(family, policy, ref, processor, rows, tmp_path)

    # (1) TRL's collator builds the same batch from the same rows
    if family == "causal_lm":
        trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    else:
        trl_batch = trainer.data_collator(copy.deepcopy(rows))
    if family == "llava":
        for row in range(4):  # ours = TRL's tokens + EOS after each answer
            trl_ids = trl_batch["input_ids"][row][trl_batch["attention_mask"][row].bool()].tolist()
            our_ids = batch.model_inputs["input_ids"][row][batch.model_inputs["attention_mask"][row].bool()].tolist()
            assert our_ids == trl_ids + [tok.eos_token_id]
        assert torch.equal(trl_batch["pixel_values"], batch.model_inputs["pixel_values"])
    else:
        assert set(trl_batch) == set(batch.model_inputs) | {"completion_mask"}
        for key, value in batch.model_inputs.items():
            assert torch.equal(trl_batch[key], value), key
        assert torch.equal(trl_batch["completion_mask"], batch.completion_mask)

    # (2) per-pair log-probs through TRL's forward
    with torch.no_grad():
        trl_c, trl_r = trl_sequence_logps(trainer.model, batch)
        ref_c, ref_r = trl_sequence_logps(trainer.ref_model, batch)
    torch.testing.assert_close(ours.chosen_logps, trl_c, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.rejected_logps, trl_r, atol=TOL, rtol=0)
    torch.testing.assert_close(ours_ref.chosen_logps, ref_c, atol=TOL, rtol=0)
    torch.testing.assert_close(ours_ref.rejected_logps, ref_r, atol=TOL, rtol=0)
    assert not torch.allclose(ours.chosen_logps, ours_ref.chosen_logps, atol=1e-3)  # the loss is not trivial

    # (3) TRL's loss and metrics on the identical batch
    inputs = {**batch.model_inputs, "completion_mask": batch.completion_mask}
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    trl_metrics = trainer._metrics["train" if trainer.model.training else "eval"]
    assert abs(trl_loss.item() - loss.item()) < TOL
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert abs(trl_metrics[name][-1] - metrics[name].item()) < TOL, name
    assert trl_metrics["rewards/accuracies"][-1] == metrics["rewards/accuracies"].item()

    trainer.ld_alpha = 0.5  # length-desensitized: TRL re-derives the shared lengths from the mask
    with torch.no_grad():
        trl_ld = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    ld_loss, _ = compute_loss(ours, ours_ref, loss_type="sigmoid", beta=BETA, ld_alpha=0.5)
    assert abs(trl_ld.item() - ld_loss.item()) < TOL and abs(ld_loss.item() - loss.item()) > 1e-6
