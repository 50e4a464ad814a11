"""Small offline tokenizers and chat templates for the tiny test models.

Each family gets a byte-level BPE (256 byte tokens, a few dozen English merges so words are
not all single bytes) plus that family's own special tokens, and a chat template written to
render the same layout as the family's published one. Nothing is downloaded.
"""
from __future__ import annotations

from functools import lru_cache

# A handful of merges so common words tokenize into multi-byte pieces, as real BPEs do; this
# also exercises merge behaviour at the prompt/completion boundary.
_MERGES = [
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "n"),
    ("Ġ", "a"), ("r", "e"), ("e", "d"), ("Ġ", "i"), ("i", "s"), ("Ġ", "s"), ("Ġ", "c"),
    ("a", "t"), ("Ġc", "at"), ("o", "r"), ("e", "n"), ("Ġ", "w"), ("Ġ", "o"), ("Ġo", "f"),
    ("Ġ", "d"), ("o", "g"), ("Ġd", "og"), ("Ġi", "s"), ("Ġa", "n"), ("Ġ", "b"), ("l", "e"),
    ("Ġ", "p"), ("Ġ", "r"), ("Ġr", "ed"), ("Ġb", "l"), ("u", "e"), ("Ġbl", "ue"), ("in", "g"),
]

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL instruct: no default system turn, otherwise ChatML with vision wrappers.
QWEN3VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llava-hf/llava-1.5: images first, then text; note the assistant turn has NO end-of-turn token.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# llava-hf/llava-v1.6-mistral: [INST] ... [/INST] answer</s>
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' }}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{{ '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ eos_token }}{% endif %}{% endfor %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

# SmolLM2-Instruct (ChatML with a default system turn); content is a plain string.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# family -> (special tokens, template, named special tokens)
TOKENIZER_SPECS: dict[str, tuple[list[str], str, dict[str, str]]] = {
    "idefics3": (
        ["<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
        + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
        SMOLVLM_TEMPLATE,
        {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "pad_token": "<|im_end|>"},
    ),
    "qwen2_vl": (_QWEN_SPECIALS, QWEN2VL_TEMPLATE, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen2_5_vl": (_QWEN_SPECIALS, QWEN2VL_TEMPLATE, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen3_vl": (_QWEN_SPECIALS, QWEN3VL_TEMPLATE, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "llava": (["<unk>", "<s>", "</s>", "<pad>", "<image>"], LLAVA_TEMPLATE,
              {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "image_token": "<image>"}),
    "llava_next": (["<unk>", "<s>", "</s>", "<pad>", "<image>"], LLAVA_NEXT_TEMPLATE,
                   {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                    "image_token": "<image>"}),
    "gemma3": (
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
         "<image_soft_token>"],
        GEMMA3_TEMPLATE,
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "boi_token": "<start_of_image>",
         "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    ),
    "causal_lm": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML_TEMPLATE,
                  {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
}


@lru_cache(maxsize=None)
def _tokenizer_json(specials: tuple[str, ...]) -> str:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    byte_chars = list(pre_tokenizers.ByteLevel.alphabet())
    byte_chars.sort()
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    for a, b in _MERGES:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(_MERGES), fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok.to_str()


def build_tokenizer(family: str):
    """A fresh PreTrainedTokenizerFast for `family` (cheap: the JSON is cached)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials, template, named = TOKENIZER_SPECS[family]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(tuple(specials))),
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
        **named,
    )
    tok.chat_template = template
    return tok
