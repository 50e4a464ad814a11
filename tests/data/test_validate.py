"""One fixture per row-error kind: the error names file, row and field and says how to fix it."""
from __future__ import annotations

import pytest

from data_helpers import make_image, trl_row, write_jsonl
from vlmdpo.data.load import DataError, load_preferences
from vlmdpo.model.tiny import tiny_video
from vlmdpo.data.validate import ImageChecker, format_errors, validate_record
from vlmdpo.types import ImageRef, PreferenceRecord, RowError, RowSource


def only_error(path, **kw) -> RowError:
    with pytest.raises(DataError) as exc:
        load_preferences(path, **kw)
    errors = exc.value.errors
    assert len(errors) == 1, errors
    err = errors[0]
    text = str(err)
    assert str(path) in text and f":{err.row}:" in text and f"field '{err.field}'" in text
    assert err.fix
    return err


def test_invalid_json_line_names_line_and_column(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [trl_row(), trl_row()], raw_lines={1: '{"prompt": "x",, }'})
    err = only_error(path)
    assert (err.kind, err.row) == ("invalid_json", 2)
    assert "line 2" in err.message and "column 16" in err.message  # the second comma, 1-based


def test_bad_utf8_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "\xff"}\n')
    err = only_error(path)
    assert (err.kind, err.row) == ("invalid_json", 2) and "not valid UTF-8" in err.message


def test_row_that_is_not_an_object(tmp_path):
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [trl_row(), [1, 2]]))
    assert (err.kind, err.row) == ("not_object", 2)


def test_unknown_format_lists_keys_and_formats(tmp_path):
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [{"query": "q", "good": "a", "bad": "b"}]))
    assert err.kind == "unknown_format" and err.row == 1
    assert "['bad', 'good', 'query']" in err.message
    assert "swift: messages, rejected_response" in err.message and "trl: prompt, chosen, rejected" in err.message


def test_unknown_format_suggests_closest(tmp_path):
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [{"messages": [], "response": "x"}]))
    assert "closest is swift, which also needs rejected_response" in err.message


@pytest.mark.parametrize("drop", ["chosen", "rejected"])
def test_missing_field_with_explicit_format(tmp_path, drop):
    row = trl_row()
    del row[drop]
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]), format="trl")
    assert (err.kind, err.field) == ("missing_field", drop)


def test_missing_field_in_detected_file_says_what_the_row_looks_like(tmp_path):
    swift = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
             "rejected_response": "b"}
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [trl_row(), swift]))
    assert (err.kind, err.row, err.field) == ("missing_field", 2, "chosen")
    assert "looks like swift" in err.message


def test_missing_prompt_when_no_common_prefix(tmp_path):
    row = {"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "b"}]}
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("missing_field", "prompt")


@pytest.mark.parametrize("side", ["chosen", "rejected"])
@pytest.mark.parametrize("value", ["", "   \n", [{"role": "assistant", "content": [{"type": "text", "text": None}]}]])
def test_empty_or_whitespace_response(tmp_path, side, value):
    row = trl_row(**{side: value if isinstance(value, list) else [{"role": "assistant", "content": value}]})
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("empty_response", side)


def test_identical_responses(tmp_path):
    row = trl_row(rejected=[{"role": "assistant", "content": "Blue."}])
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("identical_responses", "rejected")


def test_identical_text_with_same_rejected_images_is_still_identical(tmp_path):
    make_image(tmp_path / "a.png")
    row = {"messages": [{"role": "user", "content": "<image>Color?"}, {"role": "assistant", "content": "Red."}],
           "images": ["a.png"], "rejected_images": ["a.png"], "rejected_response": "Red."}
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("identical_responses", "rejected_response")


@pytest.mark.parametrize("content,images,needle", [
    ("<image><image>Which?", ["a.png"], "2 image placeholder(s) but 1 image(s)"),
    ("Which?", ["a.png"], "0 image placeholder(s) but 1 image(s)"),
    ("<image>Which?", [], "1 image placeholder(s) but 0 image(s)"),
])
def test_swift_placeholder_count(tmp_path, content, images, needle):
    make_image(tmp_path / "a.png")
    row = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "A"}],
           "images": images, "rejected_response": "B"}
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("placeholder_count", "images") and needle in err.message


def test_video_placeholder_count(tmp_path):
    tiny_video(tmp_path / "v.mp4")
    row = {"messages": [{"role": "user", "content": "Clip?"}, {"role": "assistant", "content": "A"}],
           "videos": ["v.mp4"], "rejected_response": "B"}
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("placeholder_count", "videos")


def test_rejected_images_count(tmp_path):
    make_image(tmp_path / "a.png")
    row = {"messages": [{"role": "user", "content": "<image>?"}, {"role": "assistant", "content": "A"}],
           "images": ["a.png"], "rejected_images": ["a.png", "a.png"], "rejected_response": "B"}
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("placeholder_count", "rejected_images")


def test_trl_structured_prompt_with_images_but_no_placeholder(tmp_path):
    make_image(tmp_path / "a.png")
    row = trl_row(images=["a.png"], prompt=[{"role": "user", "content": [{"type": "text", "text": "Q"}]}])
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert err.kind == "placeholder_count"


