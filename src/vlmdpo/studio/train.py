"""The Train page: a form made from the training config's own fields, checked by the CLI's validation,
shown as the YAML `vlmdpo train` reads, and started as its own process (runs.py).

Form values are the strings a user would type after `key=` on the command line; they go through the
same parsing and validation as `vlmdpo train CONFIG key=value`, so the form cannot drift from the CLI.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from vlmdpo.studio import runs
from vlmdpo.studio.app import get_home
from vlmdpo.studio.errors import StudioError
from vlmdpo.studio.home import StudioHome
from vlmdpo.studio.page import esc, render

router = APIRouter()

# The config groups (config/<group>.py) as the form's sections; a few keys everyone sets are lifted to "Basics".
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Basics", ("ModelKeys", "DataKeys", "OptimKeys", "RunKeys")),
    ("LoRA", ("TrainableKeys",)),
    ("Preference loss", ("LossKeys",)),
    ("Images and lengths", ("EncodingKeys",)),
    ("Advanced", ("ModelKeys", "DataKeys", "OptimKeys", "RunKeys", "FastKeys")),
)
BASICS = ("model_name_or_path", "dataset", "eval_dataset", "val_size", "output_dir", "num_train_epochs", "max_steps",
          "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
          "warmup_ratio", "logging_steps", "eval_steps", "save_steps")
# Keys that name files or folders: confined to the studio's roots and written as absolute paths, because the
# run's working folder is its own run folder.
PATH_KEYS = ("model_name_or_path", "dataset", "eval_dataset", "test_dataset", "dataset_dir", "image_root",
             "output_dir", "ref_cache_dir", "resume_from_checkpoint")
NAMES = {"model_name_or_path": ("tiny:", "builtin:"), "resume_from_checkpoint": ("auto",)}  # not paths
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")
MODEL_SUGGESTIONS = ("tiny:idefics3", "tiny:qwen2_vl", "tiny:qwen2_5_vl", "tiny:llava", "builtin:nano-smolvlm",
                     "HuggingFaceTB/SmolVLM-256M-Instruct", "Qwen/Qwen2-VL-2B-Instruct")
STUDIO_DEFAULTS = {"progress_bar": "false", "logging_steps": "1"}  # a log file, not a terminal; live curves


class TrainForm(BaseModel):
    run_name: str = ""
    values: dict[str, Any] = {}


# --------------------------------------------------------------------------------------- the fields
def _type_name(annotation: Any) -> str:
    from vlmdpo.config.doc import type_name

    return type_name(annotation)


def _choices(annotation: Any) -> list[str]:
    """The values a select offers: a Literal's options, true/false for a bool ('' = the default)."""
    import typing

    args = typing.get_args(annotation)
    literal = [a for a in args if typing.get_origin(a) is typing.Literal] + (
        [annotation] if typing.get_origin(annotation) is typing.Literal else [])
    out = [str(v).lower() if isinstance(v, bool) else str(v) for lit in literal for v in typing.get_args(lit)]
    if annotation is bool or bool in args:
        out = ["true", "false", *[o for o in out if o not in ("true", "false")]]
    return out


def config_fields() -> list[dict[str, Any]]:
    """Every config key with its section, type, default, choices and description (from the config groups)."""
    from vlmdpo.config.doc import yaml_value
    from vlmdpo.config.train_config import GROUPS

    by_group = {g.__name__: g for g in GROUPS}
    out, seen = [], set()
    for section, groups in SECTIONS:
        for group in groups:
            for key, info in by_group[group].model_fields.items():
                if key in seen or (section == "Basics") != (key in BASICS):
                    continue
                seen.add(key)
                default = info.get_default(call_default_factory=True)
                out.append({"key": key, "section": section, "type": _type_name(info.annotation),
                            "default": yaml_value(default) if not isinstance(default, (list, dict)) else str(default),
                            "choices": _choices(info.annotation), "description": info.description or ""})
    out.sort(key=lambda f: (list(dict(SECTIONS)).index(f["section"]),
                            BASICS.index(f["key"]) if f["key"] in BASICS else 0))
    return out


