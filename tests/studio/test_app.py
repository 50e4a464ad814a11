"""The studio's shell: path confinement, the token gate, the error shape and the command line."""
from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient

from vlmdpo.studio.app import create_app
from vlmdpo.studio.cli_args import studio_url
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome


@pytest.fixture
def home(tmp_path):
    return StudioHome(tmp_path / "home", extra_roots=(tmp_path / "data",))


def test_confine_accepts_paths_under_the_roots(home, tmp_path):
    (tmp_path / "data").mkdir()
    assert home.confine("uploads/x.jsonl", field="path") == home.root / "uploads" / "x.jsonl"
    assert home.confine(str(tmp_path / "data" / "a.jsonl"), field="path") == (tmp_path / "data" / "a.jsonl").resolve()


@pytest.mark.parametrize("bad", ["../escape.jsonl", "uploads/../../escape", "/etc/passwd"])
def test_confine_refuses_escapes(home, bad):
    with pytest.raises(StudioError) as err:
        home.confine(bad, field="path")
    assert err.value.status == 403 and err.value.field == "path" and "--root" in err.value.fix


def test_confine_refuses_a_symlink_out(home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, home.root / "uploads" / "link")
    with pytest.raises(StudioError):
        home.confine("uploads/link/file.jsonl", field="path")


def test_settings_persist_across_homes(home):
    home.set_setting("base_model", "tiny:idefics3")
    assert StudioHome(home.root).setting("base_model") == "tiny:idefics3"


def test_token_gate(home):
    client = TestClient(create_app(home, token="s3cret"))
    refused = client.get("/static/studio.css")
    assert refused.status_code == 401 and refused.json()["error"]["field"] == "token"
    assert client.get("/static/studio.css", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/static/studio.css?token=s3cret").status_code == 200
    assert client.get("/static/studio.css").status_code == 200  # the cookie the printed URL set


def test_no_token_on_localhost(home):
    client = TestClient(create_app(home))
    assert client.get("/", follow_redirects=False).headers["location"] == "/data"


def test_url_printed():
    assert studio_url("0.0.0.0", 7860, "t") == "http://127.0.0.1:7860/?token=t"
    assert studio_url("127.0.0.1", 9000, None) == "http://127.0.0.1:9000/"