def test_placeholder_outside_user_turns(tmp_path):
    make_image(tmp_path / "a.png")
    row = {"messages": [{"role": "system", "content": "<image>You see."}, {"role": "user", "content": "Q"},
                        {"role": "assistant", "content": "A"}], "images": ["a.png"], "rejected_response": "B"}
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("placeholder_outside_user", "messages[0]")


def test_placeholder_in_chosen(tmp_path):
    make_image(tmp_path / "a.png")
    row = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<image> A"}],
           "images": ["a.png"], "rejected_response": "B"}
    with pytest.raises(DataError) as exc:
        load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))
    kinds = {(e.kind, e.field) for e in exc.value.errors}
    # the image is counted nowhere in the prompt, and sits in the answer: both reported
    assert ("placeholder_outside_user", "messages[-1]") in kinds and ("placeholder_count", "images") in kinds


@pytest.mark.parametrize("prompt,needle", [
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "end with a user turn"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system turn must come first"),
])
def test_roles_in_prompt(tmp_path, prompt, needle):
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [trl_row(prompt=prompt)]))
    assert (err.kind, err.field) == ("roles", "prompt") and needle in err.message


def test_chosen_must_be_assistant(tmp_path):
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [trl_row(chosen=[{"role": "user", "content": "x"}])]))
    assert (err.kind, err.field) == ("wrong_role", "chosen")


def test_unknown_role_name(tmp_path):
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [trl_row(prompt=[{"role": "human", "content": "x"}])]))
    assert (err.kind, err.field) == ("wrong_role", "prompt[0]") and "'human'" in err.message


def test_missing_image_names_the_path(tmp_path):
    row = trl_row(images=["img/nope.png"])
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert (err.kind, err.field) == ("image", "images[0]")
    assert str(tmp_path / "img" / "nope.png") in err.message


def test_corrupt_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"this is not a png at all")
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [trl_row(images=["bad.png"])]))
    assert err.kind == "image" and "bad.png" in err.message


def test_truncated_image_only_caught_when_decoding(tmp_path):
    make_image(tmp_path / "t.png", size=(64, 64))
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    path = write_jsonl(tmp_path / "p.jsonl", [trl_row(images=["t.png"])])
    assert load_preferences(path, check_images="header").n_kept == 1
    err = only_error(path, check_images="decode")
    assert err.kind == "image" and "t.png" in err.message


def test_check_images_none_skips_file_checks(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [trl_row(images=["missing.png"])])
    assert load_preferences(path, check_images="none").n_kept == 1


def test_remote_image_refused_unless_allowed(tmp_path):
    err = only_error(write_jsonl(tmp_path / "p.jsonl", [trl_row(images=["https://example.com/x.png"])]))
    assert (err.kind, err.field) == ("image", "images[0]") and "allow_remote_images" in err.fix


def test_one_row_reports_several_fields(tmp_path):
    row = trl_row(chosen=[{"role": "assistant", "content": " "}], rejected=[{"role": "assistant", "content": ""}],
                  images=["missing.png"])
    with pytest.raises(DataError) as exc:
        load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))
    got = {(e.kind, e.field) for e in exc.value.errors}
    assert got == {("empty_response", "chosen"), ("empty_response", "rejected"), ("image", "images[0]")}


def test_data_error_groups_by_kind_with_cap(tmp_path):
    rows = [trl_row(rejected=[{"role": "assistant", "content": "Blue."}]) for _ in range(5)]
    rows += [trl_row(chosen=[{"role": "assistant", "content": ""}])]
    path = write_jsonl(tmp_path / "p.jsonl", rows, raw_lines={6: "not json"})
    with pytest.raises(DataError) as exc:
        load_preferences(path)
    text = str(exc.value)
    assert "7 of 7 rows are invalid (read 7, kept 0, skipped 7)" in text
    assert "[identical_responses] 5 error(s) in 5 row(s):" in text
    assert "... and 2 more [identical_responses]" in text
    assert text.count("field 'rejected': chosen and rejected are identical") == 3
    assert "[empty_response] 1 error(s)" in text and "[invalid_json] 1 error(s)" in text
    assert exc.value.result.n_skipped == 7


def test_format_errors_total_cap():
    errors = [RowError(f"k{i}", "f.jsonl", i + 1, "chosen", "bad") for i in range(10)]
    text = format_errors(errors, max_listed=4)
    assert text.count("f.jsonl:") == 4 and "listing capped at 4; 10 errors in total" in text


def test_validate_record_directly_and_image_cache():
    calls = []

    def fake_check(ref, *, decode, allow_remote):
        calls.append(ref.path)
        return None if ref.path == "/ok.png" else f"image not found: {ref.path}"

    checker = ImageChecker("header", check=fake_check)
    msg = lambda t: [{"role": "assistant", "content": [{"type": "text", "text": t}]}]  # noqa: E731
    rec = PreferenceRecord(
        id="r", prompt=[{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "image"}]}],
        chosen=msg("a"), rejected=msg("b"),
        images=[ImageRef(path="/ok.png"), ImageRef(path="/ok.png"), ImageRef(path="/gone.png")],
        source=RowSource("x.jsonl", 3))
    errors = validate_record(rec, image_checker=checker)
    assert [(e.kind, e.file, e.row, e.field) for e in errors] == [("image", "x.jsonl", 3, "images[2]")]
    validate_record(rec, image_checker=checker)
    assert calls == ["/ok.png", "/gone.png"]  # each path checked once across rows
