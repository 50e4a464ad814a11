"""`vlmdpo sample` with a local model: prompts per second at several --batch-size values, side by side in one
run on the same prompts (the nano model by default: the quickstart's tuned model, or the base if none).

    .venv/bin/python benchmarks/sample_batch.py --model runs/quickstart/model \
        --data runs/quickstart/data/pool.jsonl --prompts 32 --batch-sizes 1,4,8 \
        --out benchmarks/results/sample_batch_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/quickstart/model")
    ap.add_argument("--data", default="runs/quickstart/data/pool.jsonl")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("-n", type=int, default=4, help="answers per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--out", default=None, help="write the results here (JSON)")
    args = ap.parse_args()

    import torch

    from vlmdpo.engine.sample import SampleOptions, model_answerer, sample_file
    from vlmdpo.inference import load_for_inference

    im = load_for_inference(args.model, dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines()[:args.prompts]]
        base = Path(args.data).resolve().parent
        for row in rows:  # absolute image paths, so the copy in tmp reads the same pictures
            row["images"] = [str(base / i) for i in row.get("images", [])]
        prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
        results = []
        for bs in [int(x) for x in args.batch_sizes.split(",")]:
            options = SampleOptions(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0,
                                    batch_size=bs)
            out = Path(tmp) / f"b{bs}.jsonl"
            t = time.perf_counter()
            sample_file(prompts, out, model_answerer(im, options), options, progress=False)
            seconds = time.perf_counter() - t
            results.append({"batch_size": bs, "seconds": round(seconds, 2),
                            "prompts_per_s": round(len(rows) / seconds, 3)})
            print(f"--batch-size {bs}: {len(rows)} prompts x {args.n} answers in {seconds:.1f} s "
                  f"= {len(rows) / seconds:.2f} prompts/s", flush=True)
    one = results[0]["prompts_per_s"]
    for r in results:
        r["speedup_vs_first"] = round(r["prompts_per_s"] / one, 2)
    record = {"date": time.strftime("%Y-%m-%d"), "model": args.model, "prompts": len(rows),
              "answers_per_prompt": args.n, "max_new_tokens": args.max_new_tokens,
              "torch_threads": torch.get_num_threads(),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
