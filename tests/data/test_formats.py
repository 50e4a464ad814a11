"""Each reader on the exact FORMATS.md example rows and on every variant FORMATS.md lists."""
from __future__ import annotations

import json

import pytest

from data_helpers import IMG, VID, assistant, make_image, png_bytes, system, text, user, write_json, write_jsonl
from vlmdpo.data.load import DataError, load_preferences
from vlmdpo.model.tiny import tiny_video


def load_one(path, **kw):
    result = load_preferences(path, **kw)
    assert result.n_read == result.n_kept == 1, result.errors
    return result.records[0], result


# ---------------------------------------------------------------------------------------------- TRL
FORMATS_TRL = {
    "images": ["img/0.jpg"],
    "prompt": [{"role": "user", "content": [{"type": "image"},
                                            {"type": "text", "text": "What should this catcher be using?"}]}],
    "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "A baseball glove ..."}]}],
    "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "The catcher, number ..."}]}],
}


def test_trl_formats_md_row(img_dir):
    rec, result = load_one(write_jsonl(img_dir / "prefs.jsonl", [FORMATS_TRL]))
    assert rec.prompt == [user(IMG, text("What should this catcher be using?"))]
    assert rec.chosen == [assistant(text("A baseball glove ..."))]
    assert rec.rejected == [assistant(text("The catcher, number ..."))]
    assert [r.path for r in rec.images] == [str(img_dir / "img" / "0.jpg")]
    assert rec.id == "prefs-1" and rec.meta == {} and rec.rejected_images is None
    assert (rec.source.file, rec.source.row) == (str(img_dir / "prefs.jsonl"), 1)
    assert result.formats == {str(img_dir / "prefs.jsonl"): "trl"}


def test_trl_string_content_puts_images_before_first_user_turn(img_dir):
    # TRL's own layout for vision data: string contents, images in front of the first user turn
    row = {"images": ["img/0.jpg", "img/1.png"], "prompt": [{"role": "user", "content": "Compare them."}],
           "chosen": [{"role": "assistant", "content": "Red vs blue."}],
           "rejected": [{"role": "assistant", "content": "Both red."}]}
    rec, _ = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert rec.prompt == [user(IMG, IMG, text("Compare them."))]
    assert rec.chosen == [assistant(text("Red vs blue."))]


def test_trl_single_image_column_and_null_text_parts(img_dir):
    row = {"image": "img/0.jpg",
           "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                   {"type": "text", "text": "Describe."}]}],
           "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "A red tile."}]}],
           "rejected": [{"role": "assistant", "content": [{"type": "text", "text": None},
                                                          {"type": "text", "text": "A cat."}]}]}
    rec, _ = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert rec.prompt == [user(IMG, text("Describe."))]
    assert rec.rejected == [assistant(text("A cat."))]
    assert len(rec.images) == 1 and rec.images[0].path.endswith("0.jpg")


def test_trl_multi_turn_with_system_keeps_parts_apart(img_dir):
    row = {"images": ["img/0.jpg", "img/1.png"],
           "prompt": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [IMG, text("First?"), text(" really")]},
                      {"role": "assistant", "content": "A red tile."},
                      {"role": "user", "content": [text("And this "), IMG, text("?")]}],
           "chosen": [{"role": "assistant", "content": "Blue."}],
           "rejected": [{"role": "assistant", "content": "Red."}]}
    rec, _ = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert rec.prompt == [system(text("Be brief.")), user(IMG, text("First?"), text(" really")),
                          assistant(text("A red tile.")), user(text("And this "), IMG, text("?"))]


def test_trl_implicit_prompt_is_common_prefix(img_dir):
    convo = [{"role": "user", "content": [IMG, text("What is it?")]}]
    row = {"images": ["img/0.jpg"],
           "chosen": convo + [{"role": "assistant", "content": "A red tile."}],
           "rejected": convo + [{"role": "assistant", "content": "A dog."}]}
    rec, _ = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert rec.prompt == [user(IMG, text("What is it?"))]
    assert rec.chosen == [assistant(text("A red tile."))] and rec.rejected == [assistant(text("A dog."))]


