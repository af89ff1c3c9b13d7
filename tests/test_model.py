"""Model, layers, cost accounting and the budget rule, on tiny shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from hypothesis import given, settings
from hypothesis import strategies as st

import ddi_tf  # noqa: F401
from ddi_tf.core.arch import build_pieces
from ddi_tf.core.config import ConfigError, ModelConfig
from ddi_tf.core.costs import cost_table
from ddi_tf.evaluation import policies
from ddi_tf.model.build import build_model, set_gate_mode
from ddi_tf.model.layers import CUSTOM_OBJECTS, BudgetGuard, GateDecision
from ddi_tf.model.weights import copy_weights, regrouped_weights, static_from_ddi

TINY = ModelConfig(depth=8, groups=2, exits=(1, 2), exit_width=8, gate_hidden=4)


def _x(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 32, 32, 3)).astype(np.float32)


def _randomize_bn(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial BN statistics so that equality tests are not trivially true."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2.0, v.shape)])


# --- configuration ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, fragment", [
    ({"depth": 21}, "6n+2"),
    ({"backbone": "densenet", "depth": 41}, "6n+4"),
    ({"groups": 3}, "valid channel-group counts: [1, 2, 4, 8, 16]"),
    ({"depth": 8, "exits": (3,)}, "in 1..2"),
    ({"depth": 8, "exits": (2, 1)}, "increasing"),
    ({"gate_type": "lstm"}, "gate_type must be one of"),
    ({"min_group_channels": -1}, "min_group_channels must be >= 0"),
    ({"groups": 8, "min_group_channels": 12}, "must divide both"),
    ({"gate_type": "rnn", "min_group_channels": 16}, "rnn gates share one output layer"),
])
def test_invalid_configs_fail_with_what_is_valid(kwargs, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        ModelConfig(**kwargs)
    assert fragment in str(e.value)


def test_config_dict_round_trip():
    cfg = ModelConfig(depth=38, exits=(6, 12), gate_type="rnn")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_min_group_channels_gives_wider_groups_where_g_would_be_narrow():
    cfg = ModelConfig(depth=20, groups=4, min_group_channels=16)
    assert [cfg.block_groups(b) for b in range(9)] == [1, 1, 1, 2, 2, 2, 4, 4, 4]
    pieces = {p.name: p for p in build_pieces(cfg)}
    assert [o.name for o in pieces["block0"].options] == ["skip", "w1"]
    assert [o.name for o in pieces["block4"].options] == ["skip", "w1", "w2"]
    assert pieces["gate4"].out_shape == (1, 1, 3)
    # the widest option of every block is the full block, as with G groups everywhere
    plain = {p.name: p for p in build_pieces(ModelConfig(depth=20, groups=4))}
    for name, p in pieces.items():
        if p.kind == "block":
            assert p.options[-1].macs == plain[name].options[-1].macs
            assert p.options[1].macs == plain[name].options[4 // cfg.block_groups(p.index)].macs
    assert ModelConfig(depth=20, groups=4).block_groups(0) == 4


# --- layers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CUSTOM_OBJECTS))
def test_custom_layer_config_round_trip(name):
    cls = CUSTOM_OBJECTS[name]
    args = {"GateDecision": {"num_options": 5, "estimator": "gumbel", "temperature": 0.5},
            "ChannelGroups": {"groups": 4}, "OptionSelect": {"has_base": False}, "LSTMCellOps": {"units": 7},
            "BatchZeros": {"units": 3}, "BudgetGuard": {"costs": [1.0, 2.5], "reserve": 4.0, "use_budget": True},
            "CostState": {}}[name]
    layer = cls(name="x", **args)
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for k, v in args.items():
        assert getattr(clone, k) == v


def test_model_serialises_and_reloads_with_same_outputs(tmp_path):
    model = build_model(TINY)
    path = str(tmp_path / "m.keras")
    model.save(path)
    with keras.utils.custom_object_scope(CUSTOM_OBJECTS):
        loaded = keras.models.load_model(path)
    a, b = model(_x(), training=False), loaded(_x(), training=False)
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_gate_decision_is_hard_one_hot_with_straight_through_gradient():
    layer = GateDecision(3)
    logits = tf.Variable([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        hard, _ = layer(logits, training=True)
        loss = tf.reduce_sum(hard * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(hard.numpy(), [[0, 1, 0], [1, 0, 0]])
    grad = tape.gradient(loss, logits).numpy()
    assert np.abs(grad).sum() > 0


def test_gumbel_estimator_is_one_hot_while_training_and_argmax_at_inference():
    layer = GateDecision(4, estimator="gumbel", temperature=0.5)
    logits = tf.constant(np.random.default_rng(0).normal(size=(64, 4)), tf.float32)
    hard, _ = layer(logits, training=True)
    np.testing.assert_allclose(hard.numpy().sum(-1), 1.0)
    assert set(np.unique(hard.numpy())) <= {0.0, 1.0}
    inf, _ = layer(logits, training=False)
    np.testing.assert_array_equal(inf.numpy().argmax(-1), logits.numpy().argmax(-1))


# --- model structure ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [TINY, dataclasses.replace(TINY, gate_type="rnn"),
                                 ModelConfig(backbone="densenet", depth=10, growth_rate=4, groups=2, exits=(1,),
                                             exit_width=8, gate_hidden=4)],
                         ids=["resnet-ff", "resnet-rnn", "densenet-ff"])
def test_output_names_and_shapes(cfg):
    model = build_model(cfg)
    out = model(_x(3), training=False)
    e, g = len(cfg.exit_positions), cfg.groups + 1
    assert {k for k in out if k.startswith("exit")} == {f"exit{j}_{s}" for j in range(e)
                                                         for s in ("logits", "cost", "reached")}
    for j in range(e):
        assert out[f"exit{j}_logits"].shape == (3, cfg.num_classes)
        assert out[f"exit{j}_cost"].shape == (3,)
    for b in range(cfg.num_blocks):
        assert out[f"block{b}_decision"].shape == (3, g)
        assert out[f"block{b}_probs"].shape == (3, g)


def test_merged_groups_compute_the_same_widths():
    """A model with fewer groups per block, initialised by merging a G=4 model's groups, runs the same widths."""
    src_cfg = ModelConfig(depth=20, groups=4, exits=(3,), exit_width=8, gate_hidden=4)
    dst_cfg = dataclasses.replace(src_cfg, min_group_channels=16)
    src, dst = build_model(src_cfg), build_model(dst_cfg)
    _randomize_bn(src)
    for layer in dst.layers:
        if layer.weights:
            merged = regrouped_weights(layer.name, src, src_cfg, dst_cfg)
            layer.set_weights(merged if merged is not None else src.get_layer(layer.name).get_weights())
    x = _x(4)
    for mode, fixed in [("full", None), ("fixed", 0)]:
        set_gate_mode(src, mode, fixed_option=fixed)
        set_gate_mode(dst, mode, fixed_option=fixed)
        a, b = src(x, training=False), dst(x, training=False)
        np.testing.assert_allclose(a["exit1_logits"].numpy(), b["exit1_logits"].numpy(), rtol=1e-4, atol=1e-4)
    # the merged gate keeps the source's logits of skip and of the widths it still has
    kernel = src.get_layer("gate4_fc2").get_weights()[0]
    np.testing.assert_array_equal(dst.get_layer("gate4_fc2").get_weights()[0], kernel[:, [0, 2, 4]])
    np.testing.assert_array_equal(dst.get_layer("block1_bn2_w1").get_weights()[0],
                                  src.get_layer("block1_bn2_w4").get_weights()[0])
    assert regrouped_weights("block7_conv2_g1", src, src_cfg, dst_cfg) is None  # stage 3 keeps its 4 groups
    with pytest.raises(ValueError, match="cannot be merged"):
        regrouped_weights("block0_conv2_g1", dst, dst_cfg, src_cfg)


