"""The Lab page's API without generating: request checks, uploads, verdicts written to files that pass
`vlmdpo data check`, ties kept apart, and a worker that cannot start reported with its log tail."""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from studio_helpers import IMAGES, add_run, data_check_ok, prompt, read_jsonl

from vlmdpo.studio.app import create_app


@pytest.fixture
def tuned(tmp_path):
    (tmp_path / "tuned").mkdir()
    shutil.copy(IMAGES / "red_square.png", tmp_path / "red.png")  # inside the studio's roots
    return str(tmp_path / "tuned")


def body(folder, **changes):
    return {"base": "tiny:idefics3", "tuned": folder, "images": [str(Path(folder).parent / "red.png")],
            "prompt": "What shape?", "answers": ["A red square.", "A blue circle."], **changes}


def png_uri(name="red_square.png"):
    return "data:image/png;base64," + base64.b64encode((IMAGES / name).read_bytes()).decode()


def test_left_better_appends_a_pair_that_passes_data_check(client, tmp_path, tuned):
    r = client.post("/api/lab/prefer", json=body(tuned, choice="left", dataset=str(tmp_path / "d" / "pairs.jsonl")))
    assert r.status_code == 200, r.text
    r = client.post("/api/lab/prefer", json=body(tuned, choice="right", dataset=str(tmp_path / "d" / "pairs.jsonl")))
    assert r.json() == {**r.json(), "rows": 2, "kind": "pair"}
    rows = read_jsonl(tmp_path / "d" / "pairs.jsonl")
    texts = [(row["chosen"][0]["content"][0]["text"], row["rejected"][0]["content"][0]["text"]) for row in rows]
    assert texts == [("A red square.", "A blue circle."), ("A blue circle.", "A red square.")]
    assert rows[0]["prompt"] == prompt("What shape?") and rows[0]["images"] == [str(tmp_path / "red.png")]
    assert rows[0]["meta"]["left"] == "tiny:idefics3" and rows[0]["meta"]["better"] == "left"
    assert data_check_ok(tmp_path / "d" / "pairs.jsonl") == 2


def test_a_tie_goes_to_the_ties_file_in_candidates_format(client, tmp_path, tuned):
    r = client.post("/api/lab/prefer", json=body(tuned, choice="tie", dataset=str(tmp_path / "pairs.jsonl")))
    assert r.json()["kind"] == "tie" and r.json()["path"] == str(tmp_path / "pairs.ties.jsonl")
    assert not (tmp_path / "pairs.jsonl").exists()
    row = read_jsonl(tmp_path / "pairs.ties.jsonl")[0]
    assert row["candidates"] == ["A red square.", "A blue circle."] and row["prompt"] == prompt("What shape?")


@pytest.mark.parametrize("changes, status, field", [
    ({"choice": "left", "answers": ["same", " same "]}, 400, "choice"),
    ({"choice": "left", "answers": ["", "x"]}, 400, "answers"),  # data check: chosen empty
    ({"choice": "maybe"}, 400, "choice"),
    ({"choice": "left", "answers": ["one"]}, 400, "answers"),
    ({"choice": "left", "dataset": "pairs.txt"}, 400, "dataset"),
    ({"choice": "left", "dataset": "../../out.jsonl"}, 403, "dataset"),
    ({"choice": "left", "images": ["/etc/hostname"]}, 403, "images"),
    ({"choice": "left", "images": ["nope.png"]}, 404, "images"),
    ({"choice": "left", "prompt": "  "}, 400, "prompt"),
    ({"choice": "left", "base": ""}, 400, "base"),
    ({"choice": "left", "tuned": "/etc"}, 403, "tuned"),
    ({"choice": "left", "tuned": "no/such/folder"}, 404, "tuned"),
    ({"choice": "left", "temperature": 3}, 400, "temperature"),
    ({"choice": "left", "max_tokens": 1.5}, 400, "max_tokens"),
    ({"choice": "left", "seed": "x"}, 400, "seed"),
])
def test_prefer_refuses_and_writes_nothing(client, tmp_path, tuned, changes, status, field):
    r = client.post("/api/lab/prefer", json={"dataset": str(tmp_path / "pairs.jsonl"), **body(tuned, **changes)})
    assert (r.status_code, r.json()["error"]["field"]) == (status, field), r.text
    assert r.json()["error"]["fix"]
    assert not (tmp_path / "pairs.jsonl").exists()


