"""Reading a config: YAML file + key=value overrides -> `TrainConfig`, or one `ConfigError` listing every problem."""
from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from pydantic import ValidationError

from vlmdpo.config.dialects import HINTS, DialectError, aliases, translate
from vlmdpo.config.train_config import TrainConfig
from vlmdpo.errors import FixableError


class ConfigError(FixableError):
    """A bad config: the message is meant for the user as is."""


def _words_match(word: str, choice: str) -> bool:
    """Each word of `word` is close to a word of `choice` (so `max_samples` is not `max_steps`)."""
    theirs = choice.split("_")
    return all(difflib.get_close_matches(w, theirs, n=1, cutoff=0.75) for w in word.split("_") if w)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    """"; did you mean 'x'?" for a key that is a likely typo of one of `choices` (ours and their aliases)."""
    if word in HINTS:
        return f"; {HINTS[word]}"
    close = [c for c in difflib.get_close_matches(word, list(choices), n=5, cutoff=0.6)
             if _words_match(word, c) or difflib.SequenceMatcher(None, word, c).ratio() >= 0.85]
    if not close:
        return ""
    alias = aliases().get(close[0])
    also = f" ({alias.ours})" if alias and alias.ours != close[0] else ""
    return f"; did you mean '{close[0]}'{also}?"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


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
                 override_keys: Sequence[str] = (), schema: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """Validate a dict into a TrainConfig (or `schema`, a TrainConfig with more keys); every problem is
    listed in one ConfigError."""
    known = list(schema.model_fields) + [k for k in aliases() if k not in schema.model_fields]
    unknown = []
    for key in values:
        if key not in schema.model_fields:
            origin = "command-line override" if key in override_keys else source
            unknown.append(f"unknown key '{key}' in {origin}{_did_you_mean(str(key), known) or '; see examples/'}")
    if unknown:
        raise ConfigError("\n".join(unknown))
    try:
        return schema(**values)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] | dict[str, Any] = (), *,
                say: Callable[[str], None] = _stderr, schema: type[TrainConfig] = TrainConfig) -> TrainConfig:
    """YAML file (optional) + overrides (list of key=value, or a dict) -> TrainConfig.

    LLaMA-Factory and TRL key names are translated first (config/dialects.py); `say` gets one line
    naming the translations and one naming the keys that do not apply here.
    """
    source = str(path) if path is not None else "config"
    raw = read_yaml(path) if path is not None else {}
    extra = dict(overrides) if isinstance(overrides, dict) else parse_overrides(overrides)
    try:  # each part alone, so an override wins over the file whichever name either uses
        parts = [translate(raw, schema.model_fields), translate(extra, schema.model_fields)]
    except DialectError as e:
        raise ConfigError(f"{source}: {e}") from None
    values = {**parts[0].values, **parts[1].values}
    renamed = parts[0].renamed + parts[1].renamed
    ignored = parts[0].ignored + parts[1].ignored
    if renamed:
        say(f"config: read as vlmdpo keys: {', '.join(renamed)}")
    if ignored:
        say(f"config: warning: these keys do not apply to vlmdpo and are ignored: {', '.join(ignored)}")
    return build_config(values, source=source, override_keys=list(parts[1].values), schema=schema)


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