@pytest.mark.parametrize("backbone, depth", [("resnet", 8), ("densenet", 10)])
def test_all_full_gates_equal_the_static_backbone(backbone, depth):
    cfg = ModelConfig(backbone=backbone, depth=depth, groups=2, exits=(1,), exit_width=8, gate_hidden=4,
                      growth_rate=4)
    ddi = build_model(cfg)
    _randomize_bn(ddi)
    static = build_model(dataclasses.replace(cfg, gate_type="none"))
    static_from_ddi(ddi, static, cfg)
    set_gate_mode(ddi, "full")
    x = _x(8)
    a, b = ddi(x, training=False), static(x, training=False)
    for j in range(len(cfg.exit_positions)):
        la, lb = a[f"exit{j}_logits"].numpy(), b[f"exit{j}_logits"].numpy()
        # Same weights; the only difference is the summation order of the grouped convolution.
        np.testing.assert_allclose(la, lb, rtol=1e-4, atol=1e-4 * np.abs(lb).max())
        np.testing.assert_array_equal(la.argmax(-1), lb.argmax(-1))
    # The static model accounts exactly the backbone's pieces (no gates), the ddi one adds its gates.
    gate_macs = sum(p.options[0].macs for p in build_pieces(cfg) if p.kind == "gate")
    np.testing.assert_allclose(a["exit1_cost"].numpy() - b["exit1_cost"].numpy(), gate_macs)


