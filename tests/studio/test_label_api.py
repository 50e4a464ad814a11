"""The Label page's API and its files: the queue, the labels-file contract (read back with the same rules),
pairs that pass `vlmdpo data check`, undo, resume, and every refusal naming file:row:field."""
from __future__ import annotations

import json

import pytest

from studio_helpers import IMAGES, data_check_ok, read_jsonl, write_candidates

from vlmdpo.engine.judge_labels import check_label, read_labels
from vlmdpo.studio.labels_file import pairs_for


def open_queue(client, candidates, **extra):
    r = client.post("/api/label/open", json={"candidates": str(candidates), **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_label_decide_undo_resume_and_the_files(client, tmp_path, studio_home):
    cands = write_candidates(tmp_path / "cands.jsonl", rows=3, answers=3)
    s = open_queue(client, cands, labeler="ann")
    assert (s["total"], s["done"], s["index"]) == (3, 0, 0)
    item = client.get(f"/api/label/{s['session']}/item/0").json()
    assert item["id"] == "q0" and len(item["candidates"]) == 3 and item["decision"] is None
    assert client.get(item["images"][0]).content == (IMAGES / "red_square.png").read_bytes()

    s = client.post(f"/api/label/{s['session']}/decide", json={"id": "q0", "best": 2}).json()
    assert (s["done"], s["index"], s["pairs_written"]) == (1, 1, 2)  # best vs each other answer
    s = client.post(f"/api/label/{s['session']}/decide", json={"id": "q1", "skip": True}).json()
    assert (s["done"], s["index"], s["pairs_written"]) == (2, 2, 2)
    s = client.post(f"/api/label/{s['session']}/decide", json={"id": "q2", "best": 0, "worst": 1}).json()
    assert (s["done"], s["index"], s["pairs_written"]) == (3, None, 4)

    undone = client.post(f"/api/label/{s['session']}/undo").json()
    assert undone["undone"]["id"] == "q2" and (undone["done"], undone["index"], undone["pairs_written"]) == (2, 2, 2)

    labels = tmp_path / "cands.labels.jsonl"
    rows = read_jsonl(labels)  # the contract's fields, each row readable by `vlmdpo judge --by labels`
    assert [(r["id"], r["best"], r["worst"], r["skip"], r["labeler"]) for r in rows] == [
        ("q0", 2, None, False, "ann"), ("q1", None, None, True, "ann")]
    assert all(set(r) == {"id", "best", "worst", "skip", "labeler", "time"} for r in rows)
    assert set(read_labels(labels, {"q0": 3, "q1": 3, "q2": 3})) == {"q0", "q1"}
    pairs = read_jsonl(tmp_path / "cands.pairs.jsonl")
    assert [(p["chosen"][0]["content"][0]["text"], p["rejected"][0]["content"][0]["text"]) for p in pairs] == [
        ("answer 0.2", "answer 0.0"), ("answer 0.2", "answer 0.1")]
    assert data_check_ok(tmp_path / "cands.pairs.jsonl") == 2

    again = open_queue(client, cands)  # resumed from the labels file
    assert (again["session"], again["done"], again["index"]) == (s["session"], 2, 2)
    assert client.get("/api/label/sessions").json()[0]["done"] == 2


def test_last_row_per_id_wins_and_a_two_answer_pick_names_the_worst(client, tmp_path):
    cands = write_candidates(tmp_path / "c.jsonl", rows=1, answers=2)
    s = open_queue(client, cands)
    client.post(f"/api/label/{s['session']}/decide", json={"id": "q0", "best": 0})
    client.post(f"/api/label/{s['session']}/decide", json={"id": "q0", "best": 1})
    decided = read_labels(tmp_path / "c.labels.jsonl")
    assert (decided["q0"]["best"], decided["q0"]["worst"]) == (1, 0)
    pairs = read_jsonl(tmp_path / "c.pairs.jsonl")
    assert len(pairs) == 1 and pairs[0]["chosen"][0]["content"][0]["text"] == "answer 0.1"


def test_pairs_leave_out_blank_and_identical_answers():
    decision = {"best": 0, "worst": None, "skip": False}
    assert pairs_for(["good", "good", " ", "bad"], decision) == ([("good", "bad")], 2)
    assert pairs_for(["", "x"], decision) == ([], 1)
    assert pairs_for(["a", "b"], {"best": None, "worst": None, "skip": True}) == ([], 0)


@pytest.mark.parametrize("row, words", [
    ({"id": "a", "best": 3, "worst": None, "skip": False, "labeler": "x", "time": "t"}, "'best'"),
    ({"id": "a", "best": 0, "worst": 0, "skip": False, "labeler": "x", "time": "t"}, "'worst'"),
    ({"id": "a", "best": 0, "worst": None, "skip": True, "labeler": "x", "time": "t"}, "'best'"),
    ({"id": 3, "best": 0, "worst": None, "skip": False, "labeler": "x", "time": "t"}, "'id'"),
    ({"id": "a", "best": True, "worst": None, "skip": False, "labeler": "x", "time": "t"}, "'best'"),
])
def test_label_rows_break_the_contract(row, words):
    with pytest.raises(ValueError, match=words):
        check_label(row, "labels.jsonl:1", 2)


def test_bad_candidates_rows_are_named_by_file_row_field(client, tmp_path):
    cands = write_candidates(tmp_path / "bad.jsonl", rows=3, row1={"images": ["nowhere.png"]},
                             row2={"candidates": ["only one"]})
    r = client.post("/api/label/open", json={"candidates": str(cands)})
    err = r.json()["error"]
    assert r.status_code == 400 and err["field"] == "candidates"
    assert f"{cands}:2: field 'images[0]'" in err["message"] and "nowhere.png" in err["message"]
    assert f"{cands}:3: field 'candidates'" in err["message"] and "at least 2" in err["message"]
    assert not (tmp_path / "bad.labels.jsonl").exists() and not (tmp_path / "bad.pairs.jsonl").exists()


@pytest.mark.parametrize("body, status, field", [
    ({"candidates": "../../etc/passwd"}, 403, "candidates"),
    ({"candidates": "nowhere.jsonl"}, 404, "candidates"),
    ({"candidates": "CANDS", "labels": "/etc/labels.jsonl"}, 403, "labels"),
    ({"candidates": "CANDS", "pairs": "CANDS"}, 400, "pairs"),
    ({"candidates": "CANDS", "labels": "x.txt"}, 400, "labels"),
])
def test_open_refuses(client, tmp_path, body, status, field):
    cands = write_candidates(tmp_path / "c.jsonl")
    body = {k: v.replace("CANDS", str(cands)) for k, v in body.items()}
    r = client.post("/api/label/open", json=body)
    assert (r.status_code, r.json()["error"]["field"]) == (status, field), r.text


def test_decide_refuses_bad_indexes_and_ids(client, tmp_path):
    s = open_queue(client, write_candidates(tmp_path / "c.jsonl", answers=3))
    url = f"/api/label/{s['session']}"
    for body, field in (({"id": "q0", "best": 3}, "best"), ({"id": "q0", "best": -1}, "best"),
                        ({"id": "q0", "best": "1"}, "best"), ({"id": "q0", "best": 1, "worst": 1}, "worst"),
                        ({"id": "nope", "best": 0}, "id")):
        r = client.post(url + "/decide", json=body)
        assert (r.status_code, r.json()["error"]["field"]) == (400, field), (body, r.text)
    assert client.post(url + "/undo").status_code == 409  # nothing decided, nothing written
    assert not (tmp_path / "c.labels.jsonl").exists() or not read_jsonl(tmp_path / "c.labels.jsonl")
    assert client.get(url + "/item/9").status_code == 404
    assert client.get(url + "/image/0/5").status_code == 404
    assert client.get("/api/label/999").status_code == 404


def test_labels_of_another_candidates_file_are_refused(client, tmp_path):
    cands = write_candidates(tmp_path / "c.jsonl")
    labels = tmp_path / "other.labels.jsonl"
    labels.write_text(json.dumps({"id": "zz", "best": 0, "worst": None, "skip": False, "labeler": "a",
                                  "time": "2026-01-01T00:00:00+00:00"}) + "\n")
    r = client.post("/api/label/open", json={"candidates": str(cands), "labels": str(labels)})
    assert r.status_code == 400 and f"{labels}:1: field 'id'" in r.json()["error"]["message"]


def test_label_page_renders(client):
    html = client.get("/label").text
    assert "label.js" in html and 'name=candidates' in html


def test_images_outside_the_roots_are_refused_not_served(client, tmp_path):
    cands = write_candidates(tmp_path / "c.jsonl", rows=2, row1={"images": ["/etc/hostname"]})
    r = client.post("/api/label/open", json={"candidates": str(cands)})
    err = r.json()["error"]
    assert r.status_code == 403 and f"{cands}:2: field 'images[0]'" in err["message"] and "--root" in err["fix"]


def test_labels_from_the_page_are_judged_and_paired_by_the_cli(client, tmp_path, capsys):
    """The contract end to end: the page's labels file is what `vlmdpo judge --by labels` reads, and the
    pairs made from its scores pass `vlmdpo data check`."""
    from vlmdpo.cli import main

    cands = write_candidates(tmp_path / "c.jsonl", rows=3, answers=3)
    url = f"/api/label/{open_queue(client, cands)['session']}/decide"
    for body in ({"id": "q0", "best": 2}, {"id": "q1", "best": 0, "worst": 1}, {"id": "q2", "skip": True}):
        assert client.post(url, json=body).status_code == 200
    scored, pairs = tmp_path / "scored.jsonl", tmp_path / "pairs.jsonl"
    assert main(["judge", str(cands), "--by", "labels", "--labels", str(tmp_path / "c.labels.jsonl"),
                 "-o", str(scored)]) == 0
    assert {r["id"]: r["scores"] for r in read_jsonl(scored)} == {
        "q0": [0.0, 0.0, 1.0], "q1": [1.0, 0.0, 0.5], "q2": [None, None, None]}
    assert main(["pairs", str(scored), "-o", str(pairs)]) == 0
    assert [(p["chosen"][0]["content"][0]["text"], p["rejected"][0]["content"][0]["text"])
            for p in read_jsonl(pairs)] == [("answer 0.2", "answer 0.0"), ("answer 1.0", "answer 1.1")]
    assert data_check_ok(pairs) == 2
