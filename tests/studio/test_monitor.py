"""The monitor: new metrics rows by byte offset, the plain-words reading, the best model, and the SSE stream."""
from __future__ import annotations

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from studio_helpers import fake_run, overfit_metrics

from vlmdpo.studio.app import create_app
from vlmdpo.studio.monitor import read_curves, read_new_rows, total_steps


def test_new_rows_by_offset_and_a_torn_line_waits(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "lo')
    rows, offset = read_new_rows(path, 0)
    assert rows == [{"step": 1, "loss": 0.7}]
    with open(path, "a") as f:
        f.write('ss": 0.6}\n{"step": 3, "loss": 0.5}\n')
    rows, offset2 = read_new_rows(path, offset)
    assert [r["step"] for r in rows] == [2, 3] and offset2 == path.stat().st_size
    assert read_new_rows(tmp_path / "missing.jsonl", 0) == ([], 0)


def test_total_steps_from_the_trainers_log():
    assert total_steps("x\ntraining: 12 pairs, 10 steps (6/epoch), 1 process(es), batch 2x1x1\n") == 10
    assert total_steps("loading...") is None


def test_reading_names_overfitting_and_its_step():
    text = " ".join(read_curves(overfit_metrics(turn=4)))
    assert "Overfitting since step 4" in text and "Training loss is falling" in text
    assert "Reward accuracy (evaluation): 60%" in text


def test_reading_without_eval_and_with_nan():
    rows = [{"step": s, "loss": 0.69} for s in range(1, 7)]
    text = " ".join(read_curves(rows))
    assert "flat" in text and "No evaluation yet" in text
    assert "not a number at step 3" in " ".join(read_curves(rows[:2] + [{"step": 3, "loss": float("nan")}]))
    assert read_curves([]) == ["No training steps logged yet."]
    flat_eval = rows + [{"step": 2, "eval_loss": 0.690}, {"step": 4, "eval_loss": 0.691}]
    assert "close to its best (0.6900 at step 2; now 0.6910)" in " ".join(read_curves(flat_eval))
    assert "at its best so far (0.6900 at step 4)" in " ".join(read_curves(rows + [{"step": 4, "eval_loss": 0.69}]))


def test_summary_route_names_the_best_checkpoint_and_use_stores_it(studio_home):
    run = fake_run(studio_home, "over", overfit_metrics(turn=4), log="training: 20 pairs, 10 steps (10/epoch)\n")
    out = studio_home.root / "runs" / "over" / "output"
    for step in (4, 8):
        ck = out / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    client = TestClient(create_app(studio_home))
    s = client.get(f"/api/monitor/runs/{run['id']}").json()
    assert s["best"]["name"] == "checkpoint-4" and s["total"] == 10 and s["step"] == 10
    assert any("Overfitting since step 4" in line for line in s["reading"])
    used = client.post(f"/api/monitor/runs/{run['id']}/use", json={"model": s["best"]["path"]})
    assert used.status_code == 200
    assert studio_home.setting(f"run_model:{run['id']}") == s["best"]["path"]
    again = client.get(f"/api/monitor/runs/{run['id']}").json()
    assert again["using"] == s["best"]["path"]


def test_use_refuses_a_model_outside_the_run(studio_home, tmp_path):
    run = fake_run(studio_home, "r", [])
    client = TestClient(create_app(studio_home))
    other = tmp_path / "elsewhere"
    other.mkdir()
    bad = client.post(f"/api/monitor/runs/{run['id']}/use", json={"model": str(other)})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "model"
    escape = client.post(f"/api/monitor/runs/{run['id']}/use", json={"model": "/etc"})
    assert escape.status_code == 403


@pytest.mark.parametrize("query, status", [("runs=abc", 400), ("runs=", 400), ("runs=999", 404)])
def test_stream_refuses_bad_run_ids(studio_home, query, status):
    client = TestClient(create_app(studio_home))
    response = client.get(f"/api/monitor/stream?{query}")
    assert response.status_code == status and response.json()["error"]["field"] in ("runs", "run")


def test_stream_pushes_rows_as_the_file_grows_for_several_runs(live_studio):
    a = fake_run(live_studio.home, "a", [{"step": 1, "loss": 0.7}])
    b = fake_run(live_studio.home, "b", [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8}])
    metrics = live_studio.home.root / "runs" / "a" / "output" / "metrics.jsonl"
    events, statuses = [], set()
    url = f"{live_studio.url}/api/monitor/stream?runs={a['id']},{b['id']}"
    with httpx.stream("GET", url, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name == "status":
                statuses.add(json.loads(line.removeprefix("data: "))["run"]["id"])
            elif line.startswith("data: ") and name == "metrics":
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 2:
                    with open(metrics, "a") as f:
                        f.write(json.dumps({"step": 2, "loss": 0.6}) + "\n")
                elif len(events) == 3:
                    break
    steps = {(e["run"], r["step"]) for e in events for r in e["rows"]}
    assert steps == {(a["id"], 1), (a["id"], 2), (b["id"], 1), (b["id"], 2)}
    assert events[-1]["run"] == a["id"] and statuses == {a["id"], b["id"]}
