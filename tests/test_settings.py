"""Settings declared once on the config dataclasses: the flags' help, defaults and validators come from them."""

from __future__ import annotations

import dataclasses
import math

import pytest
from absl import flags as absl_flags

from ddi_tf import flags as ddi_flags
from ddi_tf.core import settings
from ddi_tf.core.config import ConfigError, ModelConfig
from ddi_tf.core.settings import FRACTION, NON_NEGATIVE, POSITIVE, UNIT, Range
from ddi_tf.training.config import TrainConfig

_CONFIGS = (ModelConfig, TrainConfig)


def _settings():
    for cls in _CONFIGS:
        for field in dataclasses.fields(cls):
            yield cls, field, settings.described(field)


def _outside(valid: Range) -> float:
    """A value just outside the range (its lower end, or below it)."""
    if valid.low is not None:
        return valid.low if valid.low_open else valid.low - 1
    return valid.high if valid.high_open else valid.high + 1


def test_ranges():
    assert 0 in NON_NEGATIVE and -1e-9 not in NON_NEGATIVE and 0 not in POSITIVE
    assert 0 in UNIT and 1 not in UNIT and 1 in FRACTION and 0 not in FRACTION
    assert math.nan not in NON_NEGATIVE and math.inf not in FRACTION and True not in NON_NEGATIVE
    assert [str(r) for r in (NON_NEGATIVE, POSITIVE, UNIT, FRACTION, Range(high=3))] == [
        ">= 0", "> 0", "in [0, 1)", "in (0, 1]", "<= 3"]


def test_every_field_is_a_setting_whose_default_is_valid():
    for cls, field, spec in _settings():
        assert spec is not None and spec.help, f"{cls.__name__}.{field.name} has no setting"
        assert settings.problem(field.name, spec, field.default) is None, field.name


def test_flags_carry_each_settings_help_choices_and_default():
    ddi_flags.define_flags()
    f = ddi_flags.FLAGS
    for _, field, spec in _settings():
        if not spec.flag:
            continue
        assert f[field.name].help.endswith(spec.help), field.name  # enums prefix "<a|b>: "
        if spec.choices:
            assert f[field.name].parser.enum_values == list(spec.choices), field.name
        default = f[field.name].default
        if isinstance(field.default, tuple):
            default = tuple(float(v) for v in default)
        assert default == field.default, field.name


@pytest.mark.parametrize("cls, name", [(cls, field.name) for cls, field, spec in _settings() if spec.valid])
def test_a_value_outside_a_settings_range_is_refused_by_its_flag_and_its_dataclass(cls, name):
    spec = settings.described({f.name: f for f in dataclasses.fields(cls)}[name])
    bad = _outside(spec.valid)
    default = getattr(cls(), name)
    value = (type(default[0]) if default else float)(bad) if isinstance(default, tuple) else type(default)(bad)
    error = ConfigError if cls is ModelConfig else ValueError
    with pytest.raises(error, match=f"{name} must be"):
        cls(**{name: (value,) if isinstance(default, tuple) else value})
    if not spec.flag:
        return
    ddi_flags.define_flags()
    f = ddi_flags.FLAGS
    flag_value = [f"{value:g}"] if isinstance(default, tuple) else value
    try:
        with pytest.raises(absl_flags.IllegalFlagValueError, match=f"--{name} must be"):
            setattr(f, name, flag_value)
    finally:
        f[name].value = f[name].default


def test_nan_is_refused_where_a_float_setting_has_a_range():
    with pytest.raises(ValueError, match="target_cost must be in"):
        TrainConfig(target_cost=math.nan)
    with pytest.raises(ConfigError, match="gate_init_full must be in"):
        ModelConfig(gate_init_full=math.nan)
