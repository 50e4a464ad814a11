"""docs/CONFIG.md, generated from the config groups and the loss table.

Regenerate with `PYTHONPATH=src python -m vlmdpo.config.doc > docs/CONFIG.md` (a test fails when it is stale).
"""
from __future__ import annotations

import sys
import types
import typing
from typing import Any, Literal

from vlmdpo.config.dialects import CHECKED, DIALECTS, IGNORED
from vlmdpo.config.iterate import IterateKeys
from vlmdpo.config.train_config import GROUPS
from vlmdpo.losses import LOSS_SPECS

REGENERATE = "PYTHONPATH=src python -m vlmdpo.config.doc > docs/CONFIG.md"

INTRO = f"""\
# Config keys

<!-- Generated from src/vlmdpo/config/ and src/vlmdpo/losses/table.py by `{REGENERATE}`; do not edit. -->

A training config is one flat YAML file of `key: value` lines; any key can also be given on the
command line as `key=value` (`vlmdpo train config.yaml beta=0.2 loss_type=[sigmoid,sft]`).
An unknown key or a bad value fails before anything runs, naming the key.
The TRL and LLaMA-Factory columns give those tools' name for the same setting
(`~name`: a similar setting, not an identical one).
"""


def type_name(annotation: Any) -> str:
    """A field's type as users write it in YAML: `str or list[str] or null`, `auto / float32`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " / ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _code(text: str | None) -> str:
    """`name` in code, any remark after it as text: "rpo_alpha (TRL < 1.0)" -> "`rpo_alpha` (TRL < 1.0)"."""
    if not text:
        return ""
    name, sep, remark = text.partition(" ")
    return f"`{name}`{sep}{remark}"


def keys_section(group: type) -> list[str]:
    title, _, about = (group.__doc__ or "").strip().rstrip(".").partition(": ")
    lines = [f"## {title}", ""]
    if about:
        lines += [about[0].upper() + about[1:] + ".", ""]
    lines += [_row("key", "type", "default", "description", "TRL", "LLaMA-Factory"), _row(*["---"] * 6)]
    for name in group.__annotations__:
        field = group.model_fields[name]
        peers = field.json_schema_extra or {}
        lines.append(_row(f"`{name}`", type_name(field.annotation), _code(yaml_value(field.default)),
                          field.description or "", _code(peers.get("trl")), _code(peers.get("llamafactory"))))
    return lines + [""]


def losses_section() -> list[str]:
    lines = [
        "## Loss types", "",
        "Values of `loss_type` (a list sums several, weighted by `loss_weights`). Every loss also takes",
        "`rpo_alpha` (an added NLL term); `ld_alpha` applies to the losses that need a reference.", "",
        _row("loss_type", "what it is", "needs a reference", "reads", "requires"), _row(*["---"] * 5),
    ]
    for spec in LOSS_SPECS.values():
        requires = "; ".join(f"`{r.key}` {r.rule}" for r in spec.requires)
        lines.append(_row(f"`{spec.name}`", spec.summary, "yes" if spec.needs_reference else "no",
                          ", ".join(f"`{p}`" for p in spec.params), requires))
    return lines + [""]


def dialects_section() -> list[str]:
    """Their key -> ours, from config/dialects.py."""
    lines = [
        "## LLaMA-Factory and TRL configs", "",
        "A LLaMA-Factory DPO YAML or a TRL `DPOConfig` YAML runs as it is: their keys are read as ours",
        "(`vlmdpo train` prints the translations in one line), keys that do not apply here are named in one",
        "warning, and keys asking for something vlmdpo does not do are an error that says what to use instead.", "",
    ]
    for dialect, table in DIALECTS.items():
        lines += [f"### {dialect}", "", _row(f"{dialect} key", "vlmdpo key", "difference"), _row(*["---"] * 3)]
        lines += [_row(f"`{key}`", f"`{alias.ours}`", alias.meaning) for key, alias in table.items()]
        lines.append("")
    lines += ["### Checked and refused keys", "", _row("key", "what happens"), _row(*["---"] * 2)]
    lines += [_row(f"`{key}`", (check.__doc__ or "").strip()) for key, check in CHECKED.items()]
    lines += ["", "Ignored (named in the warning): " + ", ".join(f"`{k}`" for k in sorted(IGNORED)) + ".", ""]
    return lines


def config_markdown() -> str:
    """The whole of docs/CONFIG.md."""
    lines = [INTRO]
    for group in (*GROUPS, IterateKeys):  # IterateKeys: `vlmdpo iterate` configs only
        lines += keys_section(group)
    lines += losses_section()
    lines += dialects_section()
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(config_markdown())