def test_trl_inline_image_parts(img_dir):
    row = {
        "prompt": [{"role": "user", "content": [{"type": "image", "image": "img/1.png"}, text("Color?")]}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Red."}]}
    rec, _ = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert rec.prompt == [user(IMG, text("Color?"))] and rec.images[0].path.endswith("1.png")


@pytest.mark.parametrize("token", ["<image>", "<|image_pad|>", "<|vision_start|><|image_pad|><|vision_end|>",
                                   "<start_of_image>", "<|image|>"])
def test_trl_standard_maps_model_image_tokens(img_dir, token):
    row = {"images": ["img/0.jpg"], "prompt": f"Look {token} closely. What is it?",
           "chosen": " A red tile.", "rejected": " A dog."}
    rec, result = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert result.formats[str(img_dir / "p.jsonl")] == "trl_standard"
    assert rec.prompt == [user(text("Look "), IMG, text(" closely. What is it?"))]
    assert rec.chosen == [assistant(text(" A red tile."))]


def test_trl_standard_implicit_prompt_splits_before_space(tmp_path):
    row = {"chosen": "The sky is blue.", "rejected": "The sky is green."}
    rec, _ = load_one(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert rec.prompt == [user(text("The sky is"))]
    assert rec.chosen == [assistant(text(" blue."))] and rec.rejected == [assistant(text(" green."))]


def test_trl_conversational_keeps_model_tokens_as_text(tmp_path):
    # only the standard (string) variant knows model tokens; conversational text is kept verbatim
    row = {"prompt": [{"role": "user", "content": "what is <|image_pad|>?"}],
           "chosen": [{"role": "assistant", "content": "a token"}],
           "rejected": [{"role": "assistant", "content": "nothing"}]}
    rec, _ = load_one(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert rec.prompt == [user(text("what is <|image_pad|>?"))]


def test_id_column_and_unknown_columns_to_meta(tmp_path):
    row = {"id": 42, "source": "web", "meta": {"score": 0.5}, "prompt": "q", "chosen": "a", "rejected": "b"}
    rec, _ = load_one(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert rec.id == "42" and rec.meta == {"score": 0.5, "source": "web"}


# ---------------------------------------------------------------------------------------- RLAIF-V
def test_rlaifv_formats_md_row_with_image_bytes_and_grayscale(tmp_path):
    row = {"image": {"bytes": png_bytes(mode="L"), "path": "17.png"},
           "question": "Who is more likely to use these tools ...?",
           "chosen": "A leather crafter ...", "rejected": "A leather crafter ... as they consist of ...",
           "ds_name": "RLAIF-V", "origin_dataset": "OK-VQA", "origin_split": "train", "idx": 17,
           "image_path": "x/17.png"}
    rows = [row]
    from vlmdpo.data.images import load_image

    result = load_preferences(rows)
    rec = result.records[0]
    assert result.formats == {"<rows>": "rlaifv"}
    assert rec.prompt == [user(IMG, text("Who is more likely to use these tools ...?"))]
    assert rec.chosen == [assistant(text("A leather crafter ..."))]
    assert rec.meta == {"ds_name": "RLAIF-V", "origin_dataset": "OK-VQA", "origin_split": "train", "idx": 17,
                        "image_path": "x/17.png"}
    assert rec.images[0].data == row["image"]["bytes"]
    assert load_image(rec.images[0]).mode == "RGB"


def test_rlaifv_image_as_path(img_dir):
    row = {"image": "img/gray.png", "question": "Q?", "chosen": "yes", "rejected": "no"}
    rec, _ = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert rec.images[0].path == str(img_dir / "img" / "gray.png")


# ----------------------------------------------------------------------------------------- RLHF-V
def test_rlhfv_formats_md_row(img_dir):
    row = {"image": "img/0.jpg",
           "text": json.dumps({"question": "What is shown?", "chosen": "A red square.",
                               "rejected": "A red square with a dog."}),
           "ds_name": "RLHF-V", "origin_dataset": "x", "origin_split": "y", "idx": 3, "image_path": "z"}
    rec, result = load_one(write_jsonl(img_dir / "p.jsonl", [row]))
    assert result.formats[str(img_dir / "p.jsonl")] == "rlhfv"
    assert rec.prompt == [user(IMG, text("What is shown?"))]
    assert rec.chosen == [assistant(text("A red square."))]
    assert rec.rejected == [assistant(text("A red square with a dog."))]
    assert rec.meta["idx"] == 3 and "text" not in rec.meta


def test_rlhfv_bad_json_in_text_is_row_error_on_text(img_dir):
    row = {"image": "img/0.jpg", "text": '{"question": "Q", "chosen": '}
    path = write_jsonl(img_dir / "p.jsonl", [row])
    with pytest.raises(DataError) as exc:
        load_preferences(path, format="rlhfv")
    (err,) = exc.value.errors
    assert (err.kind, err.row, err.field) == ("bad_json", 1, "text")
    assert "not valid JSON" in err.message


# ---------------------------------------------------------------------------------------- ms-swift
def test_swift_formats_md_row(tmp_path):
    xray = make_image(tmp_path / "data" / "chest_xray.jpg")  # FORMATS.md's /data/... stands in here
    row = {"messages": [{"role": "system", "content": "You are a medical imaging assistant"},
                        {"role": "user", "content": "<image>Analyze this X-ray image"},
                        {"role": "assistant", "content": "The chest X-ray shows clear lung fields ..."}],
           "images": [str(xray)],
           "rejected_response": "The X-ray looks normal"}
    rec, result = load_one(write_jsonl(tmp_path / "train" / "s.jsonl", [row]))
    assert result.formats[str(tmp_path / "train" / "s.jsonl")] == "swift"
    assert rec.prompt == [system(text("You are a medical imaging assistant")),
                          user(IMG, text("Analyze this X-ray image"))]
    assert rec.chosen == [assistant(text("The chest X-ray shows clear lung fields ..."))]
    assert rec.rejected == [assistant(text("The X-ray looks normal"))]
    assert rec.images[0].path == str(xray)
    assert any("format detected as swift (keys messages, rejected_response)" in n for n in result.notes)


def test_swift_placeholders_anywhere_across_turns_videos_and_list_rejected(img_dir):
    tiny_video(img_dir / "clip.mp4")
    row = {"messages": [{"role": "user", "content": "A <image> and B <image><image> here"},
                        {"role": "assistant", "content": "Noted."},
                        {"role": "user", "content": "Now the clip <video> and <image>?"},
                        {"role": "assistant", "content": "Fine."}],
           "images": ["img/0.jpg", "img/1.png", "img/0.jpg", "img/gray.png"],
           "videos": ["clip.mp4"],
           "rejected_response": [{"role": "assistant", "content": "Bad."}]}
    rec, _ = load_one(write_jsonl(img_dir / "s.jsonl", [row]))
    assert rec.prompt == [user(text("A "), IMG, text(" and B "), IMG, IMG, text(" here")),
                          assistant(text("Noted.")),
                          user(text("Now the clip "), VID, text(" and "), IMG, text("?"))]
    assert [r.path.rsplit("/", 1)[1] for r in rec.images] == ["0.jpg", "1.png", "0.jpg", "gray.png"]
    assert rec.videos[0].path.endswith("clip.mp4")
    assert rec.rejected == [assistant(text("Bad."))]


def test_swift_rejected_images_allow_identical_text(img_dir):
    row = {"messages": [{"role": "user", "content": "<image>Which color?"},
                        {"role": "assistant", "content": "Red."}],
           "images": ["img/0.jpg"], "rejected_images": ["img/1.png"], "rejected_response": "Red."}
    rec, _ = load_one(write_jsonl(img_dir / "s.jsonl", [row]))
    assert rec.rejected_images[0].path.endswith("1.png") and rec.chosen == rec.rejected


def test_swift_text_only(tmp_path):
    row = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
           "rejected_response": "5"}
    rec, _ = load_one(write_jsonl(tmp_path / "s.jsonl", [row]))
    assert rec.images == [] and rec.prompt == [user(text("2+2?"))]


# ----------------------------------------------------------------------------------- LLaMA-Factory
FORMATS_SHAREGPT = {
    "conversations": [{"from": "system", "value": "You judge road safety."},
                      {"from": "human", "value": "<image>Which image ...?"}],
    "chosen": {"from": "gpt", "value": "The first image ..."},
    "rejected": {"from": "gpt", "value": "The first one looks safer"},
    "images": ["data/road_clear.jpg"],
}


def test_sharegpt_formats_md_row(tmp_path):
    make_image(tmp_path / "data" / "road_clear.jpg")
    rec, result = load_one(write_json(tmp_path / "lf.json", [FORMATS_SHAREGPT]))
    assert result.formats[str(tmp_path / "lf.json")] == "sharegpt"
    assert rec.prompt == [system(text("You judge road safety.")), user(IMG, text("Which image ...?"))]
    assert rec.chosen == [assistant(text("The first image ..."))]
    assert rec.rejected == [assistant(text("The first one looks safer"))]
    assert rec.images[0].path == str(tmp_path / "data" / "road_clear.jpg")


def test_sharegpt_multi_turn(tmp_path):
    row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                             {"from": "human", "value": "2+2?"}],
           "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}}
    rec, _ = load_one(write_jsonl(tmp_path / "s.jsonl", [row]))
    assert rec.prompt == [user(text("Hi")), assistant(text("Hello")), user(text("2+2?"))]


def test_alpaca_instruction_newline_input(img_dir):
    row = {"instruction": "<image>Describe the tile.", "input": "Be short.", "chosen": "Red.",
           "rejected": "Blue.", "images": ["img/0.jpg"], "system": "You see colors.",
           "history": [["Hi", "Hello"]]}
    rec, result = load_one(write_jsonl(img_dir / "a.jsonl", [row]))
    assert result.formats[str(img_dir / "a.jsonl")] == "alpaca"
    assert rec.prompt == [system(text("You see colors.")), user(text("Hi")), assistant(text("Hello")),
                          user(IMG, text("Describe the tile.\nBe short."))]
    assert rec.chosen == [assistant(text("Red."))]


def test_alpaca_without_input(tmp_path):
    row = {"instruction": "Say hi", "input": "", "chosen": "hi", "rejected": "bye"}
    rec, _ = load_one(write_jsonl(tmp_path / "a.jsonl", [row]))
    assert rec.prompt == [user(text("Say hi"))]


def test_dataset_info_columns_and_tags_beside_file(img_dir):
    row = {"dialog": [{"speaker": "sys", "text": "Be kind."}, {"speaker": "person", "text": "<image>Color?"}],
           "good": {"speaker": "bot", "text": "Red."}, "bad": {"speaker": "bot", "text": "Blue."},
           "pics": ["img/0.jpg"]}
    write_jsonl(img_dir / "mine.jsonl", [row])
    write_json(img_dir / "dataset_info.json", {
        "other": {"file_name": "other.json"},
        "my_prefs": {"file_name": "mine.jsonl", "formatting": "sharegpt", "ranking": True,
                     "columns": {"messages": "dialog", "chosen": "good", "rejected": "bad", "images": "pics"},
                     "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "person",
                              "assistant_tag": "bot", "system_tag": "sys"}}})
    rec, result = load_one(img_dir / "mine.jsonl")
    assert rec.prompt == [system(text("Be kind.")), user(IMG, text("Color?"))]
    assert rec.chosen == [assistant(text("Red."))] and rec.rejected == [assistant(text("Blue."))]
    assert rec.meta == {} and len(rec.images) == 1
    assert "dataset_info.json entry 'my_prefs'" in result.notes[0]


def test_dataset_info_passed_in_for_alpaca_renames(tmp_path):
    row = {"q": "Say hi", "extra": "politely", "yes": "hi", "no": "go away"}
    path = write_jsonl(tmp_path / "x.jsonl", [row])
    info = {"formatting": "alpaca", "ranking": True,
            "columns": {"prompt": "q", "query": "extra", "chosen": "yes", "rejected": "no"}}
    rec, _ = load_one(path, dataset_info=info)
    assert rec.prompt == [user(text("Say hi\npolitely"))] and rec.rejected == [assistant(text("go away"))]


def test_sharegpt_openai_style_messages_detected(tmp_path):
    row = {"messages": [{"role": "user", "content": "Hi?"}],
           "chosen": {"role": "assistant", "content": "Hello."},
           "rejected": {"role": "assistant", "content": "Go."}}
    rec, result = load_one(write_jsonl(tmp_path / "o.jsonl", [row]))
    assert result.formats[str(tmp_path / "o.jsonl")] == "sharegpt"
    assert rec.chosen == [assistant(text("Hello."))]


@pytest.mark.parametrize("conv,needle", [
    ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}], "must end on a human turn"),
    ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}, {"from": "gpt", "value": "c"}],
     "roles must alternate"),
    ([{"from": "gpt", "value": "a"}], "roles must alternate"),
])
def test_sharegpt_role_errors(tmp_path, conv, needle):
    row = {"conversations": conv, "chosen": {"from": "gpt", "value": "x"}, "rejected": {"from": "gpt", "value": "y"}}
    with pytest.raises(DataError) as exc:
        load_preferences(write_jsonl(tmp_path / "s.jsonl", [row]))
    (err,) = exc.value.errors
    assert err.kind == "roles" and needle in err.message and err.field.startswith("conversations")


