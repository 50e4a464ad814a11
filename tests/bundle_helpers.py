"""`load_bundle(settings)`: the training loader called as the train loop calls it, from a namespace of
settings (tests give a few; TrainConfig's defaults fill in the rest, as in a real run)."""
from __future__ import annotations

import inspect


def load_bundle(settings):
    from vlmdpo.config import TrainConfig
    from vlmdpo.inference import load_for_training

    params = inspect.signature(load_for_training).parameters.values()
    keys = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    fields = TrainConfig.model_fields
    return load_for_training(getattr(settings, "model_name_or_path", None),
                             **{k: getattr(settings, k, fields[k].default) for k in keys})
