"""The device check's pieces stay runnable: gpu_correctness.py's CPU path on two tiny families,
and gpu_report.py's verdicts. (The whole `gpu_check.sh --cpu-smoke` starts a dozen processes and
takes minutes on a shared CPU, too slow for the suite; it is run by hand, see benchmarks/RESULTS.md.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_correctness  # noqa: E402
import gpu_report  # noqa: E402


def test_correctness_cpu_path_passes_and_records_what_it_skips(tmp_path):
    out = tmp_path / "correctness.json"
    rc = gpu_correctness.main(["--device", "cpu", "--dtype", "bf16", "--families", "idefics3,qwen2_vl",
                               "--attn", "sdpa,flex_attention", "--train-steps", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    cases = {(c["attn"], c["family"]): c for c in report["cases"]}
    assert rc == 0, report["table_md"]
    for family in ("idefics3", "qwen2_vl"):
        case = cases[("sdpa", family)]
        assert case["status"] == "pass"
        assert {"plain", "shared", "packed"} <= set(case["errors"])
        assert case["errors"]["packed"]["layout"] == "packed"
        assert len(case["train"]["losses"]) == 2 and case["train"]["finite"]
    assert cases[("flex_attention", "qwen2_vl")]["status"] == "skipped"
    assert "no flex_attention" in cases[("flex_attention", "qwen2_vl")]["note"]
    assert report["counts"] == {"pass": 2, "FAIL": 0, "skipped": 2}


def test_a_wrong_layout_fails_the_check(monkeypatch):
    # Rejected tokens that may see chosen ones (a leaking mask), or rejected positions shifted by
    # one: the log-probs barely move on a random tiny model, the attention gradients do.
    import vlmdpo.batching.shared as shared

    collate = shared.collate_shared
    for bug in ("leak", "shift"):
        def broken(*args, _bug=bug, **kwargs):
            batch = collate(*args, **kwargs)
            if _bug == "leak":
                batch.branch = torch.where(batch.branch == 2, torch.ones_like(batch.branch), batch.branch)
            else:
                batch.positions = batch.positions + (batch.branch == 2).long()
            return batch

        monkeypatch.setattr(shared, "collate_shared", broken)
        case = gpu_correctness.check("idefics3", "sdpa", "cpu", "bfloat16", train_steps=1)
        assert case["status"] == "FAIL", (bug, case["errors"])


def test_report_reads_targets_and_never_calls_a_missing_run_met(tmp_path):
    speed = {
        "summary": [
            {"model": "qwen2vl-2b", "mode": "full", "batch": 16, "ratio_pairs_per_s": 2.5, "ratio_peak_mem": 0.5,
             "trl": {"pairs_per_s": 8.0}, "vlmdpo": {"pairs_per_s": 20.0, "mfu": 0.31}},
            {"model": "smolvlm-256m", "mode": "lora", "batch": 8, "ratio_pairs_per_s": 2.5, "ratio_peak_mem": 0.7,
             "trl": {"pairs_per_s": 3.0}, "vlmdpo": {"pairs_per_s": 7.5, "mfu": 0.1}},
            {"model": "smolvlm-256m", "mode": "full", "batch": 8, "trl": None, "vlmdpo": None},
        ],
        "max_batch": [{"model": "qwen2vl-2b", "mode": "full", "ratio_best_vs_best": 3.2,
                       "trl": {"largest_batch": 32}, "vlmdpo": {"largest_batch": 128, "mfu": 0.37}}],
        "records": [{"model": "smolvlm-256m", "mode": "full", "batch": 8, "side_name": "trl", "status": "skipped",
                     "error": "phase deadline reached"}],
    }
    (tmp_path / "speed.json").write_text(json.dumps(speed))
    gpu_report.main([str(tmp_path)])
    text = (tmp_path / "results.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| same batch")}
    assert rows["qwen2vl-2b full b16"].endswith("| met |")
    assert "**missed**" in rows["smolvlm-256m lora b8"]  # fast enough, but 0.7x the memory
    assert "not measured" in rows["smolvlm-256m full b8"]
    assert any("best vs best" in x and x.endswith("| met |") for x in text.splitlines())
    mfu = next(x for x in text.splitlines() if x.startswith("| Qwen2-VL-2B full: MFU"))
    assert "37.0%" in mfu and mfu.endswith("| met |")  # the largest batch's MFU counts
    assert "## Runs that did not finish" in text and "phase deadline reached" in text
    assert "correctness" in text.lower() and "not run" in text


def test_largest_batch_search_doubles_from_what_ran_then_bisects_and_stops_in_time(monkeypatch):
    import vs_trl

    calls = []

    def fake_spawn(argv, side, overrides, timeout):
        if timeout is None:
            return {"status": "skipped"}
        b = overrides["batch"]
        calls.append(b)
        if b > 40:
            return {"status": "oom", "error": "CUDA out of memory"}
        return {"status": "ok", "results": {"pairs_per_s": b / 10, "peak_mem_gib": b / 2, "mfu": None}}

    monkeypatch.setattr(vs_trl, "spawn", fake_spawn)
    a = vs_trl.parse_args(["--max-batch-limit", "1024"])
    known = {16: {"status": "ok", "results": {"pairs_per_s": 1.6, "peak_mem_gib": 8.0, "mfu": None}}}
    res = vs_trl.max_batch(a, [], vs_trl.Budget(a), "vlmdpo", "m", "full", known, 16, 1)
    assert calls == [32, 64, 48, 40, 44, 42, 41]  # the measured batch is not probed again
    assert (res["largest_batch"], res["stopped_by"], res["pairs_per_s"]) == (40, "out of memory", 4.0)

    calls.clear()
    a = vs_trl.parse_args(["--deadline", "1"])  # long past: nothing may start
    res = vs_trl.max_batch(a, [], vs_trl.Budget(a), "trl", "m", "full", known, 16, 1)
    assert calls == [] and (res["largest_batch"], res["stopped_by"]) == (16, "time")
