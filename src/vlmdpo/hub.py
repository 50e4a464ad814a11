"""Upload a trained or exported model to the Hugging Face hub (`push_to_hub: true`, `vlmdpo export --push-to-hub`).

The repo is created if missing (HfApi.create_repo) and the folder uploaded in one commit (HfApi.upload_folder).
HF_ENDPOINT picks the hub (tests point it at a local stand-in). Any failure is one error that says why and
that the local folder is kept; nothing local is changed by a failed upload.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from vlmdpo.card import card_text
from vlmdpo.errors import FixableError

# what a training output_dir holds that is not the model: checkpoints, caches, temporary files, logs of rows
IGNORE = ["checkpoint-*", "checkpoint-*/**", ".*", ".*/**", "*.tmp*", "eval/**", "rejected_rows*.jsonl",
          "dropped_pairs.jsonl"]


class HubError(FixableError):
    """The upload could not happen or failed; the local model folder is untouched."""


def _api(api: Any = None) -> Any:
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)


def push_folder(folder: str | Path, repo_id: str, *, api: Any = None, token: str | None = None) -> str:
    """Create `repo_id` (if missing) and upload `folder` as one commit; the repo's URL."""
    from huggingface_hub import constants, get_token

    folder = Path(folder)
    keep = f"the model stays in {folder}"
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"hub repo '{repo_id}': not owner/name", f"pass the repo as owner/name; {keep}")
    if constants.HF_HUB_OFFLINE:
        raise HubError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set", f"unset it and push again; {keep}")
    token = token or get_token()
    if not token:
        raise HubError(f"cannot push to {repo_id}: no hub token",
                       f"run `hf auth login` or set HF_TOKEN (a token with write access), then push again; {keep}")
    hub = _api(api)
    try:
        url = hub.create_repo(repo_id, token=token, exist_ok=True, repo_type="model")
        hub.upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, repo_type="model",
                          ignore_patterns=IGNORE, commit_message="Upload model trained with vlmdpo")
    except Exception as e:  # noqa: BLE001 - offline, refused token and server errors arrive as many types
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HubError(f"pushing {folder} to {repo_id} failed ({type(e).__name__}: {text[:200]})",
                       f"check the network, the token's write access and the repo name, then push again "
                       f"(vlmdpo export --model {folder} -o OUT --push-to-hub {repo_id}); {keep}") from None
    return str(url)


def push_run(out: Path, repo_id: str, config: dict[str, Any], *, is_peft: bool, is_vlm: bool,
             say: Callable[[str], None] = print, api: Any = None) -> str:
    """A finished run's output_dir (the adapter or full model) with a filled README.md card, uploaded."""
    base = config.get("model_name_or_path")
    how = f"LoRA adapter on `{base}`" if is_peft else "full model"
    card = card_text(name=repo_id, base=base, train_config=config, is_vlm=is_vlm, model_dir=out, how=how,
                     adapter=is_peft)
    (out / "README.md").write_text(card, encoding="utf-8")
    url = push_folder(out, repo_id, api=api)
    say(f"pushed {out} to {url}")
    return url