# ----------------------------------------------------------------------------------- validation
def field_errors(message: str) -> list[dict[str, str]]:
    """A ConfigError's lines -> [{field, message}]: each line names its key first (config/load.py)."""
    from vlmdpo.config.train_config import TrainConfig

    out = []
    for line in message.splitlines():
        line = line.strip()
        unknown = re.match(r"unknown key '([^']+)'", line)
        keyed = re.match(r"([A-Za-z_0-9]+): (.+)", line)
        if unknown:
            out.append({"field": unknown.group(1), "message": line})
        elif keyed and keyed.group(1) in TrainConfig.model_fields:
            out.append({"field": keyed.group(1), "message": keyed.group(2)})
    return out or [{"field": None, "message": message}]


class FormInvalid(StudioError):
    """Every problem of a form at its field: the app answers 422 with the first as `error` and all as `errors`."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__(errors[0]["message"], field=errors[0]["field"], status=422)
        self.errors = errors

    def __reduce__(self):
        return FormInvalid, (self.errors,)

    def payload(self) -> dict:
        return {**super().payload(), "errors": self.errors}


def _confined_paths(home: StudioHome, values: dict[str, Any], run_name: str) -> dict[str, Any]:
    out = dict(values)
    for key in PATH_KEYS:
        value = out.get(key)
        if value in (None, "", []):
            continue
        items = value if isinstance(value, list) else [value]
        fixed = [_confined(home, key, str(v)) for v in items]
        out[key] = fixed if isinstance(value, list) else fixed[0]
    out.setdefault("output_dir", str(home.root / "runs" / runs.slug(run_name or "run") / "output"))
    return out


def _confined(home: StudioHome, key: str, value: str) -> str:
    if value.startswith(NAMES.get(key, ())):
        return value
    hub_like = not home.looks_local(value) and not value.lower().endswith(DATA_SUFFIXES)
    if key in ("model_name_or_path", "dataset", "eval_dataset", "test_dataset") and hub_like:
        return value  # a hub id (owner/name) or a name in dataset_dir's dataset_info.json
    must_exist = key not in ("output_dir", "ref_cache_dir")
    return str(home.confine(value, field=key, must_exist=must_exist))


def validate_form(home: StudioHome, form: TrainForm) -> tuple[dict[str, Any], str]:
    """(values as the config file will hold them, the YAML); FormInvalid lists every problem at its field."""
    import yaml

    from vlmdpo.config import ConfigError, load_config, parse_overrides
    from vlmdpo.config.train_config import TrainConfig

    typed: dict[str, Any] = {}
    for key, raw in {**STUDIO_DEFAULTS, **form.values}.items():
        if raw is None or str(raw).strip() == "":
            continue
        try:
            typed.update(parse_overrides([f"{key}={raw}"]) if isinstance(raw, str) else {key: raw})
        except ConfigError as e:
            raise FormInvalid([{"field": key, "message": e.message}]) from None
    if not form.run_name.strip():
        raise FormInvalid([{"field": "run_name", "message": "the run needs a name"}])
    try:
        typed = _confined_paths(home, typed, form.run_name)
        load_config(None, typed, say=lambda _line: None)
    except StudioError as e:
        raise FormInvalid([{"field": e.field, "message": f"{e.message} -> {e.fix}" if e.fix else e.message}]) from None
    except ConfigError as e:
        raise FormInvalid(field_errors(e.message)) from None
    order = list(TrainConfig.model_fields)
    typed = {k: typed[k] for k in sorted(typed, key=lambda k: order.index(k) if k in order else len(order))}
    text = yaml.safe_dump(typed, sort_keys=False, allow_unicode=True)
    head = f"# vlmdpo train config (studio run '{runs.slug(form.run_name)}'); repeat with: vlmdpo train THIS.yaml\n"
    return typed, head + text


# ---------------------------------------------------------------------------------------- routes
@router.get("/api/train/fields")
def api_fields() -> dict:
    return {"fields": config_fields(), "sections": [s for s, _ in SECTIONS]}


@router.post("/api/train/validate")
def api_validate(form: TrainForm, home: StudioHome = Depends(get_home)) -> dict:
    return {"yaml": validate_form(home, form)[1]}


@router.post("/api/train/start")
def api_start(form: TrainForm, home: StudioHome = Depends(get_home)) -> dict:
    values, text = validate_form(home, form)
    return {"run": runs.launch(home, form.run_name, text, Path(values["output_dir"])), "yaml": text}


@router.get("/api/train/runs")
def api_runs(home: StudioHome = Depends(get_home)) -> dict:
    return {"runs": runs.list_runs(home)}


@router.get("/api/train/runs/{run_id}")
def api_run(run_id: int, home: StudioHome = Depends(get_home)) -> dict:
    row = runs.get_run(home, run_id)
    return {"run": row, "log": runs.log_tail(runs.run_dir(home, row))}


@router.post("/api/train/runs/{run_id}/stop")
def api_stop(run_id: int, home: StudioHome = Depends(get_home)) -> dict:
    return {"run": runs.stop(home, run_id)}


@router.post("/api/train/runs/{run_id}/resume")
def api_resume(run_id: int, home: StudioHome = Depends(get_home)) -> dict:
    return {"run": runs.resume(home, run_id)}


# ------------------------------------------------------------------------------------------ page
def _input(f: dict[str, Any], value: str) -> str:
    name, ph = esc(f["key"]), esc(f["default"])
    if f["choices"]:
        opts = "".join(f"<option value='{esc(c)}'{' selected' if c == value else ''}>{esc(c)}</option>"
                       for c in f["choices"])
        return f"<select name='{name}'><option value=''>default ({ph})</option>{opts}</select>"
    listed = " list='models'" if f["key"] == "model_name_or_path" else ""
    return f"<input name='{name}' placeholder='{ph}' value='{esc(value)}'{listed}>"


def _form_html(fields: list[dict[str, Any]]) -> str:
    parts = []
    for section, _ in SECTIONS:
        rows = "".join(
            f"<label class=field><span class=key>{esc(f['key'])} <small>{esc(f['type'])}</small></span>"
            f"{_input(f, STUDIO_DEFAULTS.get(f['key'], ''))}<span class=help>{esc(f['description'])}</span>"
            "<span class=field-error></span></label>" for f in fields if f["section"] == section)
        parts.append(f"<details{'' if section == 'Advanced' else ' open'}><summary>{esc(section)}</summary>"
                     f"<div class=fields>{rows}</div></details>")
    return "".join(parts)


@router.get("/train", response_class=HTMLResponse, include_in_schema=False)
def page(home: StudioHome = Depends(get_home)) -> HTMLResponse:
    models = "".join(f"<option value='{esc(m)}'>" for m in MODEL_SUGGESTIONS)
    body = (
        "<p class=muted>Every field is a key of the training config (docs/CONFIG.md); empty means its default. "
        "The same checks as <code>vlmdpo train</code> run on Validate and Start.</p>"
        "<form id=train-form class=train-grid autocomplete=off><div>"
        "<label class=field><span class=key>run name</span><input name=run_name required placeholder='my-run'>"
        "<span class=help>The run's folder under the studio home (runs/NAME), and its name in the monitor.</span>"
        "<span class=field-error></span></label>"
        f"{_form_html(config_fields())}<datalist id=models>{models}</datalist></div>"
        "<aside><div class=buttons><button type=button id=validate>Validate</button>"
        "<button type=submit id=start class=primary>Start training</button>"
        "<a id=download class=button download='config.yaml' hidden>Download YAML</a></div>"
        "<div id=errors></div><pre id=yaml class=yaml>Validate to see the YAML.</pre>"
        "<h2>Runs</h2><table id=runs class=table><thead><tr><th>run</th><th>status</th><th></th></tr></thead>"
        "<tbody></tbody></table></aside></form>")
    return render("Train", body, active="/train", scripts=("train.js",))
