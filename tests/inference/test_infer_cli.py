"""The chat / compare / export subcommands: exit codes and one-line errors, no tracebacks."""
from __future__ import annotations

from pathlib import Path

from inference_helpers import make_adapter
from vlmdpo.cli import main


def test_chat_one_shot(capsys):
    assert main(["chat", "--model", "tiny:causal_lm", "--prompt", "hi", "--max-new-tokens", "3", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_chat_wrong_model_folder_is_one_clear_line(tmp_path: Path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["chat", "--model", str(tmp_path), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a model folder" in err and "Traceback" not in err


def test_chat_missing_image(tmp_path: Path, capsys):
    assert main(["chat", "--model", "tiny:idefics3", "--image", str(tmp_path / "gone.png"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "gone.png" in err and "Traceback" not in err


def test_chat_rejects_bad_sampling_options(capsys):
    assert main(["chat", "--model", "tiny:causal_lm", "--prompt", "x", "--temperature", "-1"]) == 2
    assert "--temperature" in capsys.readouterr().err


def test_compare_needs_exactly_one_input(tmp_path: Path, capsys):
    assert main(["compare", "--base", "tiny:causal_lm", "--tuned", "tiny:causal_lm"]) == 2
    assert "--data FILE or --prompt" in capsys.readouterr().err


def test_export_cli(tmp_path: Path, capsys):
    run = make_adapter(tmp_path / "run", "causal_lm")
    assert main(["export", "--model", str(run), "-o", str(tmp_path / "out")]) == 0
    assert "merged LoRA" in capsys.readouterr().out and (tmp_path / "out" / "config.json").is_file()
    assert main(["export", "--model", str(run), "-o", str(tmp_path / "out")]) == 2
    assert "--force" in capsys.readouterr().err
