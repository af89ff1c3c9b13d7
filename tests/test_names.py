"""The names module: every name it makes parses back, and no other module builds or slices names by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ddi_tf.core import names
from ddi_tf.core.config import ModelConfig

PACKAGE = Path(__file__).resolve().parents[1] / "ddi_tf"


def test_names_parse_back():
    assert names.parse(names.block(3, "conv1")) == ("block", 3, "conv1")
    assert names.parse(names.gate(0)) == ("gate", 0, "")
    assert names.parse("stem_relu") == ("stem", None, "relu")
    assert names.parse("gate_lstm") == ("gate", None, "lstm")
    assert names.parse("total_cost") is None
    assert names.parse_output(names.decision(7)) == ("decision", 7)
    assert names.parse_output(names.exit_logits(2)) == ("logits", 2)
    assert names.parse_output(names.block(7, "conv1")) is None
    assert names.parse_grouped(names.group_conv(4, 2)) == ("block", 4, "conv2_g", 2)
    assert names.parse_grouped(names.width_bn(4, 3)) == ("block", 4, "bn2_w", 3)
    assert names.parse_grouped(names.gate(4, "fc2")) == ("gate", 4, "fc2", 0)
    assert names.parse_grouped(names.block(4, "conv2")) is None
    assert names.is_group_sum(names.group_sum(1, 2)) and not names.is_group_sum(names.block(1, "add"))
    assert names.width_groups(names.width(3)) == 3 and names.width_groups(names.SKIP) is None
    with pytest.raises(ValueError, match="not a numbered"):
        names.index_of("stem")


def test_output_keys_sort_by_index_not_text():
    keys = [names.decision(b) for b in (10, 2, 1)] + [names.exit_logits(j) for j in range(3)] + ["total_cost"]
    assert names.decision_keys(keys) == [names.decision(1), names.decision(2), names.decision(10)]
    assert names.exit_count(keys) == 3


def test_config_option_names_are_the_names_modules():
    cfg = ModelConfig(depth=8, groups=2, exits=(1, 2))
    assert cfg.option_names(0)[0] == names.SKIP
    assert [names.width_groups(o) for o in cfg.option_names(0)[1:]] == list(range(1, cfg.block_groups(0) + 1))


# what a hand-made name or a hand-parsed one looks like outside core/names.py
_HAND_MADE = re.compile(r'f"(block|gate|exit|transition)\{|\[5:-\d\]|\[:-9\]'
                        r'|re\.(fullmatch|match|search)\(r"(block|gate|exit)'
                        r'|\.(starts|ends)with\("(block|gate|exit|_decision|_logits|_probs)')


def test_no_module_but_names_makes_or_slices_names():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "names.py" or "data" in path.relative_to(PACKAGE).parts:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if _HAND_MADE.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
