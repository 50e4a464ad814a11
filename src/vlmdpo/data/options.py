"""The reading options every `vlmdpo data` command takes: CLI flags -> load_preferences keywords."""
from __future__ import annotations

import argparse


def add_load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", help="input format (default: auto-detect per file)")
    p.add_argument("--image-root", metavar="DIR", help="resolve relative image paths against DIR")
    p.add_argument("--image-path-map", metavar="OLD=NEW", action="append", type=path_mapping, default=[],
                   help="read image/video paths under OLD from NEW instead (rows written on another machine); "
                        "repeatable")
    p.add_argument("--allow-remote-images", action="store_true", help="allow http(s) image URLs")


def load_kwargs(args: argparse.Namespace) -> dict:
    return {"format": args.format, "image_root": args.image_root, "allow_remote_images": args.allow_remote_images,
            "image_path_map": dict(args.image_path_map) or None}


def path_mapping(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old.strip() or not new.strip():
        raise argparse.ArgumentTypeError(f"expected OLD=NEW (two folder prefixes), got {text!r}; "
                                         "e.g. --image-path-map /data=/mnt/shared/data")
    return old.strip(), new.strip()
