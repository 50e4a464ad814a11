"""Command-line flags: HF-style spellings (`--max_new_tokens`, `train --config FILE --key value`) and the
generation options that chat and compare share."""
from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose options also take their underscore spelling (its subparsers inherit it)."""

    def parse_known_args(self, args=None, namespace=None):
        import sys

        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([self._hyphenated(a) for a in args], namespace)

    def _hyphenated(self, arg: str) -> str:
        if not arg.startswith("--") or "_" not in arg.split("=", 1)[0]:
            return arg
        name, eq, value = arg.partition("=")
        dashed = "--" + name[2:].replace("_", "-")
        return dashed + eq + value if dashed in self._option_string_actions else arg


def train_argv(argv: list[str]) -> list[str]:
    """`train` arguments with `--config FILE` as the positional and each other `--key value` as `key=value`.

    A `--key` with no value after it (`--bf16`) means `key=true`, as in HF TrainingArguments."""
    out: list[str] = []
    config: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help") or not arg.startswith("--"):
            out.append(arg)
        elif arg == "--":
            out += argv[i + 1:]
            break
        else:
            name, eq, value = arg[2:].partition("=")
            if not eq:
                has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
                value = argv[i + 1] if has_value else "true"
                i += has_value
            if name == "config":
                config.append(value)
            else:
                out.append(f"{name.replace('-', '_')}={value}")
        i += 1
    return config + out


def rewrite_train(argv: list[str]) -> list[str]:
    """The whole command line with the `train` part rewritten (global options such as --debug come first)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return argv[:i + 1] + train_argv(argv[i + 1:]) if arg == "train" else argv
    return argv


def add_generation_options(p: argparse.ArgumentParser, max_new_tokens: int = 256) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N",
                   help=f"answer length limit (default {max_new_tokens})")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold when sampling (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="image for the prompt (repeatable)")
    p.add_argument("--video", action="append", default=[], metavar="PATH",
                   help="video for the prompt (repeatable; Qwen2-VL / 2.5-VL / 3-VL)")
    p.add_argument("--allow-remote-images", action="store_true", help="let --image be an http(s) URL")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (auto: as saved on GPU, float32 on CPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def generation_settings(args: argparse.Namespace):
    """The GenerationSettings the options of `add_generation_options` ask for (a ValueError when out of range)."""
    from vlmdpo.inference import GenerationSettings

    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise ValueError("--temperature must be >= 0 and --top-p in (0, 1]")
    return GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed)
