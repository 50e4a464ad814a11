"""HF-style command lines: underscore spellings of every flag, `train --config FILE` and `train FILE --key value`,
and `compare` without --base."""
from __future__ import annotations

import argparse

import pytest

from vlmdpo import cli
from vlmdpo.flags import train_argv


def _options(parser: argparse.ArgumentParser):
    """(parser, option) for every `--long-option` with a hyphen in its name, subcommands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)
        for opt in action.option_strings:
            if opt.startswith("--") and "-" in opt[2:]:
                yield parser, action, opt


def test_every_hyphenated_flag_takes_its_underscore_spelling():
    found = list(_options(cli.build_parser()))
    assert len(found) > 20
    for parser, action, opt in found:
        underscored = "--" + opt[2:].replace("-", "_")
        assert parser._hyphenated(underscored) == opt, opt
        assert parser._hyphenated(underscored + "=3") == opt + "=3", opt


def test_underscore_flags_parse_like_hyphenated_ones():
    parser = cli.build_parser()
    a = parser.parse_args(["chat", "--model", "m", "--max_new_tokens", "7", "--top_p=0.5", "--allow_remote_images"])
    b = parser.parse_args(["chat", "--model", "m", "--max-new-tokens", "7", "--top-p=0.5", "--allow-remote-images"])
    assert vars(a) == vars(b) and a.max_new_tokens == 7 and a.top_p == 0.5
    e = parser.parse_args(["eval", "--model", "d", "--no_generate", "--batch_size", "3"])
    assert e.no_generate and e.batch_size == 3


def test_an_unknown_underscore_flag_is_still_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["chat", "--model", "m", "--max_newtokens", "7"])
    assert exc.value.code == 2 and "--max_newtokens" in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--config", "x.yaml"], ["x.yaml"]),
    (["--config=x.yaml", "--beta", "0.2"], ["x.yaml", "beta=0.2"]),
    (["x.yaml", "--beta", "0.2", "max_steps=3"], ["x.yaml", "beta=0.2", "max_steps=3"]),
    (["x.yaml", "--learning-rate=1e-5", "--bf16", "--loss_type", "[sigmoid,sft]"],
     ["x.yaml", "learning_rate=1e-5", "bf16=true", "loss_type=[sigmoid,sft]"]),
    (["x.yaml", "--beta", "-0.5"], ["x.yaml", "beta=-0.5"]),
    (["--help"], ["--help"]),
])
def test_train_argv(argv, expected):
    assert train_argv(argv) == expected


@pytest.mark.parametrize("argv", [["train", "--config", "x.yaml", "--beta", "0.2", "--max_steps", "3"],
                                  ["train", "x.yaml", "--beta", "0.2", "max_steps=3"],
                                  ["--debug", "train", "x.yaml", "beta=0.2", "--max-steps=3"]])
def test_train_command_lines_reach_train_alike(monkeypatch, argv):
    seen = {}

    def fake_train(config, **overrides):
        seen.update(config=config, **overrides)
        raise SystemExit(0)

    monkeypatch.setattr("vlmdpo.api.train", fake_train)
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert seen == {"config": "x.yaml", "beta": 0.2, "max_steps": 3}


def test_compare_base_is_optional(monkeypatch):
    seen = {}
    monkeypatch.setattr("vlmdpo.compare.run_compare", lambda base, tuned, **k: seen.update(base=base, tuned=tuned))
    assert cli.main(["compare", "--tuned", "run/checkpoint-2", "--prompt", "hi", "--max_new_tokens", "4"]) == 0
    assert seen == {"base": None, "tuned": "run/checkpoint-2"}


def test_compare_without_a_recorded_base_says_pass_base(tmp_path, capsys):
    from vlmdpo.compare import run_compare
    from vlmdpo.inference import InferenceModel

    def loader(name, **_k):
        return InferenceModel(model=None, processor=None, kind="full", name=name)

    with pytest.raises(ValueError, match="records no base model .*pass --base"):
        run_compare(None, str(tmp_path), prompt="hi", model_loader=loader, out=tmp_path / "c.html")
