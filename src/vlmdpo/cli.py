"""Command-line entry point: argument parsing only; each command calls one library function.

Adding a command: write `_add_<name>(subparsers)` that builds its parser and sets
`func=_run_<name>`, write `_run_<name>(args) -> int` that calls ONE library function (import
it inside, so `vlmdpo --help` and `vlmdpo data ...` never pay for torch), and list
`_add_<name>` in `COMMANDS`. Exit codes: 0 ok, 1 invalid data, 2 bad usage/input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

from vlmdpo.data.options import add_load_options, load_kwargs
from vlmdpo.flags import Parser, add_generation_options, generation_settings, rewrite_train
from vlmdpo.runs import add_parser as _add_runs  # argparse only
from vlmdpo.engine.cli_args import add_parser as _add_engine  # argparse only: sample, judge, pairs
from vlmdpo.serve.cli_args import add_parser as _add_serve  # argparse only; its run() loads the server
from vlmdpo.studio.cli_args import add_parser as _add_studio  # argparse only; its run() loads the app

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")


class UsageError(Exception):
    """Bad command-line input (e.g. a path that does not exist): exit 2, no traceback."""


# ------------------------------------------------------------------------------------------- data
def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="check, describe, show and convert preference data")
    dsub = data.add_subparsers(dest="data_command", metavar="{check,stats,show,convert}")
    dsub.required = True

    p = dsub.add_parser("check", help="report every invalid row (file:row field message -> fix)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="data file(s), folder(s) or hub dataset name(s)")
    add_load_options(p)
    p.add_argument("--decode-images", action="store_true",
                   help="decode every image fully (catches truncated files; slower than the default header check)")
    p.add_argument("--max-examples", type=int, default=5, metavar="N",
                   help="examples listed per kind of problem (0: all; default 5)")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="also check the rows against this model's family "
                   "(e.g. videos on a model that takes none)")
    p.set_defaults(func=_run_data_check)

    p = dsub.add_parser("stats", help="rows, images per row, image sizes, text lengths, duplicates")
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_load_options(p)
    p.add_argument("--model", metavar="NAME_OR_PATH", help="count tokens with this model's tokenizer (a local folder)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_run_data_stats)

    p = dsub.add_parser("show", help="one row as the model will see it (text, or --html page)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--row", required=True, metavar="N",
                   help="row number as `data check` prints it (1-based), or FILE:N")
    p.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page")
    add_load_options(p)
    p.set_defaults(func=_run_data_show)

    p = dsub.add_parser("convert", help="write the data as TRL, ms-swift or LLaMA-Factory JSONL (+ images/)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .jsonl file (or folder)")
    p.add_argument("--to", required=True, choices=("trl", "swift", "llamafactory"))
    add_load_options(p)
    p.set_defaults(func=_run_data_convert)


def _source(paths: list[str]):
    for path in paths:
        # A hub dataset name is "owner/name"; a path with a data suffix, more slashes, or a first
        # folder that exists here is a local path that is not there (asking the hub would only stall).
        looks_local = (path.endswith(_LOCAL_SUFFIXES) or path.startswith((".", "/", "~")) or path.count("/") != 1
                       or os.path.isdir(path.split("/", 1)[0]))
        if looks_local and not os.path.exists(os.path.expanduser(path)):
            raise UsageError(f"no such file or directory: {path} (a hub dataset is named owner/name)")
    return paths[0] if len(paths) == 1 else list(paths)


def _progress() -> bool:
    return sys.stderr.isatty()


def _run_data_check(args: argparse.Namespace) -> int:
    from vlmdpo.data.stats import check_data, format_check

    from vlmdpo.inference.names import video_refusal

    report = check_data(_source(args.paths), check_images="decode" if args.decode_images else "header",
                        progress=_progress(), video_refusal=video_refusal(args.model), **load_kwargs(args))
    print(format_check(report, per_kind=args.max_examples))
    return EXIT_OK if report.ok else EXIT_INVALID


def _run_data_stats(args: argparse.Namespace) -> int:
    from vlmdpo.data.stats import data_stats, format_stats

    stats = data_stats(_source(args.paths), model=args.model, progress=_progress(), **load_kwargs(args))
    print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else format_stats(stats))
    return EXIT_OK


def _run_data_show(args: argparse.Namespace) -> int:
    from vlmdpo.data.show import show_record

    print(show_record(_source(args.paths), args.row, html_path=args.html, **load_kwargs(args)))
    return EXIT_OK


def _run_data_convert(args: argparse.Namespace) -> str:
    from vlmdpo.data.convert import convert_source

    out = convert_source(_source(args.paths), args.output, to=args.to, progress=_progress(), **load_kwargs(args))
    return f"wrote {out}"


# ------------------------------------------------------------------------ chat / compare / export
def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="talk to a model: base, LoRA adapter folder or merged export",
                       description="One-shot with --prompt (or a prompt piped on stdin); otherwise an interactive "
                       "session: /image PATH attaches an image to your next message, /reset, /quit.")
    p.add_argument("--model", required=True, metavar="DIR_OR_NAME",
                   help="training output_dir, adapter or model folder, tiny:<family>, builtin:nano-smolvlm")
    p.add_argument("--base", metavar="DIR_OR_NAME", help="base model of an adapter that does not record it")
    p.add_argument("--prompt", metavar="TEXT", help="ask once and exit")
    p.add_argument("--system", metavar="TEXT", help="system message")
    add_generation_options(p)
    p.set_defaults(func=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    from vlmdpo.chat import run_chat

    run_chat(args.model, images=args.image, videos=args.video, prompt=args.prompt, base=args.base, system=args.system,
             settings=generation_settings(args), allow_remote_images=args.allow_remote_images, dtype=args.dtype,
             device=args.device)
    return EXIT_OK


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="base vs tuned answers side by side (HTML page + table)")
    p.add_argument("--base", metavar="M1", help="the reference model (default: the tuned model's base)")
    p.add_argument("--tuned", required=True, metavar="M2", help="the tuned model (adapter folder, export ...)")
    p.add_argument("--data", metavar="FILE", help="preference data: prompts, images, chosen/rejected")
    p.add_argument("--prompt", metavar="TEXT", help="one prompt instead of --data")
    p.add_argument("-o", "--output", default="compare.html", metavar="OUT.html", help="HTML page (default compare.html)")
    p.add_argument("--limit", type=int, default=8, metavar="N", help="rows of --data to compare (default 8)")
    p.add_argument("--beta", type=float, help="implicit reward scale (default: the tuned run's beta, else 0.1)")
    p.add_argument("--format", default="auto", help="data format (default auto)")
    p.add_argument("--image-root", metavar="DIR", help="resolve relative image paths against DIR")
    add_generation_options(p, max_new_tokens=128)
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from vlmdpo.compare import run_compare

    if (args.data is None) == (args.prompt is None):
        raise UsageError("pass either --data FILE or --prompt TEXT (with --image PATH)")
    if args.data is not None and (args.image or args.video):
        raise UsageError("--image / --video go with --prompt; --data rows bring their own images and videos")
    run_compare(args.base, args.tuned, data=args.data, image=args.image, video=args.video, prompt=args.prompt,
                out=args.output, limit=args.limit, settings=generation_settings(args), beta=args.beta,
                allow_remote_images=args.allow_remote_images, format=args.format, image_root=args.image_root,
                dtype=args.dtype, device=args.device)
    return EXIT_OK


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="merge LoRA into the base; save a plain Hugging Face model folder")
    p.add_argument("--model", required=True, metavar="DIR", help="training output_dir or adapter folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="folder to write (must be new or empty)")
    p.add_argument("--base", metavar="DIR_OR_NAME", help="base model of an adapter that does not record it")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="saved weights dtype (auto: the training dtype, else the base's)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--push-to-hub", metavar="OWNER/NAME", help="then upload OUT with its model card to this hub repo")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int | str:
    from vlmdpo.export import export_model

    result = export_model(args.model, args.output, base=args.base, dtype=args.dtype, force=args.force)
    what = "merged LoRA into the base" if result.merged else "saved the full model"
    aside = f"; what was there before is now in {result.moved_aside}" if result.moved_aside else ""
    print(f"{what}; wrote {result.path} ({result.dtype}){aside}")
    if not args.push_to_hub:
        return EXIT_OK
    from vlmdpo.hub import push_folder

    return f"uploaded to {push_folder(result.path, args.push_to_hub)}"


# ------------------------------------------------------------------------ demo-data / eval (quickstart)
def _add_demo_data(sub: argparse._SubParsersAction) -> None:
    from vlmdpo.demo_data import QUICKSTART_IMAGE_CONTRAST

    p = sub.add_parser("demo-data", help="write the synthetic shapes dataset (train/val/test/pool, TRL format, PNGs)",
                       description="Seeded synthetic preference pairs: shapes with colours, counts and positions; "
                       "each question has a correct chosen answer and a hallucinated rejected one.")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (train/val/test.jsonl, images/)")
    p.add_argument("--train", type=int, default=800, metavar="N", help="training pairs (default 800)")
    p.add_argument("--val", type=int, default=64, metavar="N", help="validation pairs (default 64)")
    p.add_argument("--test", type=int, default=96, metavar="N", help="test pairs (default 96)")
    p.add_argument("--pool", type=int, default=256, metavar="N",
                   help="prompts for on-policy sampling: training phrasings and styles and more, never the test "
                   "split's (pool.jsonl; default 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="image side in pixels (default: varied, 80-128, with a test-only size)")
    p.add_argument("--train-image-contrast", type=float, default=QUICKSTART_IMAGE_CONTRAST, metavar="F",
                   help="share of training pairs that are image-contrast pairs: same answer, counterfactual "
                   f"rejected image (default {QUICKSTART_IMAGE_CONTRAST}, the quickstart's)")
    p.add_argument("--layout", choices=("canonical", "random"), default="canonical",
                   help="canonical: fixed places per kind of question (learnable on a CPU); random: anywhere "
                   "on the grid (harder)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset made with other settings")
    p.set_defaults(func=_run_demo_data)


def _run_demo_data(args: argparse.Namespace) -> int:
    from vlmdpo.demo_data import make_demo_data

    ds = make_demo_data(args.output, n_train=args.train, n_val=args.val, n_test=args.test, n_pool=args.pool,
                        seed=args.seed, image_size=args.image_size, layout=args.layout, overwrite=args.overwrite,
                        train_image_contrast=args.train_image_contrast, progress=_progress())
    verb = "reused" if ds.reused else "wrote"
    print(f"{verb} {', '.join(f'{s} {n}' for s, n in ds.counts.items())} pairs in {ds.root} "
          f"({', '.join(str(f) for f in ds.files.values())})")
    return EXIT_OK


def _overrides(p: argparse.ArgumentParser, help: str) -> None:
    """The `key=value ...` positional of the commands that read a training config (values are YAML)."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=help)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="base vs tuned on held-out pairs: reward accuracy, grounded answers, report.html",
                       description="Scores the base model and the tuned model (the config's output_dir, or --model) "
                       "on held-out pairs (test_dataset, or --dataset) and writes eval.json, answers.jsonl and "
                       "report.html with plots.")
    p.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="the training config (default: the one saved "
                   "beside --model)")
    _overrides(p, "config overrides, as for train")
    p.add_argument("--model", metavar="DIR", help="tuned model folder (default: the config's output_dir)")
    p.add_argument("--base", metavar="DIR_OR_NAME", help="base model (default: the config's model_name_or_path)")
    p.add_argument("--dataset", metavar="PATH", help="held-out pairs (default: test_dataset, else eval_dataset)")
    p.add_argument("-o", "--output", metavar="DIR", help="where to write the report (default: <model>/eval)")
    p.add_argument("--no-generate", action="store_true", help="skip generated answers (log-prob metrics only)")
    p.add_argument("--max-new-tokens", type=int, default=24, metavar="N", help="answer length limit (default 24)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="pairs per forward (default 16)")
    p.add_argument("--examples", type=int, default=12, metavar="N", help="test images in the report grid (default 12)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from vlmdpo.eval.run import run_eval

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        config, overrides = None, [config, *overrides]  # `vlmdpo eval --model DIR beta=0.2`
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise UsageError("--max-new-tokens and --batch-size must be at least 1")
    result = run_eval(config, overrides=overrides, model=args.model, base=args.base, dataset=args.dataset,
                      output=args.output, generate=not args.no_generate, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size, n_examples=args.examples, device=args.device,
                      progress=_progress())
    return _print_report(result.summary, result.report_path)


def _print_report(summary: dict, report_path, *lines: str) -> int:
    """An evaluation's summary table, then `lines`, then where its report is."""
    from vlmdpo.eval.run import format_summary

    print(format_summary(summary))
    for line in lines:
        print(line)
    print(f"report: {report_path}")
    return EXIT_OK


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="offline demo: synthetic data, nano VLM, DPO, base vs tuned report (CPU)",
                       description="Writes the demo data, builds builtin:nano-smolvlm (once), trains it with DPO "
                       "(src/vlmdpo/recipes/quickstart.yaml) and evaluates base vs tuned on held-out pairs; "
                       "about 13 minutes on 2 CPU cores. Needs no model hub.")
    p.add_argument("-o", "--output", default="runs/quickstart", metavar="DIR",
                   help="folder for data/, model/ and quickstart.json (default runs/quickstart)")
    _overrides(p, "override a key of the recipe (max_steps=50)")
    p.set_defaults(func=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> int:
    from vlmdpo.quickstart import format_timings, run_quickstart

    result = run_quickstart(args.output, overrides=list(args.overrides), progress=_progress())
    return _print_report(result.summary, result.report_path, f"time: {format_timings(result.seconds)}")


# ------------------------------------------------------------------------------------------ train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="DPO-family training from a YAML config (key=value overrides)",
                       description="Train with the settings in CONFIG (or --config CONFIG); each key=value "
                       "(or --key value) overrides one key (values are YAML: beta=0.2, loss_type=[sigmoid,sft]). "
                       "Multi-GPU: "
                       "accelerate launch -m vlmdpo train CONFIG.")
    p.add_argument("config", metavar="CONFIG", help="YAML config file (see examples/)")
    _overrides(p, "override a config key")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> str:
    from vlmdpo.api import train
    from vlmdpo.config import parse_overrides

    result = train(args.config, **parse_overrides(args.overrides))
    return f"done: {result.global_step} steps; model, metrics.jsonl and training_curves.png in {result.output_dir}"


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_quickstart, _add_data, _add_train, _add_eval,
                                                                 _add_chat, _add_compare, _add_export, _add_demo_data,
                                                                 _add_serve, _add_runs, _add_engine, _add_studio]


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from vlmdpo import __version__

    parser = Parser(prog="vlmdpo", description="Align vision-language models with human "
                    "preferences (DPO and relatives).")
    parser.add_argument("--version", action="version", version=f"vlmdpo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(rewrite_train(list(sys.argv[1:] if argv is None else argv)))
    try:
        done = args.func(args)
        if isinstance(done, str):  # a command's closing line
            print(done)
            return EXIT_OK
        return int(done or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `vlmdpo data stats x --json | head`: the reader left, nothing to report
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK
    except Exception as e:  # every user-facing failure ends here as one clear message
        if args.debug:
            raise
        return _report(e)


def _report(e: Exception) -> int:
    from vlmdpo.data.validate import DataError
    from vlmdpo.train.step import TrainingError

    if isinstance(e, DataError):
        print(str(e), file=sys.stderr)
        # row 0 means the source as a whole (could not be opened): bad input, not bad rows
        file_level = bool(e.errors) and all(err.row == 0 for err in e.errors)
        return EXIT_USAGE if file_level else EXIT_INVALID
    if isinstance(e, TrainingError):  # the run stopped (NaN loss, or a signal: 130/143); the message says what next
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", EXIT_INVALID)
    if isinstance(e, (UsageError, ValueError, OSError)):
        message = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in message:
            message = f"{message}: {e.filename}"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"internal error: {type(e).__name__}: {e} (run `vlmdpo --debug ...` for the traceback, and please "
          "report it)", file=sys.stderr)
    return EXIT_INTERNAL
