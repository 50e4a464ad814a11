"""How fast is `vlmdpo data check` on a large TRL file? (target: 100k rows in < 60 s on 2 cores)

Generates N TRL conversational rows that share ~1k small PNGs (0-2 images per row, the way real
datasets reuse pictures) in a temporary folder, then times `python -m vlmdpo data check` as a
subprocess, start-up included, and prints rows/s.

    python benchmarks/data_check_100k.py [--rows 100000] [--images 1000] [--decode-images] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def make_images(folder: Path, n: int, rng: random.Random) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img_{i:05d}.png"
        color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        Image.new("RGB", (rng.choice((16, 24, 32)), rng.choice((16, 24, 32))), color).save(folder / name)
        names.append(f"images/{name}")
    return names


def make_rows(path: Path, n_rows: int, images: list[str], rng: random.Random) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_rows):
            k = rng.choices((0, 1, 2), weights=(1, 6, 1))[0]
            parts = [{"type": "image"} for _ in range(k)] + [{"type": "text", "text": f"Question {i}: what is shown?"}]
            row = {
                "id": f"bench-{i}",
                "images": [rng.choice(images) for _ in range(k)],
                "prompt": [{"role": "user", "content": parts}],
                "chosen": [{"role": "assistant", "content": [{"type": "text", "text": f"A careful answer number {i}."}]}],
                "rejected": [{"role": "assistant", "content": [{"type": "text", "text": f"A sloppy answer {i}."}]}],
            }
            fh.write(json.dumps(row) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=1_000)
    ap.add_argument("--decode-images", action="store_true")
    ap.add_argument("--keep", metavar="DIR", help="write the data here and keep it (default: a temp dir, removed)")
    args = ap.parse_args()

    rng = random.Random(0)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vlmdpo-bench-"))
    try:
        t0 = time.perf_counter()
        names = make_images(folder / "images", args.images, rng)
        data = folder / "prefs.jsonl"
        make_rows(data, args.rows, names, rng)
        gen_s = time.perf_counter() - t0
        print(f"generated {args.rows:,} rows, {args.images:,} images ({data.stat().st_size / 2**20:.1f} MiB) "
              f"in {gen_s:.1f} s")

        cmd = [sys.executable, "-m", "vlmdpo", "data", "check", str(data)]
        if args.decode_images:
            cmd.append("--decode-images")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        check_s = time.perf_counter() - t0
        print(proc.stdout.strip())
        if proc.returncode != 0:
            print(proc.stderr.strip(), file=sys.stderr)
            print(f"data check exited {proc.returncode}; expected 0 on valid data", file=sys.stderr)
            return 1
        print(f"vlmdpo data check: {check_s:.1f} s for {args.rows:,} rows = {args.rows / check_s:,.0f} rows/s "
              f"({'decode' if args.decode_images else 'header'} image checks, start-up included)")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
