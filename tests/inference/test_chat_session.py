"""Generation settings, streaming, and the chat command (one-shot, piped stdin, interactive)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference_helpers import FakeTTY, Piped, write_image
from vlmdpo.chat import ChatError, ChatSession, run_chat
from vlmdpo.inference import GenerationSettings, InferenceModel, generate, load_for_inference, prepare_inputs, user_message


@pytest.fixture(scope="module")
def vlm() -> InferenceModel:
    return load_for_inference("tiny:idefics3", device="cpu")


@pytest.fixture(scope="module")
def text_lm() -> InferenceModel:
    return load_for_inference("tiny:causal_lm", device="cpu")


def _pil(tmp_path: Path, seed: int = 0):
    from PIL import Image

    return Image.open(write_image(tmp_path / f"i{seed}.png", seed)).convert("RGB")


def test_greedy_matches_plain_generate_and_streams_the_same_text(vlm, tmp_path):
    img = _pil(tmp_path)
    msgs = [user_message("what is in the picture?", 1)]
    settings = GenerationSettings(max_new_tokens=12, temperature=0.0)
    chunks: list[str] = []
    text = generate(vlm, msgs, [img], settings, on_text=chunks.append)
    inputs = prepare_inputs(vlm, msgs, [img])
    with torch.no_grad():
        out = vlm.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    expect_ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    eos = vlm.tokenizer.eos_token_id
    if eos in expect_ids:
        expect_ids = expect_ids[: expect_ids.index(eos)]
    assert text == vlm.tokenizer.decode(expect_ids, skip_special_tokens=True).strip()
    assert len(chunks) >= 1 and "".join(chunks).strip() == text


def test_sampling_is_reproducible_with_a_seed_and_varies_without(text_lm):
    msgs = [user_message("tell me a story", 0)]
    a = generate(text_lm, msgs, [], GenerationSettings(max_new_tokens=8, temperature=1.0, seed=7))
    b = generate(text_lm, msgs, [], GenerationSettings(max_new_tokens=8, temperature=1.0, seed=7))
    others = {generate(text_lm, msgs, [], GenerationSettings(max_new_tokens=8, temperature=1.0, seed=s)) for s in (1, 2)}
    assert a == b
    assert len(others | {a}) > 1  # a random 2-layer model over a 300-token vocab does not repeat itself


def test_placeholder_and_image_counts_must_agree(vlm, tmp_path):
    with pytest.raises(ValueError, match="1 image placeholders but 2 images"):
        prepare_inputs(vlm, [user_message("hi", 1)], [_pil(tmp_path), _pil(tmp_path, 1)])


def test_text_only_model_refuses_images(text_lm, tmp_path):
    session = ChatSession(text_lm)
    with pytest.raises(ChatError, match="text-only"):
        session.attach(_pil(tmp_path))


def test_one_shot_chat_streams_to_stdout(image_path: Path):
    out = Piped()
    reply = run_chat("tiny:idefics3", images=[str(image_path)], prompt="describe", device="cpu",
                     settings=GenerationSettings(max_new_tokens=6), stdout=out, stdin=FakeTTY(""))
    assert reply is not None and out.getvalue() == (out.getvalue().rstrip("\n") + "\n")
    assert out.getvalue().strip() == reply


def test_piped_stdin_is_one_prompt():
    out = Piped()
    reply = run_chat("tiny:causal_lm", stdin=Piped("first line\nsecond line\n"), stdout=out, device="cpu",
                     settings=GenerationSettings(max_new_tokens=4))
    assert isinstance(reply, str) and "you>" not in out.getvalue()
    with pytest.raises(ChatError, match="stdin was empty"):
        run_chat("tiny:causal_lm", stdin=Piped("  \n"), stdout=Piped(), device="cpu")


def test_missing_image_fails_before_loading_the_model(tmp_path: Path):
    def never(*a, **k):
        raise AssertionError("model loaded before the image was checked")

    with pytest.raises(ChatError) as err:
        run_chat("tiny:idefics3", images=[str(tmp_path / "nope.jpg")], prompt="hi", model_loader=never)
    assert "nope.jpg" in str(err.value)


def test_url_needs_permission():
    with pytest.raises(ChatError, match="http://example.com/a.jpg"):
        run_chat("tiny:idefics3", images=["http://example.com/a.jpg"], prompt="hi",
                 model_loader=lambda *a, **k: None)


def test_interactive_session_keeps_history_images_and_resets(vlm, tmp_path: Path):
    img1 = write_image(tmp_path / "a.png", 1)
    script = "\n".join([
        f"/image {img1}",
        "what is this?",
        "/image /no/such/file.png",
        "and now?",
        "/bogus",
        "/reset",
        "",
        "fresh start",
        "/quit",
        "never read",
    ]) + "\n"
    stdout = FakeTTY()
    sessions: list[ChatSession] = []
    import vlmdpo.chat as chat

    real = chat.ChatSession

    def spy(*a, **k):
        sessions.append(real(*a, **k))
        return sessions[-1]

    chat.ChatSession = spy
    try:
        result = run_chat("tiny:idefics3", stdin=FakeTTY(script), stdout=stdout, device="cpu",
                          settings=GenerationSettings(max_new_tokens=3), model_loader=lambda *a, **k: vlm)
    finally:
        chat.ChatSession = real
    text = stdout.getvalue()
    assert result is None
    assert "image attached" in text and "/no/such/file.png" in text and "unknown command /bogus" in text
    assert "conversation cleared" in text and text.count("assistant> ") == 3
    session = sessions[0]
    # after /reset only the last exchange remains, with no images
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    assert session.messages[0]["content"] == [{"type": "text", "text": "fresh start"}]
    assert session.images == [] and session.pending == []


def test_history_is_sent_with_images_in_order(vlm, tmp_path: Path):
    session = ChatSession(vlm, GenerationSettings(max_new_tokens=2))
    session.attach(_pil(tmp_path, 1))
    session.ask("first")
    session.attach(_pil(tmp_path, 2))
    session.ask("second")
    assert len(session.images) == 2 and session.pending == []
    roles = [m["role"] for m in session.messages]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert session.messages[2]["content"][0] == {"type": "image"}
