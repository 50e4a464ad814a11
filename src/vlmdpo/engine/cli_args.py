"""`vlmdpo sample`, `judge`, `pairs` and `iterate` arguments: cli.py registers `add_parser`; each run imports its
engine then."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from vlmdpo.data.options import add_load_options

    p = sub.add_parser("sample", help="K answers per prompt from a model or an endpoint (candidates for judging)",
                       description="Reads prompts and images from any preference format vlmdpo reads (chosen / "
                       "rejected are ignored) and appends one row per prompt with its K answers to -o. Resumable: "
                       "prompts already in -o are skipped, and each prompt's answers are seeded by --seed and its id.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR_OR_NAME",
                     help="a model vlmdpo can load (folder, hub id, tiny:/builtin: name)")
    src.add_argument("--endpoint", metavar="URL", help="an OpenAI-compatible server (vlmdpo serve, vLLM) instead "
                     "of loading the model, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--served-model", metavar="NAME", help="with --endpoint: the model name to request "
                   "(default: the first one the server lists)")
    p.add_argument("--api-key", default=os.environ.get("VLMDPO_API_KEY"), metavar="KEY",
                   help="with --endpoint: bearer key (default $VLMDPO_API_KEY)")
    p.add_argument("--data", required=True, nargs="+", metavar="PROMPTS", help="prompt files (any preference format)")
    add_load_options(p)
    p.add_argument("-n", type=int, default=4, help="answers per prompt (default 4)")
    p.add_argument("--temperature", type=float, default=0.9, help="sampling temperature (default 0.9; 0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1.0: off)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="answer length limit (default 64)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="with --model: prompts per generate() call, each with its -n answers (default 8; lower it "
                   "if memory runs out). An endpoint is asked one prompt at a time")
    p.add_argument("-o", "--output", required=True, metavar="CANDIDATES.jsonl", help="rows appended here")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_sample)

    from vlmdpo.engine.judge import add_judge_parser  # argparse only; judging loads its models when it runs

    add_judge_parser(sub)
    q = sub.add_parser("pairs", help="scored candidates -> preference pairs (TRL format) for training",
                       description="Turns the rows of `vlmdpo judge` (candidates + scores) into chosen / rejected "
                       "pairs; ties and margins <= --min-margin are dropped and counted.")
    q.add_argument("scored", metavar="SCORED.jsonl")
    q.add_argument("-o", "--output", required=True, metavar="PAIRS.jsonl")
    q.add_argument("--strategy", choices=("best-worst", "all"), default="best-worst",
                   help="best-worst: one pair per prompt (default); all: every pair above the margin")
    q.add_argument("--min-margin", type=float, default=0.0, metavar="X",
                   help="keep pairs whose scores differ by more than X (default 0)")
    q.set_defaults(func=run_pairs)

    it = sub.add_parser("iterate", help="on-policy rounds: sample -> judge -> pairs -> train -> held-out eval",
                        description="Each round samples answers from the current policy, judges them, makes pairs "
                        "and trains a run in <output_dir>/round-<r>/ from the current policy; round 0 evaluates the "
                        "starting model. CONFIG is a training config plus the iterate keys (docs/CONFIG.md, "
                        "\"Iterate\"). Rerun the same command to resume: finished rounds are skipped.")
    _iterate_options(it)
    it.add_argument("config", metavar="CONFIG", help="YAML training config with the iterate keys")
    it.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE ...",
                    help="override config keys (the options above may come before or among them)")
    it.set_defaults(func=run_iterate)


def run_sample(args: argparse.Namespace) -> str:
    from vlmdpo.data.options import load_kwargs
    from vlmdpo.engine.sample import SampleOptions, endpoint_answerer, model_answerer, sample_file

    options = SampleOptions(n=args.n, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed,
                            batch_size=args.batch_size)
    options.check()
    if args.endpoint:
        from vlmdpo.engine.endpoint import Endpoint

        answer = endpoint_answerer(Endpoint(args.endpoint, args.served_model, api_key=args.api_key), options)
    else:
        from vlmdpo.inference import load_for_inference

        answer = model_answerer(load_for_inference(args.model, dtype=args.dtype, device=args.device), options)
    return sample_file(args.data, Path(args.output), answer, options, load_kwargs=load_kwargs(args),
                       progress=not args.no_progress)


def run_pairs(args: argparse.Namespace) -> str:
    from vlmdpo.engine.pairs import make_pairs

    counts = make_pairs(Path(args.scored), Path(args.output), strategy=args.strategy, min_margin=args.min_margin)
    return f"{counts.summary()} -> {args.output}"


def _iterate_options(p: argparse.ArgumentParser, defaults: argparse.Namespace | None = None) -> None:
    p.add_argument("--rounds", type=int, default=getattr(defaults, "rounds", 2), metavar="R",
                   help="rounds of sample-judge-pairs-train after round 0 (default 2)")
    p.add_argument("--device", default=getattr(defaults, "device", None),
                   help="cpu, cuda, ... for sampling, judging and eval (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", default=getattr(defaults, "no_progress", False),
                   help="no progress bars")


def run_iterate(args: argparse.Namespace) -> str:
    from vlmdpo.engine.iterate import iterate

    # options written after CONFIG arrive among the overrides: read them out here
    late = argparse.ArgumentParser(prog="vlmdpo iterate", add_help=False)
    _iterate_options(late, args)
    options, overrides = late.parse_known_args(args.overrides)
    args = argparse.Namespace(**{**vars(args), **vars(options), "overrides": overrides})

    result = iterate(args.config, args.rounds, overrides=args.overrides, progress=not args.no_progress,
                     device=args.device)
    return (f"{result.table()}\n\nrounds.md, rounds.png and rounds.jsonl in {result.output_dir}; the last round's "
            f"model: {result.rounds[-1]['policy']}")
