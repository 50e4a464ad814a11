"""Files and rows the lab, label and deploy tests start from: a run in the studio's runs table, a candidates file."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import vlmdpo
from vlmdpo.studio.home import StudioHome

IMAGES = Path(vlmdpo.__file__).parent / "samples" / "trl" / "images"


def add_run(home: StudioHome, tiny_run: Path, folder: Path, name: str = "tiny-run") -> Path:
    """A copy of the session's tiny run inside the home's roots, listed as a finished run."""
    run = Path(shutil.copytree(tiny_run, folder))
    now = time.time()
    with home.db() as con:
        con.execute("INSERT INTO runs(name, output_dir, config_path, status, created, updated) "
                    "VALUES(?, ?, ?, 'finished', ?, ?)", (name, str(run), str(run / "vlmdpo_config.yaml"), now, now))
    return run


def prompt(text: str = "What shape is this?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def write_candidates(path: Path, rows: int = 3, answers: int = 3, **changes) -> Path:
    """`rows` candidate rows as `vlmdpo sample` writes them; `changes` maps a row index to fields to replace."""
    shutil.copy(IMAGES / "red_square.png", path.parent / "red.png")  # inside the studio's roots
    out = []
    for i in range(rows):
        row = {"id": f"q{i}", "prompt": prompt(f"Question {i}?"), "images": ["red.png"],  # beside the file
               "candidates": [f"answer {i}.{k}" for k in range(answers)]}
        row.update(changes.get(f"row{i}", {}))
        out.append(json.dumps(row))
    path.write_text("\n".join(out) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def data_check_ok(path: Path) -> bool:
    """What `vlmdpo data check PATH` decides (the library function it calls)."""
    from vlmdpo.data.stats import check_data

    report = check_data(str(path))
    assert report.ok, [str(e) for e in report.errors]
    return report.n_kept
