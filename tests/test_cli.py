"""The CLI's one error handler: a run that stops (TrainingError) is a clear message and exit 1, for every command."""
from __future__ import annotations

import pytest

from vlmdpo import cli
from vlmdpo.train.step import TrainingError


@pytest.mark.parametrize("argv, target", [(["train", "x.yaml"], "vlmdpo.api.train"),
                                          (["quickstart", "-o", "q"], "vlmdpo.quickstart.run_quickstart")])
def test_a_stopped_run_is_one_line_and_exit_invalid(monkeypatch, capsys, argv, target):
    def stopped(*_a, **_k):
        raise TrainingError("training stopped at step 3: the loss became nan")

    monkeypatch.setattr(target, stopped)
    assert cli.main(argv) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert err.strip() == "error: training stopped at step 3: the loss became nan"
