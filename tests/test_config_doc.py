"""Every config key is documented next to its field, and docs/CONFIG.md is generated from those docs."""
from __future__ import annotations

from pathlib import Path

from vlmdpo.config import TrainConfig
from vlmdpo.config.doc import REGENERATE, config_markdown
from vlmdpo.config.train_config import GROUPS
from vlmdpo.losses import LOSS_TYPES

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def test_every_key_has_a_one_line_description():
    missing = [name for name, f in TrainConfig.model_fields.items() if not (f.description or "").strip()]
    assert not missing, f"config keys without a docstring under the field: {missing}"
    multi = [name for name, f in TrainConfig.model_fields.items() if "\n" in f.description]
    assert not multi, f"config key descriptions must be one line: {multi}"


def test_every_key_belongs_to_one_group_in_order():
    grouped = [name for group in GROUPS for name in group.__annotations__]
    assert grouped == list(TrainConfig.model_fields)


def test_peer_names_are_data_next_to_the_fields():
    for name, f in TrainConfig.model_fields.items():
        assert set(f.json_schema_extra or {}) <= {"trl", "llamafactory"}, name
    peers = TrainConfig.model_fields["beta"].json_schema_extra
    assert peers == {"trl": "beta", "llamafactory": "pref_beta"}


def test_config_doc_is_up_to_date():
    text = config_markdown()
    for name in TrainConfig.model_fields:
        assert f"| `{name}` |" in text
    for name in LOSS_TYPES:
        assert f"| `{name}` |" in text
    assert DOC.is_file() and DOC.read_text(encoding="utf-8") == text, (
        f"docs/CONFIG.md is stale; regenerate it with: {REGENERATE}")
