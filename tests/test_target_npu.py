"""Ethos-U target profiles: the npu block is checked field by field, each bad value refused in
one sentence naming the field; the host core's cycle model and sources are inherited."""

from __future__ import annotations

from typing import Any

import pytest

from edgeopt.errors import InputError
from edgeopt.npu import NpuConfig
from edgeopt.target import Target
from edgeopt.target import list_targets

NPU_TARGETS = [name for name in list_targets() if name.startswith("ethos-")]


def test_the_three_ethos_u_profiles_are_built_in() -> None:
    assert NPU_TARGETS == ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256"]


@pytest.mark.parametrize("name", NPU_TARGETS)
def test_npu_profile_takes_its_host_core_costs_and_round_trips(name: str) -> None:
    target = Target.from_name(name)
    assert isinstance(target.npu, NpuConfig) and target.npu.accelerator == name
    host = Target.from_name(target.npu.host_target)
    assert target.cycles_per_mac == host.cycles_per_mac
    assert "host core's cortex-m7 profile" in target.sources["cycles_per_mac.conv.int8"]
    assert target.clock_hz == target.npu.clock_hz
    assert "vela.ini" in target.sources["clock_hz"]
    assert Target.from_dict(target.to_dict()) == target


@pytest.mark.parametrize("name", NPU_TARGETS)
def test_npu_profile_refuses_the_cycle_model(name: str) -> None:
    with pytest.raises(InputError, match="is an Ethos-U NPU: Vela prices a model file"):
        Target.from_name(name).estimate([])


def _raw(**npu: Any) -> dict[str, Any]:
    raw = Target.from_name("ethos-u55-128").to_dict()
    raw["npu"] = {**raw["npu"], **npu}
    return raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accelerator": "ethos-u99-1"}, "npu.accelerator 'ethos-u99-1' is not an Ethos-U55/U65"),
        ({"accelerator": "--output-dir=/"}, "npu.accelerator '--output-dir=/' is not"),
        ({"system_config": "Fast"}, "npu.system_config 'Fast' is not a system configuration"),
        ({"system_config": "Ethos_U65_High_End"}, "is not one for the ethos-u55 accelerator"),
        ({"memory_mode": "Sram_Everywhere"}, "npu.memory_mode 'Sram_Everywhere' is not a memory"),
        ({"memory_mode": "Dedicated_Sram"}, "'Dedicated_Sram' is for the Ethos-U65 only"),
        ({"host_target": "cortex-m99"}, "npu.host_target 'cortex-m99' is not a built-in CPU"),
        ({"host_target": "ethos-u55-256"}, "'ethos-u55-256' is an NPU, not a CPU profile"),
        ({"host_target": 7}, "npu.host_target is missing or not a name"),
        ({"config_file": "/etc/passwd"}, "npu has unknown field 'config_file'"),
    ],
)
def test_bad_npu_field_is_one_sentence_naming_it(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message) as error:
        Target.from_dict(_raw(**change), origin="board.yaml")
    text = str(error.value)
    assert text.startswith("board.yaml: ") and text.endswith(".") and "\n" not in text


def test_npu_block_must_be_a_mapping() -> None:
    raw = _raw()
    raw["npu"] = ["ethos-u55-128"]
    with pytest.raises(InputError, match="npu must be a mapping"):
        Target.from_dict(raw)


def test_clock_other_than_the_system_config_s_is_refused() -> None:
    raw = _raw()
    raw["clock_hz"] = 400e6
    with pytest.raises(InputError, match="clock_hz must be the Ethos_U55_High_End_Embedded clock"):
        Target.from_dict(raw)


@pytest.mark.parametrize("value", ["text", ["a"], 7])
def test_sources_that_are_no_mapping_are_refused(value: Any) -> None:
    raw = _raw()
    raw["sources"] = value
    with pytest.raises(InputError, match="sources must be a mapping"):
        Target.from_dict(raw)


@pytest.mark.parametrize("field", ["accelerator", "system_config", "memory_mode", "host_target"])
@pytest.mark.parametrize("value", [None, 3, ["ethos-u55-128"], {"a": 1}, "x" * 10_000])
def test_odd_npu_values_are_one_short_sentence(field: str, value: Any) -> None:
    with pytest.raises(InputError) as error:
        Target.from_dict(_raw(**{field: value}))
    assert f"npu.{field}" in str(error.value) and len(str(error.value)) < 400
