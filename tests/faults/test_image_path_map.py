"""image_path_map re-homes absolute paths written on another machine (/data/... there)."""
from __future__ import annotations

import json

import pytest

from vlmdpo.cli import main
from vlmdpo.config import load_config
from vlmdpo.data.images import remap_path, resolve_image
from vlmdpo.data.load import load_preferences
from vlmdpo.model.tiny import tiny_image


def test_remap_path_takes_the_longest_whole_folder_prefix():
    m = {"/data": "/mnt/a", "/data/imgs/": "/mnt/b", "/da": "/nope"}
    assert remap_path("/data/x.png", m) == "/mnt/a/x.png"
    assert remap_path("/data/imgs/y.png", m) == "/mnt/b/y.png"
    assert remap_path("/database/z.png", m) == "/database/z.png"  # not a folder of /data or /da
    assert remap_path("/other/z.png", m) == "/other/z.png"


def test_resolve_applies_the_map_to_paths_and_file_urls():
    m = {"/data": "/mnt/shared"}
    assert resolve_image("/data/a/cat.png", path_map=m).path == "/mnt/shared/a/cat.png"
    assert resolve_image("file:///data/cat.png", path_map=m).path == "/mnt/shared/cat.png"
    assert resolve_image("/elsewhere/cat.png", path_map=m).path == "/elsewhere/cat.png"


def _rows_from_another_machine(tmp_path):
    (tmp_path / "imgs").mkdir()
    tiny_image().save(tmp_path / "imgs" / "cat.png")
    row = {"prompt": [{"role": "user", "content": "<image>What is it?"}],
           "chosen": [{"role": "assistant", "content": "A cat."}],
           "rejected": [{"role": "assistant", "content": "A dog."}], "images": ["/data/run1/imgs/cat.png"],
           "videos": ["/data/run1/clips/a.mp4"]}
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def test_load_reads_images_and_videos_from_the_new_prefix(tmp_path):
    data = _rows_from_another_machine(tmp_path)
    res = load_preferences(str(data), on_invalid="skip")  # without the map: not found, at its row
    assert "/data/run1/imgs/cat.png" in " ".join(map(str, res.errors))
    res = load_preferences(str(data), image_path_map={"/data/run1": str(tmp_path)}, on_invalid="skip")
    text = " ".join(map(str, res.errors))
    assert "cat.png" not in text  # the image is found under the new prefix
    assert str(tmp_path / "clips" / "a.mp4") in text  # the (missing) video is looked for there too
    row = json.loads(data.read_text())
    del row["videos"]
    data.write_text(json.dumps(row) + "\n")
    res = load_preferences(str(data), image_path_map={"/data/run1": str(tmp_path)})
    assert [r.path for r in res.records[0].images] == [str(tmp_path / "imgs" / "cat.png")]


def test_data_check_takes_image_path_map_flags(tmp_path, capsys):
    data = _rows_from_another_machine(tmp_path)
    row = json.loads(data.read_text())
    del row["videos"]
    data.write_text(json.dumps(row) + "\n")
    assert main(["data", "check", str(data)]) == 1
    assert main(["data", "check", str(data), "--image-path-map", f"/data/run1={tmp_path}",
                 "--image-path-map", "/other=/x"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["data", "check", str(data), "--image-path-map", "no-equals-sign"])
    assert "OLD=NEW" in capsys.readouterr().err


def test_config_key_is_checked():
    cfg = load_config(None, dict(model_name_or_path="tiny:causal_lm", dataset="x.jsonl",
                                 image_path_map={"/data": "/mnt/data"}))
    assert cfg.image_path_map == {"/data": "/mnt/data"}
    with pytest.raises(Exception, match="image_path_map"):
        load_config(None, dict(model_name_or_path="tiny:causal_lm", dataset="x.jsonl", image_path_map={"": "/x"}))
