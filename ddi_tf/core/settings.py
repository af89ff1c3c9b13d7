"""Settings: a config dataclass field that carries its own help text, choices and valid range.

One declaration per setting is the single source of its default, its ``--help`` text and its validator:
``ddi_tf.flags`` defines a command-line flag from every field declared with :func:`setting`, and the dataclass
checks its values with :func:`check_fields` when it is built (from flags, from a run's ``config.json`` or from
code), so a value is refused with the same message wherever it comes from::

    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float = setting(0.1, "Peak learning rate.", valid=POSITIVE)

        def __post_init__(self) -> None:
            check_fields(self)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

_KEY = "ddi_setting"


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric interval; ``None`` is unbounded on that side. NaN is outside every range."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


NON_NEGATIVE = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
AT_LEAST_ONE = Range(low=1)
UNIT = Range(low=0, high=1, high_open=True)  # [0, 1): rates, decays, smoothing
FRACTION = Range(low=0, high=1, low_open=True)  # (0, 1]: fractions of the full cost


@dataclasses.dataclass(frozen=True)
class Setting:
    """What :func:`setting` records in a field's metadata."""

    help: str
    choices: tuple[str, ...] = ()
    valid: Range | None = None  # for a tuple field: every element's range
    flag: bool = True  # False: the command line spells it differently (the flags module defines it by hand)


def setting(default: Any, help: str, *, choices: Sequence[str] = (), valid: Range | None = None,
            flag: bool = True) -> Any:
    """A dataclass field with its default, help text, choices (a string setting) and valid range."""
    meta = {_KEY: Setting(help=help, choices=tuple(choices), valid=valid, flag=flag)}
    return dataclasses.field(default=default, metadata=meta)


def described(field: dataclasses.Field) -> Setting | None:
    """The field's :class:`Setting`, or None for a field declared without :func:`setting`."""
    return field.metadata.get(_KEY)


def problem(name: str, spec: Setting, value: Any) -> str | None:
    """Why ``value`` is not valid for the setting ``name`` (None when it is)."""
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {spec.choices}, got {value!r}"
    if spec.valid is None:
        return None
    values = value if isinstance(value, tuple) else (value,)
    bad = [v for v in values if v not in spec.valid]
    if not bad:
        return None
    what = "every element of " + name if isinstance(value, tuple) else name
    return f"{what} must be {spec.valid}, got {value!r}"


def check_fields(obj: Any, error: type[Exception] = ValueError) -> None:
    """Raises ``error`` for the first field of the dataclass ``obj`` outside its setting's choices or range."""
    for field in dataclasses.fields(obj):
        spec = described(field)
        message = spec and problem(field.name, spec, getattr(obj, field.name))
        if message:
            raise error(message)
