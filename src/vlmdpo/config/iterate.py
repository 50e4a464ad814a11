"""Config keys of `vlmdpo iterate` only: sample -> judge -> pairs -> train, round after round.

An iterate config is a training config (every TrainConfig key) plus these keys; each round trains
with the training keys, its `model_name_or_path`, `dataset` and `output_dir` set by the loop.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import model_validator

from vlmdpo.config.base import Keys, peer
from vlmdpo.config.train_config import TrainConfig

JUDGES = ("truth", "model", "implicit", "labels")


class IterateKeys(Keys):
    """Iterate (`vlmdpo iterate` only): each round samples from the current policy, judges, pairs and trains."""

    prompt_dataset: str | list[str] | None = None
    """Prompts to sample answers for each round (any preference format; chosen / rejected are not used); null = dataset."""
    num_generations: int = peer(4, trl="num_generations")
    """Answers sampled per prompt each round (K); at least 2, so there is a pair to make."""
    temperature: float = peer(0.9, trl="temperature")
    """Sampling temperature of those answers (0 = greedy: every answer the same)."""
    top_p: float = peer(1.0, trl="top_p")
    """Nucleus sampling of those answers (1.0 = off)."""
    max_new_tokens: int = peer(64, trl="~max_completion_length")
    """Length limit of each sampled answer, in tokens."""
    sample_batch_size: int = 8
    """Prompts sampled together in one generate() call (each with num_generations answers); lower it if sampling runs out of memory."""
    judge: Literal["truth", "model", "implicit", "labels"] = "truth"
    """How answers are scored: truth (against each row's truth), model (a judge model, pairwise in both orders), implicit (a DPO model's implicit reward), labels (human labels from the studio's label page)."""
    truth_match: Literal["exact", "contains", "number", "choice"] = "contains"
    """judge: truth: how an answer must match the row's truth (demo-data rows are graded as the demo grader does)."""
    judge_model: str | None = peer(None, trl="~judge")
    """judge: model: the judge model to load (or the served model's name with judge_endpoint); judge: implicit: the tuned DPO model whose implicit reward scores."""
    judge_endpoint: str | None = None
    """judge: model: an OpenAI-compatible server to ask instead of loading judge_model, e.g. http://127.0.0.1:8000/v1."""
    judge_rubric: str | None = None
    """judge: model: a rubric file with {question}, {answer_a} and {answer_b}; null = the built-in rubric."""
    judge_base: str | None = None
    """judge: implicit: the reference of judge_model; null = the base recorded in judge_model's folder."""
    labels_file: str | None = None
    """judge: labels: the label page's file for a round ({round} is replaced by its number); null = <output_dir>/round-<r>/labels.jsonl."""
    pair_strategy: Literal["best-worst", "all"] = "best-worst"
    """Pairs per prompt: best-worst (the best and the worst answer) or all (every pair above min_margin)."""
    min_margin: float = 0.0
    """Keep a pair only when its scores differ by more than this; ties are always dropped."""
    iterate_reference: Literal["previous", "base"] = "previous"
    """The reference of round r: previous (the policy round r started from) or base (the starting model_name_or_path, every round)."""
    held_out_dataset: str | list[str] | None = None
    """Held-out pairs evaluated after each round (and before round 1); null = test_dataset, else eval_dataset; none = no evaluation."""

    def problems(self) -> list[str]:
        out = []
        if self.num_generations < 2:
            out.append("num_generations: must be >= 2 to make a pair from a prompt's answers "
                       f"(got {self.num_generations})")
        if self.max_new_tokens < 1:
            out.append(f"max_new_tokens: must be >= 1 (got {self.max_new_tokens})")
        if self.sample_batch_size < 1:
            out.append(f"sample_batch_size: must be >= 1 (got {self.sample_batch_size})")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            out.append(f"temperature / top_p: temperature must be >= 0 and top_p in (0, 1] "
                       f"(got {self.temperature}, {self.top_p})")
        if self.min_margin < 0:
            out.append(f"min_margin: must be >= 0 (got {self.min_margin})")
        if self.judge == "model" and not (self.judge_model or self.judge_endpoint):
            out.append("judge: model needs judge_model (a model to load) or judge_endpoint (a server URL)")
        if self.judge == "implicit" and not self.judge_model:
            out.append("judge: implicit needs judge_model: a DPO-tuned model whose implicit reward scores the answers")
        if self.judge_rubric and not Path(self.judge_rubric).is_file():
            out.append(f"judge_rubric: {self.judge_rubric} is not a file")
        return out


class IterateConfig(IterateKeys, TrainConfig):
    """A training config plus the iterate keys (checked together; unknown keys get "did you mean")."""

    @model_validator(mode="after")
    def _check_iterate(self) -> "IterateConfig":
        problems = IterateKeys.problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def train_values(self) -> dict[str, Any]:
        """The training keys the user set (derived defaults derive again in each round's config)."""
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if k not in IterateKeys.model_fields}

    @property
    def held_out(self) -> Any:
        return self.held_out_dataset or self.test_dataset or self.eval_dataset

    @property
    def prompts(self) -> Any:
        return self.prompt_dataset or self.dataset


def load_iterate_config(path: str | Path | None, overrides: Sequence[str] | dict[str, Any] = (), *,
                        say: Callable[[str], None] | None = None) -> IterateConfig:
    """YAML + key=value overrides -> IterateConfig, or a ConfigError naming each bad key and its fix."""
    from vlmdpo.config.load import load_config

    kwargs = {"say": say} if say else {}
    return load_config(path, overrides, schema=IterateConfig, **kwargs)
