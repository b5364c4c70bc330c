from dataclasses import dataclass, field
from typing import Literal

import pytest

from edgerec.config import (ConfigError, apply_overrides, check, config_diff, config_from_dict, config_to_dict,
                            load_config_file)


@dataclass
class Inner:
    size: int = 4
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"
    shape: tuple[int, ...] = (2, 3)
    name: str | None = None

    def __post_init__(self):
        check(self.size > 0, "inner.size", f"must be > 0, got {self.size}")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    flag: bool = False


def test_round_trip_and_defaults():
    cfg = config_from_dict(Outer, {"inner": {"size": 7, "shape": [4, 5]}, "flag": True})
    assert cfg.inner.size == 7 and cfg.inner.shape == (4, 5) and cfg.flag is True
    assert cfg.inner.rate == 0.5
    assert config_from_dict(Outer, config_to_dict(cfg)) == cfg


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"inner\.sise"):
        config_from_dict(Outer, {"inner": {"sise": 3}})


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"inner": {"size": "x"}}, r"inner\.size: expected an integer"),
        ({"inner": {"rate": True}}, r"inner\.rate: expected a number"),
        ({"inner": {"mode": "c"}}, r"inner\.mode: expected one of \['a', 'b'\]"),
        ({"flag": "maybe"}, r"flag: expected true or false"),
        ({"inner": {"size": 0}}, r"inner\.size: must be > 0, got 0"),
    ],
)
def test_bad_values_name_the_key(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(Outer, data)


def test_overrides_coerce_types_and_validate():
    cfg = apply_overrides(Outer(), ["inner.size=9", "inner.rate=0.25", "inner.shape=1,2,3", "flag=true", "inner.name=x"])
    assert cfg == Outer(Inner(9, 0.25, "a", (1, 2, 3), "x"), True)
    assert apply_overrides(cfg, ["inner.name=none"]).inner.name is None
    with pytest.raises(ConfigError, match=r"unknown config key 'inner\.nope'"):
        apply_overrides(Outer(), ["inner.nope=1"])
    with pytest.raises(ConfigError, match="unknown config section 'outer'"):
        apply_overrides(Outer(), ["outer.size=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(Outer(), ["inner.size"])
    with pytest.raises(ConfigError, match="must be > 0"):
        apply_overrides(Outer(), ["inner.size=-1"])


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "cfg.json"
    bad.write_text('{"flag": true,\n "inner": {"size": }}')
    with pytest.raises(ConfigError, match=r"cfg\.json:2: invalid JSON"):
        load_config_file(Outer, bad)
    bad.write_text('{"inner": {"colour": 1}}')
    with pytest.raises(ConfigError, match=r"cfg\.json: unknown config key"):
        load_config_file(Outer, bad)


def test_config_diff_names_dotted_keys_and_compares_common_keys_on_request():
    saved = {"train": {"epochs": 15, "lr": 0.003}, "compress": {"ratio": 30.0}}
    asked = {"train": {"epochs": 40, "lr": 0.003, "seed": 1}, "compress": {"ratio": 30.0}}
    assert config_diff(saved, asked) == ["train.epochs: 15 -> 40", "train.seed: None -> 1"]
    assert config_diff(saved, asked, common_only=True) == ["train.epochs: 15 -> 40"]
    assert config_diff(saved, saved) == []
