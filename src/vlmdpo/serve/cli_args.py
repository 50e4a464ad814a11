"""`vlmdpo serve`'s arguments: cli.py registers `add_parser`; `run` starts the server (imported only then)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible endpoint (chat completions with images) for your models",
                       description="Serves base models, LoRA adapter folders (their base found as `chat` finds it), "
                       "merged exports, tiny:/builtin: models and checkpoint-N folders at /v1/chat/completions. "
                       "Adapters over the same base share one copy of it.")
    p.add_argument("--model", action="append", required=True, metavar="DIR_OR_NAME | NAME=DIR",
                   help="a model to serve (repeatable); NAME= sets the name clients use (default: the value)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--engine", choices=("transformers", "vllm"), default="transformers",
                   help="transformers generate (default) or vLLM (GPU, vllm installed)")
    p.add_argument("--api-key", default=os.environ.get("VLMDPO_API_KEY"), metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (default: $VLMDPO_API_KEY)")
    p.add_argument("--max-concurrency", type=int, default=8, metavar="N",
                   help="requests generated together in one batch (default 8)")
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests waiting beyond those; more are refused with 429 (default 64)")
    p.add_argument("--max-tokens", type=int, default=256, metavar="N",
                   help="answer length when a request does not say (default 256)")
    p.add_argument("--max-images", type=int, default=8, metavar="N", help="images per request (default 8)")
    p.add_argument("--max-body-mb", type=float, default=20.0, metavar="MB", help="request size limit (default 20)")
    p.add_argument("--image-max-pixels", type=int, metavar="N", help="resize larger images down to N pixels")
    p.add_argument("--allow-remote-images", action="store_true", help="let image_url be an http(s) URL")
    p.add_argument("--image-root", metavar="DIR", help="let image_url be a local path inside DIR")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (auto: as saved on GPU, float32 on CPU)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlmdpo.serve.app import ServerOptions
    from vlmdpo.serve.media import ImagePolicy
    from vlmdpo.serve.registry import ServeError
    from vlmdpo.serve.server import EngineOptions, serve

    for flag in ("max_concurrency", "max_tokens", "max_images"):
        if getattr(args, flag) < 1:
            raise ServeError(f"--{flag.replace('_', '-')} must be at least 1", "pass a positive number")
    if args.max_queue < 0 or args.max_body_mb <= 0:
        raise ServeError("--max-queue must be >= 0 and --max-body-mb > 0", "pass a valid number")
    root = Path(args.image_root).expanduser() if args.image_root else None
    if root is not None and not root.is_dir():
        raise ServeError(f"--image-root {args.image_root}: no such folder", "pass an existing folder")
    policy = ImagePolicy(allow_remote=args.allow_remote_images, image_root=root, max_pixels=args.image_max_pixels)
    options = ServerOptions(api_key=args.api_key, max_body_bytes=int(args.max_body_mb * 2**20),
                            default_max_tokens=args.max_tokens, images=policy)
    engine = EngineOptions(engine=args.engine, max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                           max_images=args.max_images, device=args.device, dtype=args.dtype)
    serve(args.model, host=args.host, port=args.port, engine=engine, options=options)
    return 0