def test_sharegpt_tool_turns_are_refused_clearly(tmp_path):
    row = {"conversations": [{"from": "human", "value": "Weather?"}, {"from": "function_call", "value": "{}"},
                             {"from": "observation", "value": "sunny"}],
           "chosen": {"from": "gpt", "value": "Sunny."}, "rejected": {"from": "gpt", "value": "Rain."}}
    with pytest.raises(DataError) as exc:
        load_preferences(write_jsonl(tmp_path / "s.jsonl", [row]))
    (err,) = exc.value.errors
    assert (err.kind, err.field) == ("unsupported", "conversations[1]") and "function_call" in err.message


def test_llamafactory_format_name_picks_sharegpt_or_alpaca_and_ranking_note(tmp_path):
    share = write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "Q"}],
                                                "chosen": {"from": "gpt", "value": "A"},
                                                "rejected": {"from": "gpt", "value": "B"}}])
    alp = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Q", "chosen": "A", "rejected": "B"}])
    result = load_preferences([share, alp], format="llamafactory")
    assert list(result.formats.values()) == ["sharegpt", "alpaca"]
    write_json(tmp_path / "dataset_info.json", {"x": {"file_name": "a.jsonl"}})  # no ranking, alpaca by default
    result = load_preferences(alp)
    assert result.n_kept == 1 and "lacks \"ranking\": true" in result.notes[1]
