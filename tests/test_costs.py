"""The cost tables: MACs counted against hand counts and the Keras layers, energy and latency tables, and the
reference budget rule."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tf_keras as keras
from hypothesis import given, settings
from hypothesis import strategies as st
from test_model import TINY, _x  # the same tiny model as the model tests

import ddi_tf  # noqa: F401
from ddi_tf.core.arch import backbone_macs, build_pieces, full_macs
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import CostError, cost_table
from ddi_tf.evaluation import policies
from ddi_tf.model.build import build_model, set_gate_mode


# --- costs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, millions", [(38, 83.3), (74, 168.2), (110, 253.1)])
def test_backbone_macs_match_hand_counts(depth, millions):
    assert round(backbone_macs(ModelConfig(depth=depth)) / 1e6, 1) == millions


def test_half_width_resnet20_costs_about_a_quarter():
    full, half = backbone_macs(ModelConfig()), backbone_macs(ModelConfig(base_width=8))
    assert 0.24 < half / full < 0.27


@pytest.mark.parametrize("cfg", [TINY, dataclasses.replace(TINY, gate_type="rnn"),
                                 dataclasses.replace(TINY, gate_type="none"),
                                 ModelConfig(backbone="densenet", depth=10, growth_rate=4, groups=2, exits=(1,)),
                                 dataclasses.replace(TINY, base_width=8, groups=2)],
                         ids=["ff", "rnn", "static", "densenet", "half_width"])
def test_counted_macs_equal_the_keras_layers(cfg):
    """Full-path MACs of the piece table == MACs from every Conv2D/Dense of the built model, and of the exit
    heads' 2x2 average pools, which deploy as stride-2 depthwise convs (4 MACs an output)."""
    model = build_model(cfg)
    total, seen_dense = 0, set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k = layer.kernel.shape
            total += h * w * k[0] * k[1] * k[2] * c_out
        elif isinstance(layer, keras.layers.Dense):
            calls = len(layer.inbound_nodes)  # shared LSTM/output dense run once per gate
            total += calls * layer.kernel.shape[0] * layer.kernel.shape[1]
            seen_dense.add(layer.name)
        elif isinstance(layer, keras.layers.AveragePooling2D) and layer.name.startswith("exit"):
            total += 4 * int(np.prod(layer.output.shape[1:]))
    assert total == full_macs(build_pieces(cfg))
    # and the model's own accounting on the all-full path agrees
    set_gate_mode(model, "full")
    out = model(_x(2), training=False)
    last = len(cfg.exit_positions) - 1
    assert float(out[f"exit{last}_cost"][0]) == pytest.approx(total)


def test_energy_table_and_latency_needs_a_table(tmp_path):
    pieces = build_pieces(TINY)
    e8, e32 = cost_table(pieces, "energy", "int8"), cost_table(pieces, "energy", "float32")
    assert 0 < e8.full_cost() < e32.full_cost()
    for costs in e8.costs:
        assert list(costs) == sorted(costs)
    with pytest.raises(CostError, match="profile"):
        cost_table(pieces, "latency")
    path = tmp_path / "lat.json"
    path.write_text('{"unit": "ms", "pieces": {"stem": {"run": 0.1}}}')
    with pytest.raises(CostError, match="no entry for piece 'gate0'"):
        cost_table(pieces, "latency", latency_path=str(path))
    # a table measured for another model's pieces (here: other channel groups) is refused, not half-used
    table = {p.name: {o.name: 0.01 for o in p.options} for p in pieces}
    path.write_text(json.dumps({"unit": "ms", "pieces": table}))
    assert cost_table(pieces, "latency", latency_path=str(path)).full_cost() > 0
    fewer = build_pieces(dataclasses.replace(TINY, min_group_channels=64))
    with pytest.raises(CostError, match="measured for another model"):
        cost_table(fewer, "latency", latency_path=str(path))


# --- the budget rule ---------------------------------------------------------------------------------------
def test_budget_below_the_cheapest_exit_is_an_error():
    table = cost_table(build_pieces(TINY))
    with pytest.raises(CostError, match="cheapest"):
        table.check_budget(table.cheapest_answer() * 0.99)
    table.check_budget(table.cheapest_answer())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_reference_budget_rule_never_exceeds_the_budget(data):
    kinds, costs = [], []
    for _ in range(data.draw(st.integers(1, 4))):
        for _ in range(data.draw(st.integers(0, 3))):
            n = data.draw(st.integers(1, 4))
            kinds.append("block")
            # integer costs, like MACs: float sums are then exact, whatever their order (see CostTable.reserves)
            costs.append(sorted(data.draw(st.lists(st.integers(0, 10**8), min_size=n, max_size=n))))
        kinds.append("exit")
        costs.append([data.draw(st.integers(0, 10**6))])
    from ddi_tf.core.costs import CostTable
    table = CostTable("macs", tuple(f"p{i}" for i in range(len(kinds))), tuple(kinds), tuple(map(tuple, costs)))
    # a budget is positive (zero is refused as no budget at all), at least the cheapest way to an answer
    budget = data.draw(st.floats(max(table.cheapest_answer(), 1e-3), table.full_cost() + 1, allow_nan=False))
    chosen = [data.draw(st.integers(0, len(c) - 1)) for c in costs]
    ran, spent, exits = policies.simulate_budget([list(c) for c in costs], kinds, table.reserves(), chosen, budget)
    assert spent <= budget
    assert exits >= 1
    assert all(r <= c for r, c in zip(ran, chosen, strict=True) if r >= 0)
