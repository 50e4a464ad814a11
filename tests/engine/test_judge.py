"""`vlmdpo judge`: truth matching, the model judge's order swap, endpoints, resumption, the implicit reward."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from vlmdpo.cli import main
from vlmdpo.engine.judge import judge_file, model_scorer, truth_scorer
from vlmdpo.engine.endpoint import EndpointError, openai_messages
from vlmdpo.engine.judge_backends import endpoint_judge
from vlmdpo.engine.judge_io import JudgeError
from vlmdpo.engine.judge_model import parse_verdict
from vlmdpo.engine.judge_truth import is_right


def _row(i: int, candidates: list[str], truth=None, **meta) -> dict:
    row = {"id": f"r{i}", "prompt": [{"role": "user", "content": [{"type": "text", "text": f"question {i}?"}]}],
           "images": [], "candidates": candidates, "meta": meta, "source": f"p.jsonl:{i}"}
    if truth is not None:
        row["truth"] = truth
    return row


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("match, truth, right, wrong", [
    ("exact", "Paris", ["paris.", " Paris "], ["Paris, France", "Lyon"]),
    ("contains", "Paris", ["It is Paris.", "paris"], ["Parisian food", "Lyon"]),
    ("number", 3, ["There are 3 cats", "3.0"], ["There are 4 cats", "none", "13 cats"]),
    ("number", "2.5", ["2.5 metres"], ["25 metres"]),
    ("choice", "B", ["B", "The answer is (B)."], ["A", "A or B", "Bob"]),
])
def test_truth_matches(match, truth, right, wrong):
    assert all(is_right(a, truth, match) for a in right), right
    assert not any(is_right(a, truth, match) for a in wrong), wrong


def test_truth_choice_among_named_options():
    assert is_right("I think it is blue", "blue", "choice", ["red", "blue"])
    assert not is_right("red or blue", "blue", "choice", ["red", "blue"])


def test_truth_demo_rows_graded_like_the_demo(tmp_path):
    rows = [_row(0, ["The circle is red.", "The circle is red or blue.", "It is green."], "red",
                 question_kind="color")]
    out = tmp_path / "scored.jsonl"
    judge_file(_write(tmp_path / "c.jsonl", rows), out, truth_scorer("exact"))
    (got,) = _read(out)
    assert got["scores"] == [1.0, 0.0, 0.0]
    assert got["judge"]["match"] == "grounded:color"
    assert {k: got[k] for k in rows[0]} == rows[0]  # the row kept as it was


def test_wrong_type_truth_names_row_and_field_and_keeps_done_rows(tmp_path):
    rows = [_row(0, ["3"], 3), _row(1, ["4"], 4), _row(2, ["5"], {"value": 5}), _row(3, ["6"], 6)]
    src, out = _write(tmp_path / "c.jsonl", rows), tmp_path / "scored.jsonl"
    code = main(["judge", str(src), "--by", "truth", "--match", "number", "-o", str(out)])
    assert code == 2
    assert [r["id"] for r in _read(out)] == ["r0", "r1"]
    with pytest.raises(JudgeError, match=rf"{src}:3: field 'truth' is a dict"):
        judge_file(src, out, truth_scorer("number"))
    with pytest.raises(JudgeError, match=r"c.jsonl:1: field 'truth' is missing"):
        judge_file(_write(tmp_path / "c.jsonl", [_row(0, ["x"])]), tmp_path / "o2.jsonl", truth_scorer())


def test_resume_after_a_kill_mid_line(tmp_path, capsys):
    rows = [_row(i, [f"answer {i}", "nothing"], f"answer {i}") for i in range(6)]
    src, out = _write(tmp_path / "c.jsonl", rows), tmp_path / "scored.jsonl"
    assert main(["judge", str(src), "--by", "truth", "-o", str(out)]) == 0
    full = out.read_text(encoding="utf-8")
    cut = full.index("\n", len(full) // 2) + 20  # a kill while writing the row after the middle
    out.write_text(full[:cut], encoding="utf-8")
    assert main(["judge", str(src), "--by", "truth", "-o", str(out)]) == 0
    assert "already there" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == full  # nothing lost, nothing twice, same order
    assert [r["scores"] for r in _read(out)] == [[1.0, 0.0]] * 6


@pytest.mark.parametrize("reply, verdict", [("A", "A"), (" b. ", "B"), ("A is vague.\nAnswer: B", "B"),
                                            ("Both are fine.\nB", "B"), ("no idea", None), ("A and B", None)])
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_model_judge_asks_both_orders_so_position_bias_cancels(tmp_path):
    asked = []

    def always_a(messages, images):
        asked.append(messages[0]["content"][-1]["text"])
        return "A"

    out = tmp_path / "scored.jsonl"
    judge_file(_write(tmp_path / "c.jsonl", [_row(0, ["red", "blue", "green"])]), out, model_scorer(always_a))
    (got,) = _read(out)
    assert got["scores"] == [0.5, 0.5, 0.5]
    assert len(asked) == 6 and len(got["judge"]["comparisons"]) == 6
    assert {(c["a"], c["b"]) for c in got["judge"]["comparisons"]} == {(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)}


def test_model_judge_consistent_winner_and_unparseable_ties(tmp_path):
    def prefers_blue(messages, images):
        text = messages[0]["content"][-1]["text"]
        a = text.split("Answer A:\n")[1].split("\n")[0]
        b = text.split("Answer B:\n")[1].split("\n")[0]
        return "A" if a == "blue" else "B" if b == "blue" else "cannot tell"

    out = tmp_path / "scored.jsonl"
    judge_file(_write(tmp_path / "c.jsonl", [_row(0, ["red", "blue", "green"])]), out, model_scorer(prefers_blue))
    (got,) = _read(out)
    assert got["scores"] == [0.25, 1.0, 0.25]
    assert sum(c["verdict"] == "unparseable (tie)" for c in got["judge"]["comparisons"]) == 2


class _AlwaysA(BaseHTTPRequestHandler):
    reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Answer: A"}}]}).encode()

    def _send(self, data: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        assert self.path == "/v1/models"
        self._send(json.dumps({"object": "list", "data": [{"id": "judge-m", "object": "model"}]}).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions" and body["messages"][0]["role"] == "user"
        assert body["model"] == "judge-m" and body["temperature"] == 0
        self._send(self.reply)

    def log_message(self, *args):
        pass


def test_endpoint_judge_and_a_down_endpoint(tmp_path, capsys):
    server = HTTPServer(("127.0.0.1", 0), _AlwaysA)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    src, out = _write(tmp_path / "c.jsonl", [_row(0, ["x", "y"]), _row(1, ["p", "q"])]), tmp_path / "s.jsonl"
    try:
        assert main(["judge", str(src), "--by", "model", "--endpoint", url, "-o", str(out)]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert [r["scores"] for r in _read(out)] == [[0.5, 0.5], [0.5, 0.5]]
    more = _write(tmp_path / "c.jsonl", [_row(0, ["x", "y"]), _row(1, ["p", "q"]), _row(2, ["s", "t"])])
    assert main(["judge", str(more), "--by", "model", "--endpoint", url, "-o", str(out)]) == 2  # now down
    err = capsys.readouterr().err
    assert f"the endpoint {url}/v1 did not answer" in err and "Traceback" not in err
    assert [r["id"] for r in _read(out)] == ["r0", "r1"]


class _Garbage(_AlwaysA):
    reply = json.dumps({"error": "oops"}).encode()


def test_endpoint_garbage_reply_is_one_clear_error():
    server = HTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ask = endpoint_judge(f"http://127.0.0.1:{server.server_port}/v1/", None, max_new_tokens=8)
        with pytest.raises(EndpointError, match="answered without choices.0..message.content"):
            ask([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], [])
    finally:
        server.shutdown()
        server.server_close()


def test_missing_image_names_the_row_and_keeps_done_rows(tmp_path, capsys):
    rows = [_row(0, ["x", "y"]), {**_row(1, ["p", "q"]), "images": [str(tmp_path / "gone.png")]}]
    rows[1]["prompt"][0]["content"].insert(0, {"type": "image"})
    src, out = _write(tmp_path / "c.jsonl", rows), tmp_path / "s.jsonl"
    judge_reads_images = lambda messages, images: openai_messages(messages, images) and "A"  # noqa: E731
    with pytest.raises(JudgeError, match=rf"{src}:2: field 'images': .*gone.png"):
        judge_file(src, out, model_scorer(judge_reads_images))
    assert [r["id"] for r in _read(out)] == ["r0"]


def test_implicit_reward_of_an_adapter_against_its_base(tmp_path):
    from judge_helpers import causal_lm_adapter

    adapter = causal_lm_adapter(tmp_path / "lora")
    src = _write(tmp_path / "c.jsonl", [_row(0, ["yes", "no, never"]), _row(1, ["blue"])])
    tuned, same = tmp_path / "tuned.jsonl", tmp_path / "same.jsonl"
    base = ["--base", "tiny:causal_lm", "--beta", "0.5", "--device", "cpu"]
    assert main(["judge", str(src), "--by", "implicit", "--tuned", str(adapter), *base, "-o", str(tuned)]) == 0
    assert main(["judge", str(src), "--by", "implicit", "--tuned", "tiny:causal_lm", *base, "-o", str(same)]) == 0
    scored = _read(tuned)
    assert all(s is not None and abs(s) > 1e-4 for r in scored for s in r["scores"])
    assert [len(r["scores"]) for r in scored] == [2, 1]
    r0 = scored[0]
    assert r0["scores"][0] == pytest.approx(0.5 * (r0["judge"]["tuned_logps"][0] - r0["judge"]["base_logps"][0]))
    assert all(s == 0.0 for r in _read(same) for s in r["scores"])