def test_upload_stores_an_image_once_and_serves_it(client, studio_home):
    first = client.post("/api/lab/upload", json={"name": "a.png", "data": png_uri()}).json()["path"]
    again = client.post("/api/lab/upload", json={"name": "b.png", "data": png_uri()}).json()["path"]
    assert first == again and first.startswith(str(studio_home.root / "uploads" / "lab"))
    assert client.get("/api/lab/image", params={"path": first}).content == (IMAGES / "red_square.png").read_bytes()


@pytest.mark.parametrize("data, status", [
    ("hello", 400), ("data:text/plain;base64,aGVsbG8=", 400), ("data:image/png;base64,@@@", 400),
    ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), 400),
])
def test_bad_uploads(client, data, status):
    r = client.post("/api/lab/upload", json={"data": data})
    assert (r.status_code, r.json()["error"]["field"]) == (status, "images")


def test_upload_over_the_limit(tmp_path):
    from vlmdpo.studio.home import StudioHome

    client = TestClient(create_app(StudioHome(tmp_path / "h", max_upload_mb=0.0001)))
    r = client.post("/api/lab/upload", json={"data": png_uri()})
    assert r.status_code == 413


def test_image_route_is_confined(client):
    assert client.get("/api/lab/image", params={"path": "/etc/hostname"}).status_code == 403
    assert client.get("/api/lab/image", params={"path": "studio.sqlite"}).status_code == 400


def test_a_worker_that_cannot_start_is_an_error_with_its_log(client, studio_home):
    r = client.post("/api/lab/worker", json={"base": "tiny:no_such_family", "tuned": "tiny:idefics3"})
    err = r.json()["error"]
    assert r.status_code == 502 and err["field"] == "model" and "did not start" in err["message"]
    assert "no_such_family" in err["message"]  # the log tail says what was wrong
    assert client.get("/api/lab/models").json()["worker"] is None


def test_lab_page_and_models(client, studio_home, tmp_path):
    assert "lab.js" in client.get("/lab").text
    assert client.get("/api/lab/models").json() == {"runs": [], "worker": None}


def test_the_studio_stops_its_lab_worker_at_exit_but_not_deployed_servers(studio_home):
    import subprocess
    import sys
    import time as clock

    from vlmdpo.studio import servers

    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "vlmdpo"],
                                 start_new_session=True) for _ in range(2)]
    with studio_home.db() as con:
        for kind, proc in zip(("lab", "deploy"), sleepers):
            con.execute("INSERT INTO servers(kind, models, port, pid, status, log_path, created, updated) "
                        "VALUES(?, '[]', 1, ?, 'running', '', ?, ?)", (kind, proc.pid, clock.time(), clock.time()))
    try:
        with TestClient(create_app(studio_home)):
            pass
        assert sleepers[0].wait(timeout=20) is not None
        assert sleepers[1].poll() is None  # an endpoint outlives the studio
        assert [r["status"] for r in servers.servers(studio_home, "lab")] == ["stopped"]
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("route, changes, field", [
    ("/api/lab/generate", {"prompt": ""}, "prompt"),
    ("/api/lab/generate", {"images": ["../../../etc/passwd"]}, "images"),
    ("/api/lab/generate", {"top_p": 0}, "top_p"),
    ("/api/lab/reward", {"answers": "one"}, "answers"),
    ("/api/lab/reward", {"beta": -1}, "beta"),
    ("/api/lab/worker", {"tuned": "../.."}, "tuned"),
])
def test_generate_reward_and_worker_refuse_before_starting_anything(client, studio_home, tuned, route, changes, field):
    r = client.post(route, json=body(tuned, **changes))
    assert r.status_code in (400, 403) and r.json()["error"]["field"] == field, r.text
    assert client.delete("/api/lab/worker").json() == {"stopped": []}  # no worker was started


def test_models_lists_each_run_with_its_base_beta_and_models(client, studio_home, tiny_run, tmp_path):

    run = add_run(studio_home, tiny_run, tmp_path / "run")
    with studio_home.db() as con:  # a run still starting has no folder yet
        con.execute("INSERT INTO runs(name, output_dir, config_path, status, created, updated) "
                    "VALUES('new', ?, '', 'starting', 0, 0)", (str(tmp_path / "not-yet"),))
    new, done = client.get("/api/lab/models").json()["runs"]
    assert (new["name"], new["models"]) == ("new", [])
    assert (done["base"], done["beta"]) == ("tiny:idefics3", 0.3)
    assert [(m["name"], m["path"], m["step"]) for m in done["models"]] == [("final", str(run), 1)]
