"""`vlmdpo serve` on the command line: refusals before any model loads, each one line with the fix."""
from __future__ import annotations

import pytest

from vlmdpo.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["serve", *argv])
    return code, capsys.readouterr().err


def test_other_host_without_key_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("VLMDPO_API_KEY", raising=False)
    code, err = run(capsys, "--model", "tiny:idefics3", "--host", "0.0.0.0")
    assert code == 2 and "--api-key" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["--model", "tiny:idefics3", "--max-concurrency", "0"], "--max-concurrency"),
    (["--model", "a=tiny:idefics3", "--model", "a=tiny:qwen2_vl"], "given twice"),
    (["--model", "x=", "--port", "1"], "nothing after '='"),
    (["--model", "tiny:idefics3", "--image-root", "/no/such/dir"], "--image-root"),
    (["--model", "builtin:nano-smolvlm", "--engine", "vllm"], "vlmdpo export"),
])
def test_bad_arguments(capsys, argv, words):
    code, err = run(capsys, *argv)
    assert code == 2 and words in err, err


def test_vllm_engine_names_what_is_missing(tmp_path):
    from vlmdpo.serve.registry import ServeError
    from vlmdpo.serve.server import EngineOptions, load_served

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ServeError) as info:
        load_served([str(tmp_path)], EngineOptions(engine="vllm"))
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert "pip install vllm" in str(info.value)
    else:
        assert "GPU" in str(info.value)


def test_checkpoint_without_its_run_config_names_the_fix(tmp_path):
    from vlmdpo.inference import ModelDirError, load_for_inference

    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text("{}")
    with pytest.raises(ModelDirError, match="--base"):
        load_for_inference(ckpt, device="cpu")
