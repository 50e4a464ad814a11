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
    _add_load_options(p)
    p.add_argument("--decode-images", action="store_true",
                   help="decode every image fully (catches truncated files; slower than the default header check)")
    p.add_argument("--max-examples", type=int, default=5, metavar="N",
                   help="examples listed per kind of problem (0: all; default 5)")
    p.set_defaults(func=_run_data_check)

    p = dsub.add_parser("stats", help="rows, images per row, image sizes, text lengths, duplicates")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _add_load_options(p)
    p.add_argument("--model", metavar="NAME_OR_PATH", help="count tokens with this model's tokenizer (a local folder)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_run_data_stats)

    p = dsub.add_parser("show", help="one row as the model will see it (text, or --html page)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--row", required=True, metavar="N",
                   help="row number as `data check` prints it (1-based), or FILE:N")
    p.add_argument("--html", metavar="OUT.html", help="also write a self-contained HTML page")
    _add_load_options(p)
    p.set_defaults(func=_run_data_show)

    p = dsub.add_parser("convert", help="write the data as TRL, ms-swift or LLaMA-Factory JSONL (+ images/)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .jsonl file (or folder)")
    p.add_argument("--to", required=True, choices=("trl", "swift", "llamafactory"))
    _add_load_options(p)
    p.set_defaults(func=_run_data_convert)


def _add_load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", help="input format (default: auto-detect per file)")
    p.add_argument("--image-root", metavar="DIR", help="resolve relative image paths against DIR")
    p.add_argument("--allow-remote-images", action="store_true", help="allow http(s) image URLs")


def _load_kwargs(args: argparse.Namespace) -> dict:
    return {"format": args.format, "image_root": args.image_root, "allow_remote_images": args.allow_remote_images}


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

    report = check_data(_source(args.paths), check_images="decode" if args.decode_images else "header",
                        progress=_progress(), **_load_kwargs(args))
    print(format_check(report, per_kind=args.max_examples))
    return EXIT_OK if report.ok else EXIT_INVALID


def _run_data_stats(args: argparse.Namespace) -> int:
    from vlmdpo.data.stats import data_stats, format_stats

    stats = data_stats(_source(args.paths), model=args.model, progress=_progress(), **_load_kwargs(args))
    print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else format_stats(stats))
    return EXIT_OK


def _run_data_show(args: argparse.Namespace) -> int:
    from vlmdpo.data.show import show_record

    print(show_record(_source(args.paths), args.row, html_path=args.html, **_load_kwargs(args)))
    return EXIT_OK


def _run_data_convert(args: argparse.Namespace) -> int:
    from vlmdpo.data.convert import convert_source

    out = convert_source(_source(args.paths), args.output, to=args.to, progress=_progress(), **_load_kwargs(args))
    print(f"wrote {out}")
    return EXIT_OK


# ------------------------------------------------------------------------------- other commands
# train / eval / demo-data / chat / compare / export register here, one `_add_<name>` each.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_data]


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from vlmdpo import __version__

    parser = argparse.ArgumentParser(prog="vlmdpo", description="Align vision-language models with human "
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
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
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

    if isinstance(e, DataError):
        print(str(e), file=sys.stderr)
        # row 0 means the source as a whole (could not be opened): bad input, not bad rows
        file_level = bool(e.errors) and all(err.row == 0 for err in e.errors)
        return EXIT_USAGE if file_level else EXIT_INVALID
    if isinstance(e, (UsageError, ValueError, OSError)):
        message = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename and str(e.filename) not in message:
            message = f"{message}: {e.filename}"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"internal error: {type(e).__name__}: {e} (run `vlmdpo --debug ...` for the traceback, and please "
          "report it)", file=sys.stderr)
    return EXIT_INTERNAL
