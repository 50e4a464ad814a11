"""`vlmdpo judge`: score each row's candidates (by truth, a judge model, the implicit DPO reward, or labels).

Reads candidates.jsonl (as `vlmdpo sample` writes it), writes the same rows plus "scores" (a float or
null per candidate) and "judge" (how: the match rule, the judge's raw replies, the log-probs, the label).
Resumable: rows already in the output (by id) are skipped, and each row is on disk before the next;
a row the scorer cannot score yet (not labelled) is left out and counted, for a later run.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vlmdpo.engine.judge_io import JudgeError
from vlmdpo.errors import FixableError

BYS = ("truth", "model", "implicit", "labels")
# (row, "file:row") -> (scores, judge record), or None: not scorable yet (no label), ask again later
Scorer = Callable[[dict[str, Any], str], "tuple[list[Any], dict[str, Any]] | None"]


@dataclass
class JudgeResult:
    output: Path
    judged: int
    skipped: int  # already in the output from an earlier run
    waiting: int = 0  # not scorable yet (rows not labelled): left out, scored by a later run

    def summary(self) -> str:
        again = f", {self.skipped} already there" if self.skipped else ""
        waiting = f"; {self.waiting} rows not labelled yet (label them and rerun)" if self.waiting else ""
        return f"judged {self.judged} rows{again}{waiting}; wrote {self.output}"


def truth_scorer(match: str = "contains") -> Scorer:
    from vlmdpo.engine.judge_truth import MATCHES, truth_scores

    if match not in MATCHES:
        raise JudgeError(f"--match {match}: unknown", f"choose one of {', '.join(MATCHES)}")
    return lambda row, where: truth_scores(row, where, match)


def model_scorer(ask: Callable[[list[dict], list[str]], str], rubric: str | None = None, by: str = "") -> Scorer:
    from vlmdpo.engine.judge_model import DEFAULT_RUBRIC, model_scores

    text = rubric or DEFAULT_RUBRIC

    def score(row: dict[str, Any], where: str):
        scores, asked = model_scores(row, ask, text)
        return scores, {"by": "model", "judge": by, "comparisons": asked}

    return score


def read_rubric(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise JudgeError(f"--rubric {path}: cannot read ({exc.strerror})", "pass a readable text file") from None
    for key in ("{answer_a}", "{answer_b}"):
        if key not in text:
            raise JudgeError(f"--rubric {path}: has no {key} placeholder",
                             "write the rubric with {question}, {answer_a} and {answer_b} where they go")
    return text


def judge_file(candidates: str | Path, output: str | Path, scorer: Scorer, *, progress: bool = False) -> JudgeResult:
    """Score every row of `candidates` not yet in `output`, appending each as it is done."""
    from tqdm.auto import tqdm

    from vlmdpo.engine.jsonl import append_row, done_ids
    from vlmdpo.engine.judge_io import read_candidates

    output = Path(output)
    done = done_ids(Path(output))
    rows = list(read_candidates(candidates))
    judged = skipped = waiting = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as fh, tqdm(total=len(rows), disable=not progress, unit="row",
                                                         desc="judge") as bar:
        bar.update(sum(row["id"] in done for _, row in rows))
        for where, row in rows:
            if row["id"] in done:
                skipped += 1
                continue
            try:
                scored = scorer(row, where)
            except JudgeError:
                raise
            except (FixableError, OSError) as exc:  # an image that is missing or cannot be read
                raise JudgeError(f"{where}: field 'images': {exc}", "fix the image, or drop the row; rerun to "
                                 "resume") from None
            if scored is None:
                waiting += 1
                continue
            scores, record = scored
            append_row(fh, {**row, "scores": scores, "judge": record})
            done.add(row["id"])
            judged += 1
            bar.update(1)
    return JudgeResult(output, judged, skipped, waiting)


# ------------------------------------------------------------------------------------------ CLI
def add_judge_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="score sampled candidates: by truth, a judge model, or the implicit reward",
                       description="Reads candidates.jsonl (from `vlmdpo sample`) and writes the rows with "
                       "\"scores\" per candidate and a \"judge\" record; rerun the same command to resume.")
    p.add_argument("candidates", metavar="CANDIDATES.jsonl")
    p.add_argument("--by", required=True, choices=BYS, help="truth: check against the row's truth; model: a "
                   "judge compares candidates pairwise in both orders; implicit: beta*(log p_tuned - log p_base); "
                   "labels: people's choices from the studio's label page (--labels)")
    p.add_argument("-o", "--output", required=True, metavar="SCORED.jsonl", help="file to write (or resume)")
    p.add_argument("--match", default="contains", choices=("exact", "contains", "number", "choice"),
                   help="--by truth: how an answer must match the truth (default contains; demo rows are graded "
                   "as the demo grader does)")
    p.add_argument("--judge-model", metavar="NAME_OR_DIR", help="--by model: the judge model (or the served "
                   "model's name with --endpoint)")
    p.add_argument("--endpoint", metavar="URL", help="--by model: an OpenAI-compatible server instead of loading")
    p.add_argument("--rubric", metavar="FILE", help="--by model: rubric with {question} {answer_a} {answer_b}")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="--by model: reply length limit")
    p.add_argument("--tuned", metavar="DIR", help="--by implicit: the tuned model (adapter or full)")
    p.add_argument("--base", metavar="NAME_OR_DIR", help="--by implicit: its base (the reference)")
    p.add_argument("--beta", type=float, default=0.1, help="--by implicit: DPO beta (default 0.1)")
    p.add_argument("--max-length", type=int, default=2048, metavar="N", help="--by implicit: token limit per answer")
    p.add_argument("--labels", metavar="LABELS.jsonl", help="--by labels: the label page's file (one decision "
                   "per line: id, best, worst, skip, labeler, time; engine/judge_labels.py)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=run_judge_command)


def judge_ask(model: str | None, endpoint: str | None, *, max_new_tokens: int, device: str | None = None):
    """The judge's voice for `--by model`: a served model at `endpoint`, else `model` loaded here."""
    from vlmdpo.engine.judge_backends import LocalJudge, endpoint_judge

    if endpoint:
        return endpoint_judge(endpoint, model, max_new_tokens=max_new_tokens)
    if model:
        return LocalJudge(model, max_new_tokens=max_new_tokens, device=device)
    raise JudgeError("--by model needs a judge", "pass --judge-model NAME_OR_DIR or --endpoint URL")


