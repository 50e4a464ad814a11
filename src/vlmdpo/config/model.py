"""Config keys: which model to train and how to load it."""
from __future__ import annotations

from typing import Literal

from vlmdpo.config.base import Keys, peer


class ModelKeys(Keys):
    """Model: which model to train and how to load it."""

    model_name_or_path: str | None = peer(None, trl="model_name_or_path", llamafactory="model_name_or_path")
    """Hub id or local folder of the model to train, or `tiny:<family>` / `builtin:nano-smolvlm`."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = peer("auto", trl="dtype")
    """Dtype the weights are loaded in; auto takes the checkpoint's own."""
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None = peer(
        None, trl="attn_implementation", llamafactory="~flash_attn")
    """Attention kernel; null lets transformers choose."""
    template: str | None = peer(None, llamafactory="template")
    """LLaMA-Factory chat template name, checked against the model's family (the model's own template is used)."""
    trust_remote_code: bool = peer(False, llamafactory="trust_remote_code")
    """Allow model code from the Hub repository to run (only for repositories you trust)."""

    def problems(self) -> list[str]:
        if not self.model_name_or_path:
            return ["model_name_or_path: missing; give a hub id, a local folder, or tiny:<family> / builtin:nano-smolvlm"]
        return []
