"""`vlmdpo export` never deletes what it did not write: an output folder that is or holds the model
(or is the current folder) is refused; --force replaces a previous export, and moves anything else aside."""
from __future__ import annotations

import os

import pytest

from inference_helpers import make_adapter
from vlmdpo.cli import main
from vlmdpo.export import MANIFEST, export_model


@pytest.fixture
def run_dir(tmp_path):
    return make_adapter(tmp_path / "run", "causal_lm")


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def test_output_holding_the_model_is_refused_even_with_force(tmp_path, run_dir, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    for target in (tmp_path, run_dir):
        assert main(["export", "--model", str(run_dir), "-o", str(target), "--force"]) == 2
        err = capsys.readouterr().err
        assert ("contains the input" in err or "is the input" in err) and "separate output folder" in err
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--model", str(run_dir), "-o", ".", "--force"]) == 2
    assert "current folder" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_force_replaces_only_what_export_wrote(tmp_path, run_dir):
    out = tmp_path / "merged"
    export_model(str(run_dir), out)
    assert (out / MANIFEST).is_file() and not list(tmp_path.glob("merged.replaced-*"))
    res = export_model(str(run_dir), out, force=True)  # a previous export: replaced in place
    assert res.moved_aside is None and (out / "config.json").is_file()
    (out / "my_notes.txt").write_text("mine")  # now the folder holds something export did not write
    res = export_model(str(run_dir), out, force=True)
    assert res.moved_aside == tmp_path / "merged.replaced-1"
    assert (res.moved_aside / "my_notes.txt").read_text() == "mine" and not (out / "my_notes.txt").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
