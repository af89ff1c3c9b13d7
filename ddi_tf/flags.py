"""Every command-line flag of the training command, made from the config dataclasses' settings.

Each setting's default, help text and valid range are declared once, on its dataclass field
(``ddi_tf.core.settings``); this module turns them into absl flags and validators.

Nothing else in the library reads ``FLAGS``: entry points call ``model_config_from_flags`` and
``train_config_from_flags`` and pass plain dataclasses down.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from ddi_tf.core import settings
from ddi_tf.core.config import ModelConfig, resolve_exits
from ddi_tf.training.config import TrainConfig

FLAGS = flags.FLAGS
_MODEL, _TRAIN = ModelConfig(), TrainConfig()  # every default is the dataclass field's, written once
_DEFINED = False


def define_flags() -> None:
    """Defines all flags (idempotent): one per setting of ModelConfig and TrainConfig, plus the few spelled
    differently on the command line (exits, num_classes) and the run directory."""
    global _DEFINED
    if _DEFINED:
        return
    _DEFINED = True
    for config in (_MODEL, _TRAIN):
        for field in dataclasses.fields(config):
            spec = settings.described(field)
            if spec is not None and spec.flag:
                _define(field.name, getattr(config, field.name), spec)
    flags.DEFINE_integer("num_classes", 0, "Classes; 0 = from the data set (10 for CIFAR-10, 100 for CIFAR-100).")
    flags.DEFINE_list("exits", [], "Explicit exit positions (block counts); overrides exit_every/exit_stage_ends.")
    flags.DEFINE_integer("exit_every", 0, "An exit after every k blocks (0: none).")
    flags.DEFINE_boolean("exit_stage_ends", True, "An exit at the end of each resolution stage.")
    flags.DEFINE_string("workdir", None, "Run directory: flags, checkpoints, TensorBoard logs, report "
                        "(default: runs/<dataset>_<backbone><depth>_<gate_type>_g<groups>).")
    flags.register_validator("num_classes", lambda v: v >= 0, "--num_classes must be >= 0")
    flags.register_validator("exit_every", lambda v: v >= 0, "--exit_every must be >= 0")
    flags.register_validator("exits", _all_ints, "--exits must be a list of integers")


def _define(name: str, default: object, spec: settings.Setting) -> None:
    """Defines the flag of one setting from its default's type, with the setting's help and validator."""
    if spec.choices:
        flags.DEFINE_enum(name, default, list(spec.choices), spec.help)
    elif isinstance(default, bool):
        flags.DEFINE_boolean(name, default, spec.help)
    elif isinstance(default, int):
        flags.DEFINE_integer(name, default, spec.help)
    elif isinstance(default, float):
        flags.DEFINE_float(name, default, spec.help)
    elif isinstance(default, tuple):  # every list setting holds numbers
        flags.DEFINE_list(name, [f"{v:g}" for v in default], spec.help)
    else:
        flags.DEFINE_string(name, default, spec.help)
    if spec.valid is None:
        return
    if isinstance(default, tuple):
        message = f"--{name} must be a list of numbers, each {spec.valid}"
        flags.register_validator(name, lambda v: _all_floats(v) and all(float(x) in spec.valid for x in v), message)
    else:
        flags.register_validator(name, lambda v: v in spec.valid, f"--{name} must be {spec.valid}")


def _parses(values: list[str], kind: type) -> bool:
    try:
        [kind(v) for v in values]
    except ValueError:
        return False
    return True


def _all_ints(values: list[str]) -> bool:
    return _parses(values, int)


def _all_floats(values: list[str]) -> bool:
    return _parses(values, float)


def model_config_from_flags(num_classes: int | None = None) -> ModelConfig:
    """The ModelConfig the flags describe (``num_classes`` fills in ``--num_classes=0``)."""
    f = FLAGS
    values = {field.name: f[field.name].value for field in dataclasses.fields(ModelConfig)
              if settings.described(field).flag}
    per_stage = (f.depth - 2) // 6 if f.backbone == "resnet" else (f.depth - 4) // 6
    values["exits"] = resolve_exits(3 * per_stage, per_stage, f.exit_every, f.exit_stage_ends,
                                    [int(e) for e in f.exits])
    values["num_classes"] = f.num_classes or num_classes or (100 if f.dataset == "cifar100" else 10)
    return ModelConfig(**values)


def train_config_from_flags() -> TrainConfig:
    """The TrainConfig the flags describe: every field from the flag of its name (lists become tuples of the
    field's element type; every list field of TrainConfig holds floats)."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = FLAGS[field.name].value
        default = getattr(_TRAIN, field.name)
        if isinstance(default, tuple):
            value = tuple((type(default[0]) if default else float)(v) for v in value)
        values[field.name] = value
    return TrainConfig(**values)