def _scorer_for(args: argparse.Namespace) -> Scorer:
    if args.by == "truth":
        return truth_scorer(args.match)
    if args.by == "model":
        ask = judge_ask(args.judge_model, args.endpoint, max_new_tokens=args.max_new_tokens, device=args.device)
        return model_scorer(ask, read_rubric(args.rubric), by=args.endpoint or args.judge_model)
    if args.by == "labels":
        if not args.labels:
            raise JudgeError("--by labels needs the labels file", "pass --labels LABELS.jsonl (the studio's label "
                             "page writes it)")
        from vlmdpo.engine.judge_labels import LabelsScorer

        return LabelsScorer(args.labels, args.candidates)
    if not (args.tuned and args.base):
        raise JudgeError("--by implicit needs --tuned DIR and --base NAME_OR_DIR", "pass both")
    from vlmdpo.engine.judge_implicit import ImplicitJudge

    return ImplicitJudge(args.tuned, args.base, beta=args.beta, max_length=args.max_length, device=args.device)


def run_judge_command(args: argparse.Namespace) -> str:
    import sys

    if not Path(args.candidates).is_file():
        raise JudgeError(f"{args.candidates}: no such candidates file", "pass the JSONL written by `vlmdpo sample`")
    return judge_file(args.candidates, args.output, _scorer_for(args), progress=sys.stderr.isatty()).summary()
