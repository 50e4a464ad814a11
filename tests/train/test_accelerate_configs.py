"""The example accelerate configs (examples/accelerate/) load with accelerate's own config reader,
and every plugin key in them is one `accelerate launch` knows (a misspelt key would be dropped)."""
from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "accelerate"
EXPECTED = {"ddp.yaml": ("MULTI_GPU", None), "fsdp2.yaml": ("FSDP", None),
            "deepspeed_zero2.yaml": ("DEEPSPEED", 2), "deepspeed_zero3.yaml": ("DEEPSPEED", 3)}


def test_the_four_configs_are_shipped():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    cfg = ClusterConfig.from_yaml_file(str(CONFIGS / name))  # unknown top-level keys raise here
    kind, zero_stage = EXPECTED[name]
    assert cfg.distributed_type.value == kind and cfg.num_machines == 1 and cfg.num_processes > 1
    launch_args = vars(launch_command_parser().parse_args(["train.py"]))
    for key in cfg.fsdp_config:
        assert key in launch_args, f"{name}: fsdp_config.{key} is not an accelerate launch option"
    for key in cfg.deepspeed_config:
        assert key in launch_args, f"{name}: deepspeed_config.{key} is not an accelerate launch option"
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_version"] == 2  # FSDP1 would turn the fast layout off
    if zero_stage:
        assert cfg.deepspeed_config["zero_stage"] == zero_stage
