"""`--by implicit`: the DPO implicit reward beta * (log p_tuned(y|x) - log p_base(y|x)) of each candidate.

Log-probs come from `compare.completion_logps`, the training path's scoring, so they are the numbers DPO
optimised; a model scored against itself gives 0.
"""
from __future__ import annotations

from typing import Any

from vlmdpo.engine.judge_io import JudgeError


class ImplicitJudge:
    def __init__(self, tuned: str, base: str, *, beta: float, max_length: int = 2048, device: str | None = None):
        from vlmdpo.inference import load_for_inference

        self.tuned = load_for_inference(tuned, base=base, device=device)
        self.base = load_for_inference(base, device=device)
        self.beta, self.max_length = beta, max_length
        self.names = {"tuned": tuned, "base": base, "beta": beta}

    def __call__(self, row: dict[str, Any], where: str) -> tuple[list[float | None], dict[str, Any]]:
        from vlmdpo.compare import completion_logps
        from vlmdpo.data.images import ImageSpecError, resolve_image
        from vlmdpo.types import PreferenceRecord

        try:
            images = [resolve_image(ref) for ref in row.get("images") or []]
        except ImageSpecError as exc:
            raise JudgeError(f"{where}: field 'images': {exc.message}", exc.fix) from None
        record = PreferenceRecord(id=row["id"], prompt=row["prompt"], chosen=[], rejected=[], images=images)
        cands = {str(i): c for i, c in enumerate(row["candidates"])}
        tuned_lp, base_lp, note = completion_logps(self.tuned, self.base, record, cands, max_length=self.max_length)
        scores = [self.beta * (tuned_lp[k] - base_lp[k]) if k in tuned_lp and k in base_lp else None for k in cands]
        detail = {"by": "implicit", **self.names, "tuned_logps": [tuned_lp.get(k) for k in cands],
                  "base_logps": [base_lp.get(k) for k in cands]}
        if note:
            detail["note"] = note
        return scores, detail