def test_skipped_block_leaves_exactly_the_shortcut():
    cfg = ModelConfig(depth=14, groups=2, gate_hidden=4)  # 2 blocks per stage: block1 identity, block2 projection
    model = build_model(cfg)
    _randomize_bn(model)
    set_gate_mode(model, "fixed", fixed_option=0)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in
                                      ("block0_relu2", "block1_relu2", "block2_relu2", "block2_proj_bn")])
    x0, x1, x2, proj = [t.numpy() for t in probe(_x(), training=False)]
    np.testing.assert_array_equal(x1, x0)  # identity shortcut, input already non-negative
    np.testing.assert_array_equal(x2, np.maximum(proj, 0.0))  # projection block still runs its shortcut


def test_narrow_width_equals_sliced_computation():
    """Width k = the first k groups of conv1's channels through the matching input slice of conv2."""
    cfg = ModelConfig(depth=8, groups=4, gate_hidden=4)
    model = build_model(cfg)
    _randomize_bn(model)
    set_gate_mode(model, "fixed", fixed_option=2)  # w2: first 2 of 4 groups
    probe = keras.Model(model.input, [model.get_layer("stem_relu").output, model.get_layer("block0_relu2").output])
    x_in, y = [t.numpy() for t in probe(_x(), training=False)]
    conv1 = model.get_layer("block0_conv1").get_weights()[0][..., :8]
    g, bt, m, v = model.get_layer("block0_bn1").get_weights()
    h = tf.nn.conv2d(x_in, conv1, 1, "SAME").numpy()
    h = np.maximum((h - m[:8]) / np.sqrt(v[:8] + 1e-5) * g[:8] + bt[:8], 0)
    w2 = np.concatenate([model.get_layer(f"block0_conv2_g{j}").get_weights()[0] for j in (1, 2)], axis=2)
    z = tf.nn.conv2d(h, w2, 1, "SAME").numpy()
    g, bt, m, v = model.get_layer("block0_bn2_w2").get_weights()
    ref = np.maximum(x_in + (z - m) / np.sqrt(v + 1e-5) * g + bt, 0)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_gradients_reach_the_gate_weights():
    keras.utils.set_random_seed(0)
    model = build_model(dataclasses.replace(TINY, gate_hidden=16))  # wide enough that no ReLU layer is all dead
    x, y = _x(8), np.arange(8) % 10
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, out["exit2_logits"], from_logits=True))
        loss += tf.reduce_mean(tf.cast(out["exit2_cost"], tf.float32)) / 1e6
    gate_vars = [v for v in model.trainable_variables if v.name.startswith("gate")]
    grads = tape.gradient(loss, gate_vars)
    assert gate_vars and all(g is not None for g in grads)
    for v, g in zip(gate_vars, grads, strict=True):
        if "kernel" in v.name:
            assert float(tf.reduce_sum(tf.abs(g))) > 0, v.name


