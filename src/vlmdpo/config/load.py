"""Reading a config: YAML file + key=value overrides -> `TrainConfig`, or one `ConfigError` listing every problem."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from vlmdpo.config.base import closest
from vlmdpo.config.train_config import TrainConfig
from vlmdpo.errors import FixableError


class ConfigError(FixableError):
    """A bad config: the message is meant for the user as is."""


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = closest(word, choices)
    return f"; did you mean '{close}'?" if close else ""


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`key=value` strings -> dict; values are YAML scalars or flow lists (`loss_type=[sigmoid,sft]`)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not key=value; write e.g. beta=0.2")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw  # a plain string that YAML would misread (e.g. a path with ': ')
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of key: value lines, got {type(data).__name__}")
    return data


def build_config(values: dict[str, Any], *, source: str = "config",
                 override_keys: Sequence[str] = ()) -> TrainConfig:
    """Validate a dict into a TrainConfig; every problem is listed in one ConfigError."""
    known = list(TrainConfig.model_fields)
    unknown = []
    for key in values:
        if key not in TrainConfig.model_fields:
            origin = "command-line override" if key in override_keys else source
            unknown.append(f"unknown key '{key}' in {origin}{_did_you_mean(str(key), known) or '; see examples/'}")
    if unknown:
        raise ConfigError("\n".join(unknown))
    try:
        return TrainConfig(**values)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] | dict[str, Any] = ()) -> TrainConfig:
    """YAML file (optional) + overrides (list of key=value, or a dict) -> TrainConfig."""
    values = read_yaml(path) if path is not None else {}
    extra = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    values.update(extra)
    source = str(path) if path is not None else "config"
    return build_config(values, source=source, override_keys=list(extra))


def _format_errors(err: ValidationError, source: str) -> str:
    lines: list[str] = []
    seen: set[str] = set()
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"]:  # cross-field checks: each line already starts with its key
            lines.extend(msg.splitlines())
            continue
        key = str(e["loc"][0])
        if e["type"] == "literal_error":
            msg = f"must be one of {e['ctx']['expected']}"
        elif e["type"] in {"bool_parsing", "int_parsing", "float_parsing", "string_type", "list_type",
                           "int_from_float", "bool_type", "int_type", "float_type"}:
            msg = f"{msg.lower()} (got {e['input']!r})"
        if key in seen:  # a union type reports each branch; one line per key is enough
            continue
        seen.add(key)
        lines.append(f"{key}: {msg}")
    return f"{source}: invalid config\n  " + "\n  ".join(lines)
