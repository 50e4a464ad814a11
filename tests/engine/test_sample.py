"""`vlmdpo sample` on tiny:idefics3: the candidates rows, resumption after a torn file, and endpoint mode
against a live `vlmdpo serve` (and one that is down)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmdpo.cli import main
from vlmdpo.engine.endpoint import Endpoint, EndpointError, base_url
from vlmdpo.engine.jsonl import done_ids
from vlmdpo.engine.sample import SampleOptions, endpoint_answerer, model_answerer, sample_file
from vlmdpo.net import free_port

PREFS = Path(__file__).resolve().parents[2] / "src" / "vlmdpo" / "samples" / "trl" / "prefs.jsonl"
OPTIONS = SampleOptions(n=2, temperature=0.9, max_new_tokens=4, seed=0)


@pytest.fixture(scope="module")
def tiny():
    from vlmdpo.inference import load_for_inference

    return load_for_inference("tiny:idefics3", device="cpu")


@pytest.fixture(scope="module")
def full_run(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "candidates.jsonl"
    sample_file(PREFS, out, model_answerer(tiny, OPTIONS), OPTIONS, progress=False)
    return out


def test_rows_follow_the_candidates_format(full_run: Path):
    rows = [json.loads(line) for line in full_run.read_text().splitlines()]
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8 and sum(bool(r["images"]) for r in rows) >= 2
    for r in rows:
        assert len(r["candidates"]) == 2 and all(isinstance(c, str) for c in r["candidates"])
        assert r["prompt"][-1]["role"] == "user"
        assert all(Path(p).is_absolute() and Path(p).exists() for p in r["images"])
        assert r["source"].endswith(f"prefs.jsonl:{rows.index(r) + 1}")
        assert isinstance(r["meta"], dict) and "truth" not in r


def test_resume_after_a_torn_file_gives_the_same_rows(tiny, full_run: Path, tmp_path: Path):
    text = full_run.read_text()
    lines = text.splitlines(keepends=True)
    out = tmp_path / "c.jsonl"
    # the last row removed, and the one before it cut mid-line (a kill while writing it)
    out.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    message = sample_file(PREFS, out, model_answerer(tiny, OPTIONS), OPTIONS, progress=False)
    assert out.read_text() == text
    assert "sampled 2 prompt(s)" in message and "6 already there" in message
    # a second run over a complete file adds nothing
    sample_file(PREFS, out, model_answerer(tiny, OPTIONS), OPTIONS, progress=False)
    assert out.read_text() == text


@pytest.mark.parametrize("cut", [4, 5])  # a cut at a batch's edge, and one inside a batch (rows 4-6 are one)
def test_resume_inside_a_batch_gives_the_same_rows(tiny, tmp_path: Path, cut: int):
    options = SampleOptions(n=2, temperature=0.9, max_new_tokens=4, seed=0, batch_size=3)
    whole = tmp_path / "whole.jsonl"
    sample_file(PREFS, whole, model_answerer(tiny, options), options, progress=False)
    lines = whole.read_text().splitlines(keepends=True)
    out = tmp_path / "cut.jsonl"
    out.write_text("".join(lines[:cut]))
    message = sample_file(PREFS, out, model_answerer(tiny, options), options, progress=False)
    assert out.read_text() == whole.read_text() and f"sampled {8 - cut} prompt(s)" in message


def test_batched_prompts_answer_as_one_prompt_at_a_time(tiny, tmp_path: Path):
    # greedy, so the texts depend on the model alone: sampling prompts together (left-padded, rows with and
    # without images in their own calls) must not change what each prompt is answered
    texts = {}
    for batch_size in (1, 8):
        options = SampleOptions(n=2, temperature=0.0, max_new_tokens=6, seed=0, batch_size=batch_size)
        out = tmp_path / f"b{batch_size}.jsonl"
        sample_file(PREFS, out, model_answerer(tiny, options), options, progress=False)
        texts[batch_size] = [json.loads(line)["candidates"] for line in out.read_text().splitlines()]
    assert texts[1] == texts[8] and len(texts[1]) == 8


def test_done_ids_drops_a_complete_looking_but_broken_last_line(tmp_path: Path):
    out = tmp_path / "c.jsonl"
    out.write_text('{"id": "a"}\n{"id": "b", "cand\n')
    assert done_ids(out) == {"a"} and out.read_text() == '{"id": "a"}\n'
    out.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        done_ids(out)


def test_cli_sample_then_bad_options(tmp_path: Path, capsys):
    out = tmp_path / "c.jsonl"
    assert main(["sample", "--model", "tiny:idefics3", "--device", "cpu", "--data", str(PREFS), "-n", "1",
                 "--max-new-tokens", "2", "-o", str(out), "--no-progress"]) == 0
    assert "sampled 8 prompt(s) x 1 answer(s)" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 8
    for bad in (["-n", "0"], ["--batch-size", "0"]):
        assert main(["sample", "--model", "tiny:idefics3", "--data", str(PREFS), *bad, "-o", str(out)]) == 2
        assert "-n, --max-new-tokens and --batch-size must be at least 1" in capsys.readouterr().err


def test_truth_and_meta_are_copied(tiny, tmp_path: Path):
    src = json.loads(PREFS.read_text().splitlines()[0])
    src["images"] = [str(PREFS.parent / p) for p in src["images"]]
    src["truth"] = "square"
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps(src) + "\n")
    out = tmp_path / "c.jsonl"
    sample_file(data, out, model_answerer(tiny, OPTIONS), OPTIONS, progress=False)
    row = json.loads(out.read_text())
    assert row["truth"] == "square" and row["meta"]["truth"] == "square"
    assert row["source"].endswith("p.jsonl:1")


@pytest.fixture(scope="module")
def server():
    from vlmdpo.serve.app import ServerOptions, create_app
    from vlmdpo.serve.server import BackgroundServer, EngineOptions, load_served

    served = load_served(["base=tiny:idefics3"], EngineOptions(device="cpu", max_images=2, max_concurrency=4))
    with BackgroundServer(create_app(served, ServerOptions(default_max_tokens=4))) as url:
        yield url
    for entry in served.values():
        entry.engine.close()


@pytest.mark.parametrize("use_openai", [True, False], ids=["openai", "httpx"])
def test_endpoint_mode_against_vlmdpo_serve(server: str, tmp_path: Path, use_openai: bool):
    endpoint = Endpoint(server, api_key=None, use_openai=use_openai)
    assert endpoint.model == "base"  # the first model the server lists
    out = tmp_path / "c.jsonl"
    sample_file(PREFS, out, endpoint_answerer(endpoint, OPTIONS), OPTIONS, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["candidates"]) == 2 for r in rows)
    again = tmp_path / "again.jsonl"  # seeded per prompt and answer: the same text again
    sample_file(PREFS, again, endpoint_answerer(endpoint, OPTIONS), OPTIONS, progress=False)
    assert again.read_text() == out.read_text()


class CountingClient:
    """An endpoint stand-in whose answer is its prompt and seed; counts the requests."""

    def __init__(self):
        self.requests = 0

    def complete(self, prompt, images, **settings) -> str:
        self.requests += 1
        return f"{prompt[:8]} {settings['seed']}"


def test_endpoint_resume_inside_a_batch_asks_only_for_the_missing_prompts(tmp_path: Path):
    options = SampleOptions(n=2, max_new_tokens=4, seed=0, batch_size=4)
    whole = tmp_path / "whole.jsonl"
    sample_file(PREFS, whole, endpoint_answerer(CountingClient(), options), options, progress=False)
    lines = whole.read_text().splitlines(keepends=True)
    out = tmp_path / "cut.jsonl"
    out.write_text("".join(lines[:2]))  # cut after two prompts of the first batch of four
    client = CountingClient()
    sample_file(PREFS, out, endpoint_answerer(client, options), options, progress=False)
    assert out.read_text() == whole.read_text()
    assert client.requests == (len(lines) - 2) * options.n


def test_cli_endpoint(server: str, tmp_path: Path, capsys):
    out = tmp_path / "c.jsonl"
    assert main(["sample", "--endpoint", server + "/v1/", "--served-model", "base", "--data", str(PREFS), "-n", "1",
                 "--max-new-tokens", "2", "-o", str(out), "--no-progress"]) == 0
    assert len(out.read_text().splitlines()) == 8


@pytest.mark.parametrize("use_openai", [True, False], ids=["openai", "httpx"])
def test_a_down_endpoint_is_one_clear_error(use_openai: bool):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EndpointError, match=rf"endpoint {url}/v1 did not answer") as info:
        Endpoint(url, use_openai=use_openai)
    assert "vlmdpo serve" in str(info.value)


def test_endpoint_down_midway_keeps_rows_done(server: str, tmp_path: Path, capsys):
    out = tmp_path / "c.jsonl"
    out.write_text('{"id": "shapes-1", "candidates": ["x"]}\n')
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["sample", "--endpoint", url, "--served-model", "base", "--data", str(PREFS), "-n", "1",
                 "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{url}/v1 did not answer" in err and "Traceback" not in err
    assert out.read_text() == '{"id": "shapes-1", "candidates": ["x"]}\n'


def test_base_url():
    assert base_url("http://h:1") == base_url("http://h:1/v1/") == "http://h:1/v1"