@pytest.fixture(scope="module")
def budget_model():
    cfg = dataclasses.replace(TINY, groups=4)
    model = build_model(cfg)
    _randomize_bn(model)
    for layer in model.layers:  # sharp random gates so that different options get chosen
        if layer.name.startswith("gate") and layer.name.endswith("fc2"):
            k, b = layer.get_weights()
            layer.set_weights([k * 50, np.linspace(-2, 2, b.size)])
    bm = build_model(cfg, budget_input=True)
    copy_weights(model, bm)
    table = cost_table(build_pieces(cfg))
    return bm, table, tf.function(lambda x, b: bm({"image": x, "budget": b}, training=False))


@settings(max_examples=25, deadline=None)
@given(frac=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_keras_budget_policy_never_exceeds_a_random_budget(budget_model, frac, seed):
    bm, table, fn = budget_model
    lo, hi = table.cheapest_answer(), table.full_cost()
    budgets = lo + (hi - lo) * np.random.default_rng(seed).uniform(0, 1, 6) * frac
    out = {k: v.numpy() for k, v in fn(_x(6, seed), tf.constant(budgets, tf.float64)).items()}
    outputs = policies.ExitOutputs.from_model_outputs(out, np.zeros(6, int))
    assert outputs.reached[:, 0].all()
    for j in range(outputs.num_exits):
        reached = outputs.reached[:, j]
        assert (outputs.cost[reached, j] <= budgets[reached]).all()
    res = policies.evaluate(outputs, 0.5)
    assert res["unanswered"] == 0


def test_budget_downgrades_then_halts():
    guard = BudgetGuard([0.0, 10.0, 20.0], reserve=5.0, use_budget=True)
    state = tf.constant([[0.0, 0.0]] * 4, tf.float64)
    onehot = tf.one_hot([2, 2, 1, 2], 3)
    budget = tf.constant([100.0, 16.0, 4.0, 25.0], tf.float64)
    new_state, new_onehot = guard([state, onehot, budget])
    np.testing.assert_array_equal(new_onehot.numpy().argmax(-1), [2, 1, 0, 2])
    np.testing.assert_array_equal(new_state.numpy()[:, 1], [0, 0, 1, 0])  # 0 + 0 + 5 > 4: halted
    np.testing.assert_array_equal(new_state.numpy()[:, 0], [20, 10, 0, 20])


def test_energy_budget_is_enforced_like_a_mac_budget():
    cfg = dataclasses.replace(TINY, groups=4)
    table = cost_table(build_pieces(cfg), "energy", "int8")
    model = build_model(cfg, table, budget_input=True)
    lo, hi = table.cheapest_answer(), table.full_cost()
    budgets = np.linspace(lo, hi, 6)
    out = {k: v.numpy() for k, v in model({"image": _x(6), "budget": tf.constant(budgets, tf.float64)},
                                          training=False).items()}
    outputs = policies.ExitOutputs.from_model_outputs(out, np.zeros(6, int))
    assert outputs.reached[:, 0].all()
    assert all((outputs.cost[outputs.reached[:, j], j] <= budgets[outputs.reached[:, j]]).all()
               for j in range(outputs.num_exits))
    assert outputs.reached[-1, -1]  # the full budget reaches the final exit


def test_exit_costs_from_the_recorded_decisions_equal_the_models_own(budget_model):
    from ddi_tf.evaluation.evaluate import exit_costs

    bm, table, fn = budget_model
    budgets = np.linspace(table.cheapest_answer(), table.full_cost(), 8)
    x = _x(8, 3)
    out = {k: v.numpy() for k, v in fn(x, tf.constant(budgets, tf.float64)).items()}
    outputs = policies.ExitOutputs.from_model_outputs(out, np.zeros(8, int))
    assert 0 < outputs.reached.sum() < outputs.reached.size  # some samples halted early
    got = exit_costs(table, outputs.decisions, 8)
    np.testing.assert_allclose(got[outputs.reached], outputs.cost[outputs.reached])
    # another unit: an energy-accounting model with the same weights and no budget takes the same decisions
    cfg = dataclasses.replace(TINY, groups=4)
    energy = cost_table(build_pieces(cfg), "energy")
    em = build_model(cfg, energy, budget_input=True)
    copy_weights(bm, em)
    inf = tf.constant([np.inf] * 8, tf.float64)
    free = policies.ExitOutputs.from_model_outputs({k: v.numpy() for k, v in fn(x, inf).items()}, np.zeros(8, int))
    e_out = policies.ExitOutputs.from_model_outputs(
        {k: v.numpy() for k, v in em({"image": x, "budget": inf}, training=False).items()}, np.zeros(8, int))
    np.testing.assert_allclose(exit_costs(energy, free.decisions, 8), e_out.cost, rtol=1e-9)
    free.extra_costs = {"uj": e_out.cost}
    assert policies.evaluate(free)["mean_uj"] == pytest.approx(e_out.cost[:, -1].mean())


@pytest.fixture(scope="module")
def deferred_model(budget_model):
    bm, table, _ = budget_model
    dm = build_model(dataclasses.replace(TINY, groups=4), table, budget_input=True, defer_exits=True)
    copy_weights(bm, dm)
    return dm, table


@settings(max_examples=30, deadline=None)
@given(frac=st.floats(0.0, 1.0), option=st.integers(0, 4), seed=st.integers(0, 1000))
def test_keras_deferred_exits_follow_the_reference_rule(deferred_model, frac, option, seed):
    """In-graph deferred exits (BudgetGuard(defer=True)) take the decisions, spend and answer of
    policies.simulate_budget(defer_exits=True), the rule the board runtime and the C core follow."""
    dm, table = deferred_model
    set_gate_mode(dm, "fixed", fixed_option=option)
    lo, hi = table.cheapest_answer(), table.full_cost()
    budgets = lo + (hi - lo) * np.random.default_rng(seed).uniform(0, 1, 4) * frac
    out = {k: v.numpy() for k, v in dm({"image": _x(4, seed), "budget": tf.constant(budgets, tf.float64)},
                                       training=False).items()}
    set_gate_mode(dm, "learned")
    outputs = policies.ExitOutputs.from_model_outputs(out, np.zeros(4, int))
    chosen = [option if k == "block" else 0 for k in table.kinds]
    blocks = [i for i, k in enumerate(table.kinds) if k == "block"]
    for s in range(4):
        ran, spent, exits = policies.simulate_budget([list(c) for c in table.costs], list(table.kinds),
                                                     list(table.reserves()), chosen, budgets[s], defer_exits=True)
        assert out["total_cost"][s] == spent <= budgets[s]
        assert np.flatnonzero(outputs.reached[s]).max() == exits - 1
        for b, i in enumerate(blocks):
            if ran[i] >= 0:
                assert out[f"block{b}_decision"][s].argmax() == ran[i]
    res = policies.evaluate(outputs, budget=None)
    assert res["unanswered"] == 0 and res["max_cost"] == out["total_cost"].max()


def test_deferred_exits_need_a_budget_input():
    with pytest.raises(ValueError, match="budget"):
        build_model(TINY, defer_exits=True)
