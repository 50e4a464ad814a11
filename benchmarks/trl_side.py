"""One measured run of TRL's DPOTrainer (TRL 1.x API), for vs_trl.py.

TRL is used as its docs show for vision data: a datasets.Dataset with an `images` column and
conversational prompt/chosen/rejected, the processor as processing_class, `peft_config` for
LoRA (a PEFT `all-linear` LoRA, which also covers the vision tower), an explicit frozen copy as
reference for full fine-tuning (TRL would otherwise re-load it from the hub name). Timing: wall
time between consecutive `on_step_end` callbacks (CUDA-synchronised) over the timed steps,
which includes TRL's on-the-fly image processing in its collator, as a user pays it.
"""
from __future__ import annotations

import copy
import tempfile
import time

from bench_common import device_info, peak_tflops, summarize
from bench_models import SPECS, setup_side


def image_patches(inputs: dict, config) -> int:
    """Patch tokens through the vision tower (Qwen: flat patches; Idefics3: real tiles x patches per tile)."""
    pv = inputs.get("pixel_values")
    if pv is None:
        return 0
    if pv.dim() == 2:
        return int(pv.shape[0])
    tiles = pv.reshape(-1, *pv.shape[-3:])
    real = int(((tiles != 0).flatten(1).any(1)).sum())
    side = config.vision_config.image_size // config.vision_config.patch_size
    return real * side * side


class CountingCollator:
    """Wraps TRL's collator: token counts of every batch (prompt once per pair, padding excluded)."""

    def __init__(self, inner, image_token_id: int, config):
        self.inner, self.image_token_id, self.config = inner, image_token_id, config
        self.batches: list[dict] = []

    def __call__(self, examples):
        out = self.inner(examples)
        ids, am, cm = out["input_ids"], out["attention_mask"], out["completion_mask"]
        b = ids.shape[0] // 2
        self.batches.append({
            "pairs": b, "prompt_tokens": int((am[:b] - cm[:b]).sum()), "chosen_tokens": int(cm[:b].sum()),
            "rejected_tokens": int(cm[b:].sum()), "image_tokens": int((ids[:b] == self.image_token_id).sum()),
            "processed_tokens": int(am.sum()), "padded_tokens": int(ids.numel()),
            # TRL feeds the image with both rows; count it once, as for vlmdpo (model FLOPs count both sequences)
            "image_patches": image_patches(out, self.config) // 2,
        })
        return out


def run(a, rows) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    clock, model, processor, split, fcfg = setup_side(a, torch)
    cuda = clock.cuda
    ref_model = None
    peft_config = None
    if a.mode == "full":
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    else:
        from peft import LoraConfig

        peft_config = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM", bias="none")
    n_steps = a.warmup + a.steps
    dataset = Dataset.from_list(rows[: a.batch * n_steps])
    cfg = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="vs_trl_"), per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1, max_steps=n_steps, learning_rate=a.lr, lr_scheduler_type="constant",
        warmup_steps=0, beta=a.beta, bf16=a.bf16 and cuda, gradient_checkpointing=a.grad_ckpt, max_length=None,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        seed=a.seed, use_cpu=not cuda,
    )
    ends: list[float] = []
    cpu: list[float] = []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            ends.append(clock.now())
            cpu.append(clock.cpu())

        def on_step_end(self, args, state, control, **kw):
            ends.append(clock.now())
            cpu.append(clock.cpu())
            if state.global_step == a.warmup:
                clock.reset_peak()

    trainer = DPOTrainer(model=model, ref_model=ref_model, args=cfg, train_dataset=dataset,
                         processing_class=processor, peft_config=peft_config, callbacks=[StepTimer()])
    counter = CountingCollator(trainer.data_collator, model.config.image_token_id, model.config)
    trainer.data_collator = counter
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    t0 = time.perf_counter()
    trainer.train()
    step_s = [ends[i + 1] - ends[i] for i in range(a.warmup, n_steps)]
    cpu_s = [cpu[i + 1] - cpu[i] for i in range(a.warmup, n_steps)]
    res = summarize(step_s, counter.batches[a.warmup:n_steps], clock, flops_cfg=fcfg,
                    peak=peak_tflops(device_info(torch), a.peak_tflops), cpu_s=cpu_s, full=a.mode == "full")
    logs = [h for h in trainer.state.log_history if "loss" in h]
    res["losses"] = [round(h["loss"], 5) for h in logs]
    res["train_total_s"] = round(time.perf_counter() - t0, 3)
    res["params"] = split | {"trainable": trainable}
    res["responses_present"] = all(b["chosen_tokens"] > 0 and b["rejected_tokens"] > 0 for b in counter.batches)
    return res


def image_size(a) -> int:
    return a.image_size or SPECS[a.model]["image_size"]
