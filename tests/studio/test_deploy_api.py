"""The Export & deploy API: refusals naming the field, the adapter export, a serve that fails to start
reported with its log tail, and the endpoint snippets."""
from __future__ import annotations

import socket
import time

import pytest

from studio_helpers import add_run

from vlmdpo.studio.deploy import MANIFEST, snippets


@pytest.fixture
def run(studio_home, tiny_run, tmp_path):
    return add_run(studio_home, tiny_run, tmp_path / "run")


def test_adapter_export_copies_the_run_without_its_checkpoints(client, run, tmp_path):
    (run / "checkpoint-1").mkdir()
    r = client.post("/api/deploy/export", json={"source": str(run), "mode": "adapter"})
    x = r.json()
    assert r.status_code == 200 and x["status"] == "finished", r.text
    out = tmp_path / "studio" / "exports" / "run-adapter"
    assert x["output_dir"] == str(out) and (out / "adapter_config.json").is_file() and (out / MANIFEST).is_file()
    assert not (out / "checkpoint-1").exists() and "adapter_model.safetensors" in x["log"]
    again = client.post("/api/deploy/export", json={"source": str(run), "mode": "adapter"})
    assert again.status_code == 409 and again.json()["error"]["field"] == "output"
    forced = client.post("/api/deploy/export", json={"source": str(run), "mode": "adapter", "force": True})
    assert forced.json()["status"] == "finished"
    assert [e["id"] for e in client.get("/api/deploy/state").json()["exports"]] == [forced.json()["id"], x["id"]]


@pytest.mark.parametrize("body, status, field", [
    ({"source": "../../etc"}, 403, "source"),
    ({"source": "no-such-run"}, 404, "source"),
    ({"source": "RUN", "mode": "gguf"}, 400, "mode"),
    ({"source": "RUN", "dtype": "int3"}, 400, "dtype"),
    ({"source": "RUN", "output": "RUN/inside"}, 400, "output"),
    ({"source": "RUN", "output": "/etc/out"}, 403, "output"),
    ({"source": "PLAIN", "mode": "adapter"}, 400, "mode"),
])
def test_export_refuses(client, tmp_path, body, status, field):
    (tmp_path / "run").mkdir()
    (tmp_path / "plain").mkdir()
    body = {k: v.replace("RUN", str(tmp_path / "run")).replace("PLAIN", str(tmp_path / "plain"))
            for k, v in body.items()}
    r = client.post("/api/deploy/export", json=body)
    assert (r.status_code, r.json()["error"]["field"]) == (status, field), r.text
    assert client.get("/api/deploy/state").json()["exports"] == []  # nothing half-recorded


def test_an_export_and_a_serve_that_fail_show_their_logs(client, tmp_path):
    (tmp_path / "empty").mkdir()  # both processes run at once: the test waits for the slower only
    x = client.post("/api/deploy/export", json={"source": str(tmp_path / "empty")}).json()
    s = client.post("/api/deploy/serve", json={"source": "tiny:no_such_family", "name": "broken"}).json()
    assert (x["status"], s["status"], s["name"]) == ("running", "starting", "broken")
    deadline = time.monotonic() + 120
    while (x["status"] == "running" or s["status"] == "starting") and time.monotonic() < deadline:
        time.sleep(0.3)
        x = client.get(f"/api/deploy/exports/{x['id']}").json()
        s = client.get(f"/api/deploy/servers/{s['id']}").json()
    assert x["status"] == "failed" and "export failed" in x["message"] and "error" in x["message"]
    assert s["status"] == "failed" and "unknown tiny model 'tiny:no_such_family'" in s["message"]


@pytest.mark.parametrize("body, status, field", [
    ({"source": "tiny:idefics3", "port": 80}, 400, "port"),
    ({"source": "tiny:idefics3", "port": "x"}, 400, "port"),
    ({"source": "tiny:idefics3", "name": "==="}, 400, "name"),
    ({"source": "/etc"}, 403, "source"),
    ({"source": ""}, 400, "source"),
])
def test_serve_refuses(client, body, status, field):
    r = client.post("/api/deploy/serve", json=body)
    assert (r.status_code, r.json()["error"]["field"]) == (status, field), r.text
    assert client.get("/api/deploy/state").json()["servers"] == []


def test_serve_refuses_a_port_in_use(client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = client.post("/api/deploy/serve", json={"source": "tiny:idefics3", "port": s.getsockname()[1]})
    assert (r.status_code, r.json()["error"]["field"]) == (409, "port")


def test_unknown_ids(client):
    assert client.get("/api/deploy/servers/99").status_code == 404
    assert client.post("/api/deploy/servers/99/stop").status_code == 404
    assert client.get("/api/deploy/exports/99").status_code == 404


def test_snippets_carry_the_model_name_and_port():
    s = snippets("my-model", 8123)
    assert s["url"] == "http://127.0.0.1:8123/v1"
    assert "curl http://127.0.0.1:8123/v1/chat/completions" in s["curl"] and '"model": "my-model"' in s["curl"]
    compile(s["python"], "snippet", "exec")
    assert 'model="my-model"' in s["python"] and 'base_url="http://127.0.0.1:8123/v1"' in s["python"]
