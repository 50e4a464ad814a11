"""`vlmdpo studio`'s arguments: cli.py registers `add_parser`; `run` starts the server (imported only then)."""
from __future__ import annotations

import argparse
import os
import secrets


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studio", help="the whole workflow in a local web app (data, train, monitor, lab, label, deploy)",
                       description="Serves the studio on http://HOST:PORT and prints its URL. Training runs are "
                       "their own processes: they keep going when the browser or the studio closes.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other requires a token, made for you if not given)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--home", metavar="DIR", help="studio folder: database, uploads, runs "
                   "(default: $VLMDPO_CACHE/studio or ~/.cache/vlmdpo/studio)")
    p.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="another folder the studio may read and write (repeatable; default: only --home)")
    p.add_argument("--token", default=os.environ.get("VLMDPO_STUDIO_TOKEN"), metavar="TOKEN",
                   help="require this token (default: $VLMDPO_STUDIO_TOKEN; required off 127.0.0.1)")
    p.add_argument("--max-upload-mb", type=float, default=512.0, metavar="MB", help="upload size limit (default 512)")
    p.set_defaults(func=run)


def studio_url(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from vlmdpo.studio.app import create_app
    from vlmdpo.studio.errors import StudioError
    from vlmdpo.studio.home import StudioHome, default_home

    if not 0 < args.port < 65536:
        raise StudioError(f"--port {args.port}: not a port", "pass 1-65535", field="port")
    token = args.token
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        token = secrets.token_urlsafe(16)  # never serve another interface without one
    home = StudioHome(args.home or default_home(), extra_roots=tuple(args.root), max_upload_mb=args.max_upload_mb)
    print(f"vlmdpo studio: {studio_url(args.host, args.port, token)}  (home {home.root}; Ctrl-C to stop)", flush=True)
    uvicorn.run(create_app(home, token=token), host=args.host, port=args.port, log_level="warning")
    return 0
