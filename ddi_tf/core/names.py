"""Every name the model, the cost table, the QAT overlay and the export share: made and parsed here only.

Layers and pieces are named ``<unit><index>[_<part>]``: ``stem``, ``gate3_fc2``, ``block3_conv2_g1``,
``exit2_logits``, ``transition1_conv`` (a unit's piece is its bare name, ``block3``). Model outputs are
``block<b>_decision`` / ``block<b>_probs`` (gate choices), ``exit<j>_logits`` and ``exit<j>_cost``. A block's
options are ``skip`` and ``w<k>`` (its first k channel groups); a piece option's key in an export is
``<piece>__<option>`` (the board package's format: ``ddi_runtime.manifest.option_key``); the feature edges
between pieces are ``stage<s>`` (and ``image``). Renaming any of these breaks saved models and exports.
"""

from __future__ import annotations

import re

from ddi_runtime.manifest import option_key

SKIP = "skip"
_LAYER = re.compile(r"(stem|gate|block|exit|transition)(\d*)(?:_(.+))?")

__all__ = ["SKIP", "block", "decision", "edge", "exit", "exit_cost", "exit_logits", "gate", "group_conv",
           "option_key", "parse", "parse_grouped", "parse_output", "probs", "transition", "width", "width_bn",
           "width_groups", "group_sum", "is_group_sum", "is_gate_layer", "exit_count", "decision_keys", "index_of"]


def _name(unit: str, index: int, part: str) -> str:
    return f"{unit}{index}_{part}" if part else f"{unit}{index}"


def block(b: int, part: str = "") -> str:
    """``block<b>`` (the piece) or ``block<b>_<part>`` (a layer of it)."""
    return _name("block", b, part)


def gate(b: int, part: str = "") -> str:
    """``gate<b>`` (the gate before block b) or one of its layers."""
    return _name("gate", b, part)


def exit(j: int, part: str = "") -> str:  # noqa: A001 - the unit's name
    """``exit<j>`` (the j-th classifier) or one of its layers."""
    return _name("exit", j, part)


def transition(s: int, part: str = "") -> str:
    """``transition<s>`` (DenseNet's transition after stage s) or one of its layers."""
    return _name("transition", s, part)


def parse(name: str) -> tuple[str, int | None, str] | None:
    """``(unit, index, part)`` of a layer or piece name (index None for ``stem``), or None for another name."""
    m = _LAYER.fullmatch(name)
    if m is None:
        return None
    return m.group(1), int(m.group(2)) if m.group(2) else None, m.group(3) or ""


def decision(b: int) -> str:
    """The model output holding block b's one-hot gate choice."""
    return block(b, "decision")


def probs(b: int) -> str:
    """The model output holding block b's gate probabilities."""
    return block(b, "probs")


def exit_logits(j: int) -> str:
    """The model output holding exit j's logits."""
    return exit(j, "logits")


def exit_cost(j: int) -> str:
    """The model output holding the cost spent up to exit j."""
    return exit(j, "cost")


def parse_output(key: str) -> tuple[str, int] | None:
    """``("decision" | "probs" | "logits" | "cost", index)`` of a model output key, or None."""
    p = parse(key)
    if p is None or p[1] is None:
        return None
    unit, index, part = p
    if (unit, part) in (("block", "decision"), ("block", "probs"), ("exit", "logits"), ("exit", "cost")):
        return part, index
    return None


def width(k: int) -> str:
    """The option name of a block's first k channel groups."""
    return f"w{k}"


def width_groups(option: str) -> int | None:
    """k of a ``w<k>`` option, None for ``skip`` or another name."""
    m = re.fullmatch(r"w(\d+)", option)
    return int(m.group(1)) if m else None


def edge(stage: int) -> str:
    """The feature edge (one int8 range) of resolution stage ``stage``."""
    return f"stage{stage}"


_GROUPED = re.compile(r"(conv2_g|bn2_w)(\d+)|(fc2)")


def group_conv(b: int, k: int) -> str:
    """Block b's conv2 over its k-th channel group (1-based)."""
    return block(b, f"conv2_g{k}")


def width_bn(b: int, k: int) -> str:
    """Block b's batch norm after conv2 for width k (its first k groups)."""
    return block(b, f"bn2_w{k}")


def parse_grouped(name: str) -> tuple[str, int, str, int] | None:
    """``(unit, index, kind, k)`` of a layer whose weights depend on the channel grouping: ``block<b>_conv2_g<k>``
    (kind ``conv2_g``), ``block<b>_bn2_w<k>`` (``bn2_w``) or ``gate<b>_fc2`` (``fc2``, k 0); None otherwise."""
    p = parse(name)
    if p is None or p[1] is None or p[0] not in ("block", "gate"):
        return None
    m = _GROUPED.fullmatch(p[2])
    if m is None or (p[0] == "block") != (m.group(3) is None):
        return None
    return (p[0], p[1], "fc2", 0) if m.group(3) else (p[0], p[1], m.group(1), int(m.group(2)))


def group_sum(b: int, k: int) -> str:
    """The running sum of block b's first k group convolutions (its width-k conv2 output)."""
    return block(b, f"sum{k}")


def is_group_sum(name: str) -> bool:
    """Whether ``name`` is a ``group_sum`` layer."""
    p = parse(name)
    return p is not None and p[0] == "block" and p[1] is not None and re.fullmatch(r"sum\d+", p[2]) is not None


def is_gate_layer(name: str) -> bool:
    """Whether layer ``name`` belongs to a gate (``gate<b>_*`` or the rnn gates' shared ``gate_lstm``)."""
    p = parse(name)
    return p is not None and p[0] == "gate"


def exit_count(keys) -> int:
    """How many ``exit<j>_logits`` outputs are among ``keys`` (a model's output names)."""
    return sum(1 for k in keys if (p := parse_output(k)) and p[0] == "logits")


def decision_keys(keys) -> list[str]:
    """The ``block<b>_decision`` outputs among ``keys``, in block order."""
    found = [(p[1], k) for k in keys if (p := parse_output(k)) and p[0] == "decision"]
    return [k for _, k in sorted(found)]


def index_of(name: str) -> int:
    """The unit index of a layer, piece or output name (``block3_relu2`` -> 3); ValueError for ``stem`` or another
    name."""
    p = parse(name)
    if p is None or p[1] is None:
        raise ValueError(f"{name!r} is not a numbered layer, piece or output name")
    return p[1]
