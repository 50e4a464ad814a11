"""Helpers for iterate tests: a tiny VLM that answers colour questions with "red" or "blue" (so a truth judge
on demo rows tells its sampled answers apart), and demo-data rows whose truth is one of those colours."""
from __future__ import annotations

import json
from pathlib import Path

import torch

COLOURS = ("red", "blue")


def red_or_blue_model(folder: Path) -> Path:
    """tiny:idefics3 with one residual dimension made large and constant, read by the head as the
    logits of " red" and " blue" only: samples name those two, in any mix. Saved as a full model folder."""
    from vlmdpo.model.tiny import build_tiny

    model, processor = build_tiny("idefics3")
    ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in ("Ġred", "Ġblue")]
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] += 30.0
        head = model.get_output_embeddings().weight
        head[:, 0] = 0.0
        head[ids, 0] = 1.0
        model.model.text_model.norm.weight[0] = 1.0
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def colour_rows(folder: Path, n_prompts: int = 6, n_held_out: int = 4) -> tuple[Path, Path]:
    """(prompts.jsonl, held_out.jsonl): demo colour questions whose truth is red or blue."""
    from vlmdpo.demo_data import make_demo_data

    demo = make_demo_data(folder / "demo", n_train=4 * n_prompts, n_val=0, n_test=4 * n_held_out, kinds=("color",),
                          progress=False)
    out = []
    for split, n in (("train", n_prompts), ("test", n_held_out)):
        rows = [json.loads(line) for line in demo.files[split].read_text().splitlines()]
        keep = [r for r in rows if r["truth"] in COLOURS][:n]
        assert len(keep) == n, f"demo data has only {len(keep)} red/blue {split} rows"
        for r in keep:  # absolute image paths: the rows move out of the demo folder
            for key in ("images", "rejected_images"):
                if key in r:
                    r[key] = [str(demo.root / p) for p in r[key]]
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        out.append(path)
    return out[0], out[1]
