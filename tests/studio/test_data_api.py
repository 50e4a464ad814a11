"""The Data page's routes: folder listing, uploads (zip-slip, size limit, nothing half-written), check,
preview, one row, the image route and stats, with every path confined to the studio's roots."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient
from studio_helpers import demo_data

from vlmdpo.studio.app import create_app
from vlmdpo.studio.home import StudioHome


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_data(tmp_path_factory.mktemp("data"), n_train=8)


@pytest.fixture
def home_with_demo(tmp_path, demo):
    return StudioHome(tmp_path / "studio", extra_roots=(demo,))


def _uploads(home) -> list[str]:
    return sorted(p.name for p in (home.root / "uploads").iterdir())


ROW = {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}],
       "chosen": [{"role": "assistant", "content": "A dot."}], "rejected": [{"role": "assistant", "content": "A cat."}],
       "images": ["img/a.png"]}


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ browse
def test_browse_lists_roots_then_folders(client, studio_home, tmp_path):
    roots = client.get("/api/data/browse").json()
    assert [e["path"] for e in roots["entries"]] == [str(r) for r in studio_home.roots]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.jsonl").write_text("{}\n")
    listed = client.get("/api/data/browse", params={"path": str(tmp_path / "sub")}).json()
    assert listed["entries"] == [{"name": "x.jsonl", "path": str(tmp_path / "sub" / "x.jsonl"), "kind": "file",
                                  "size": 3}]
    assert listed["parent"] == str(tmp_path)


@pytest.mark.parametrize("path, status", [("/etc", 403), ("../..", 403), ("uploads/nothing-here", 404)])
def test_browse_refuses_escapes_and_missing(client, path, status):
    response = client.get("/api/data/browse", params={"path": path})
    assert response.status_code == status and response.json()["error"]["field"] == "path"


# ------------------------------------------------------------------------------------------ upload
def test_upload_files_then_check_them(client, studio_home):
    files = [("files", ("prefs.jsonl", json.dumps(ROW) + "\n", "application/json")),
             ("files", ("img/a.png", _png(), "image/png"))]
    r = client.post("/api/data/upload", params={"name": "mine"}, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["files"] == ["img/a.png", "prefs.jsonl"] and r.json()["data_files"] == ["prefs.jsonl"]
    check = client.get("/api/data/check", params={"path": "uploads/mine/prefs.jsonl"}).json()
    assert check["ok"] and check["kept"] == 1
    again = client.post("/api/data/upload", params={"name": "mine"}, files=files)
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_upload_a_zip_is_extracted(client, studio_home):
    data = _zip({"set/prefs.jsonl": (json.dumps(ROW) + "\n").encode(), "set/img/a.png": _png()})
    r = client.post("/api/data/upload", params={"name": "zipped"},
                    files=[("files", ("d.zip", data, "application/zip"))])
    assert r.status_code == 200, r.text
    assert r.json()["files"] == ["set/img/a.png", "set/prefs.jsonl"]
    assert client.get("/api/data/check", params={"path": "uploads/zipped/set"}).json()["ok"]


@pytest.mark.parametrize("members", [{"../evil.jsonl": b"{}"}, {"/abs/evil.jsonl": b"{}"},
                                     {"ok.jsonl": b"{}", "a/../../evil.jsonl": b"{}"}])
def test_zip_slip_is_refused_and_nothing_is_left(client, studio_home, tmp_path, members):
    r = client.post("/api/data/upload", params={"name": "slip"},
                    files=[("files", ("d.zip", _zip(members), "application/zip"))])
    assert r.status_code == 400 and r.json()["error"]["field"] == "files"
    assert "outside the upload" in r.json()["error"]["message"]
    assert _uploads(studio_home) == [] and not (tmp_path / "evil.jsonl").exists()
    assert not (studio_home.root / "evil.jsonl").exists()


def test_oversize_upload_is_refused_while_streaming(tmp_path):
    home = StudioHome(tmp_path / "small", max_upload_mb=0.01)
    client = TestClient(create_app(home))
    big = [("files", ("big.jsonl", b"x" * 20_000, "application/json"))]
    r = client.post("/api/data/upload", params={"name": "big"}, files=big)
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["error"]["fix"]
    bomb = _zip({"a.jsonl": b"0" * 200_000})  # compresses far below the limit, expands far above it
    assert len(bomb) < 10_000
    r = client.post("/api/data/upload", params={"name": "bomb"}, files=[("files", ("b.zip", bomb, "application/zip"))])
    assert r.status_code == 413
    body = (b"--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jsonl\"\r\n\r\n"
            + b"x" * 20_000 + b"\r\n--B--\r\n")
    chunked = (body[i:i + 4096] for i in range(0, len(body), 4096))  # no content-length: counted as it streams
    r = client.post("/api/data/upload", params={"name": "chunked"}, content=chunked,
                    headers={"content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 413
    assert _uploads(home) == []


@pytest.mark.parametrize("name, files, field", [
    ("x", [("files", ("run.sh", b"rm -rf /", "text/plain"))], "files"),
    ("x", [("files", ("bad.zip", b"not a zip", "application/zip"))], "files"),
    ("../up", [("files", ("a.jsonl", b"{}", "application/json"))], "name"),
    ("", [("files", ("a.jsonl", b"{}", "application/json"))], "name"),
])
def test_bad_uploads_name_the_field_and_leave_nothing(client, studio_home, name, files, field):
    r = client.post("/api/data/upload", params={"name": name}, files=files)
    assert r.status_code == 400 and r.json()["error"]["field"] == field
    assert _uploads(studio_home) == []


def test_upload_without_files(client, studio_home):
    r = client.post("/api/data/upload", params={"name": "empty"}, data={"other": "1"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "files"
    assert client.post("/api/data/upload", params={"name": "raw"}, content=b"{}",
                       headers={"content-type": "application/json"}).status_code == 400


# ------------------------------------------------------------------------- check, preview, row, image
def _bad_file(tmp_path):
    rows = [ROW, {**ROW, "chosen": [{"role": "assistant", "content": "  "}]}, {**ROW, "images": []}]
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "img" / "a.png").write_bytes(_png())
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    return path


def test_check_groups_problems_with_file_row_field(client, tmp_path):
    path = _bad_file(tmp_path)
    r = client.get("/api/data/check", params={"path": str(path)}).json()
    assert not r["ok"] and r["read"] == 4 and r["kept"] == 1
    where = {e["where"]: e for g in r["groups"] for e in g["errors"]}
    assert set(where) == {f"{path}:2", f"{path}:3", f"{path}:4"}
    assert where[f"{path}:2"]["field"] == "chosen" and where[f"{path}:2"]["fix"]
    assert all(g["count"] == len(g["errors"]) for g in r["groups"])


def test_row_shows_a_valid_pair_or_the_problem_and_raw_line(client, tmp_path):
    path = _bad_file(tmp_path)
    ok = client.get("/api/data/row", params={"path": str(path), "row": f"{path}:1"}).json()
    assert ok["pair"]["chosen"][0]["parts"][0]["text"] == "A dot."
    bad = client.get("/api/data/row", params={"path": str(path), "row": f"{path}:4"}).json()
    assert bad["pair"] is None and "invalid" in bad["problem"] and bad["raw"].startswith("{not json")


def test_preview_pages_with_confined_image_urls(home_with_demo, demo):
    client = TestClient(create_app(home_with_demo))
    first = client.get("/api/data/preview", params={"path": str(demo / "train.jsonl"), "size": 3}).json()
    assert first["more"] and [p["row"] for p in first["pairs"]] == [1, 2, 3]
    last = client.get("/api/data/preview", params={"path": str(demo / "train.jsonl"), "size": 3, "page": 2}).json()
    assert not last["more"] and [p["row"] for p in last["pairs"]] == [7, 8]
    image = first["pairs"][0]["prompt"][0]["parts"][0]
    assert image["type"] == "image" and image["src"].startswith("/api/data/image?path=")
    got = client.get(image["src"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert "<image 0: 48x48>" in first["pairs"][0]["text"]  # data show's text rendering
    assert client.get("/api/data/preview", params={"path": str(demo / "train.jsonl"), "size": 0}).status_code == 400


@pytest.mark.parametrize("path, status", [("/etc/passwd", 403), ("studio.sqlite", 400), ("nope.png", 404)])
def test_image_route_serves_only_images_inside_the_roots(client, path, status):
    assert client.get("/api/data/image", params={"path": path}).status_code == status


def test_an_unreadable_file_is_a_check_result_and_a_preview_error(client, tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    r = client.get("/api/data/check", params={"path": str(tmp_path / "x.parquet")}).json()
    assert not r["ok"] and "cannot read parquet" in r["groups"][0]["errors"][0]["message"]
    r = client.get("/api/data/preview", params={"path": str(tmp_path / "x.parquet")})
    assert r.status_code == 400 and r.json()["error"]["field"] == "path" and "parquet" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------------- stats
def test_stats_with_histograms_and_image_tokens(home_with_demo, demo):
    client = TestClient(create_app(home_with_demo))
    s = client.get("/api/data/stats", params={"path": str(demo / "train.jsonl"), "model": "tiny:idefics3"}).json()
    assert s["rows"] == 8 and s["tokens"]["prompt"]["min"] > 0
    hist = s["histograms"]
    assert sum(hist["prompt chars"]["counts"]) == 8 and len(hist["prompt chars"]["edges"]) == 21
    assert hist["image tokens per row"]["counts"] == [8] and hist["image tokens per row"]["edges"][0] > 0
    plain = client.get("/api/data/stats", params={"path": str(demo / "train.jsonl")}).json()
    assert plain["tokens"] is None and "image tokens per row" not in plain["histograms"]
    bad = client.get("/api/data/stats", params={"path": str(demo / "train.jsonl"), "model": "tiny:nosuch"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "model"
