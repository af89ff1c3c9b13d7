"""The training recipe on tiny shapes: distillation, sandwich widths, the cost term, init scale, BN, EMA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import ddi_tf  # noqa: F401
from ddi_tf import data as data_lib
from ddi_tf.core.config import ModelConfig
from ddi_tf.model import weights as weights_lib
from ddi_tf.model.build import build_model, set_gate_mode
from ddi_tf.model.weights import gated_from_static
from ddi_tf.training import losses as losses_lib
from ddi_tf.training import trainer as trainer_lib
from ddi_tf.training.config import TrainConfig

TINY = ModelConfig(depth=8, groups=2, exits=(1, 2), exit_width=8, gate_hidden=4)
TRAIN = TrainConfig(dataset="synthetic", synthetic_train=256, synthetic_test=64, val_size=0, batch_size=32,
                    stage1_steps=4, warmup_steps=1, log_every=100, checkpoint_every=100)


def _trainer(tmp_path, model_cfg: ModelConfig = TINY, **train) -> trainer_lib._Trainer:
    cfg = TrainConfig(**{**TRAIN.__dict__, **train})
    return trainer_lib._Trainer(model_cfg, cfg, str(tmp_path), tf.distribute.get_strategy())


def _batches(n: int, batch: int = 32, seed: int = 0):
    data = data_lib.synthetic_cifar(n * batch, 8, 10, seed)
    mean, std = data_lib.normalization_for("cifar10")
    x = data_lib.normalize(data.x_train, mean, std).numpy()
    return [(tf.constant(x[i * batch:(i + 1) * batch]), tf.constant(data.y_train[i * batch:(i + 1) * batch]))
            for i in range(n)]


def test_distillation_loss_equals_the_hand_computation():
    s = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    t = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
    temp = 2.0

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t / temp), softmax(s / temp)
    expected = temp ** 2 * (p * (np.log(p) - np.log(q))).sum(-1)
    got = losses_lib.distillation_loss(tf.constant(s), tf.constant(t), temp).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert losses_lib.distillation_loss(tf.constant(t), tf.constant(t), temp).numpy() == pytest.approx([0, 0],
                                                                                                          abs=1e-6)
    teacher = tf.Variable(t)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(losses_lib.distillation_loss(tf.constant(s), teacher, temp))
    assert tape.gradient(loss, teacher) is None  # the teacher is not taught


def test_label_smoothing_equals_the_hand_computation():
    logits = np.array([[2.0, 0.0, -1.0]], np.float32)
    logp = logits - np.log(np.exp(logits).sum())
    target = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    got = losses_lib.classification_loss(tf.constant([0]), tf.constant(logits), 0.1).numpy()
    np.testing.assert_allclose(got, [-(target * logp).sum()], rtol=1e-5)


def test_sandwich_step_runs_full_narrowest_and_random_and_trains_every_width(tmp_path):
    t = _trainer(tmp_path, width_sampling="sandwich", distill_weight=1.0)
    assert t.paths("stage1") == [("full", 0.0, None), ("fixed", 0.0, 1), ("random", 1.0, None)]
    assert t.paths("stage3") == [("full", 0.0, None), ("learned", 0.0, None)]
    layer_only = _trainer(tmp_path / "g1", ModelConfig(**{**TINY.__dict__, "groups": 1}), width_sampling="sandwich")
    assert layer_only.paths("stage1") == [("full", 0.0, None), ("random", 1.0, None)]  # w1 is the full path
    t.configure_stage("stage1")
    step = t.make_step("stage1", 0, 4)
    widths = [v for v in t.model.trainable_variables if "conv2_g" in v.name or "bn2_w" in v.name]
    before = [v.numpy().copy() for v in widths]
    x, y = _batches(1)[0]
    step(x, y)
    for v, b in zip(widths, before, strict=True):
        assert not np.array_equal(v.numpy(), b), f"{v.name} got no gradient"
    # the random path is not the full one: some samples skip or narrow a block
    set_gate_mode(t.model, "random", 1.0)
    out = t.model(x, training=True)
    assert float(tf.reduce_mean(out["block0_decision"][:, -1])) < 0.9


def test_dual_cost_term_drives_a_tiny_model_to_its_target(tmp_path):
    keras.utils.set_random_seed(0)
    target = 0.6
    cfg = ModelConfig(**{**TINY.__dict__, "gate_init_full": 2.0})
    t = _trainer(tmp_path, cfg, stage1_steps=0, stage3_steps=150, cost_loss="dual", cost_weight=10.0,
                 cost_dual_lr=0.01, target_cost=target, lr=0.05, lr_scope="run")
    t.configure_stage("stage3")
    step = t.make_step("stage3", 0, 150)
    batches = _batches(8)
    ratios = [float(step(*batches[i % len(batches)])["cost_ratio"]) for i in range(150)]
    assert ratios[0] > 0.9  # the gates start by running everything
    assert abs(np.mean(ratios[-30:]) - target) < 0.05, ratios[-30:]


def test_sign_cost_term_is_the_fractional_skipping_rule():
    ratio = tf.constant([0.2, 0.6])
    above = losses_lib.cost_term("sign", ratio, 0.3, 2.0, tf.constant(0.0), global_batch=2)
    below = losses_lib.cost_term("sign", ratio, 0.5, 2.0, tf.constant(0.0), global_batch=2)
    assert float(above) == pytest.approx(2.0 * 0.4) and float(below) == pytest.approx(-2.0 * 0.4)
    dual = losses_lib.cost_term("dual", ratio, 0.5, 2.0, tf.constant(3.0), global_batch=2)
    assert float(dual) == pytest.approx(2.0 * 0.1 ** 2 + 3.0 * 0.4)


def test_split_conv2_starts_at_the_scale_of_the_whole_convolution():
    keras.utils.set_random_seed(0)
    cfg = ModelConfig(depth=20, groups=4, exits=(), gate_hidden=4)
    gated = build_model(cfg)
    static = build_model(ModelConfig(**{**cfg.__dict__, "gate_type": "none"}))
    b = 8  # a 64-channel block: four groups of 16 input channels
    whole = static.get_layer(f"block{b}_conv2").get_weights()[0].std()
    split = np.concatenate([gated.get_layer(f"block{b}_conv2_g{j}").get_weights()[0] for j in range(1, 5)], axis=2)
    assert split.std() == pytest.approx(whole, rel=0.05)


def test_gated_model_started_from_a_static_backbone_computes_it_with_gates_full():
    cfg = ModelConfig(**{**TINY.__dict__, "exits": ()})
    static = build_model(ModelConfig(**{**cfg.__dict__, "gate_type": "none"}))
    rng = np.random.default_rng(0)
    for layer in static.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b_, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b_.shape),
                               rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2.0, v.shape)])
    gated = build_model(cfg)
    for layer in gated.layers:
        if not layer.weights or layer.name.startswith("gate"):
            continue
        split = gated_from_static(layer.name, static, cfg)
        layer.set_weights(split if split is not None else static.get_layer(layer.name).get_weights())
    set_gate_mode(gated, "full")
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(gated(x)["exit0_logits"], static(x)["exit0_logits"], rtol=1e-4, atol=1e-4)


def test_batch_norm_reestimation_takes_the_mean_of_the_batches_statistics():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(4, name="d")(inp)))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, size=(64, 4)).astype(np.float32) for i in range(3)]
    assert weights_lib.reestimate_batch_norm(model, batches, "full") == 1
    dense = keras.Model(inp, model.get_layer("d").output)
    feats = [dense(b).numpy() for b in batches]
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([f.mean(0) for f in feats], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([f.var(0) for f in feats], 0),
                               rtol=1e-3, atol=1e-5)
    assert bn.momentum == pytest.approx(0.99)  # restored


def test_weight_average_follows_the_warmed_up_decay(tmp_path):
    decay = 0.9
    t = _trainer(tmp_path, ema_decay=decay, nesterov=True, label_smoothing=0.1)
    t.configure_stage("stage1")
    step = t.make_step("stage1", 0, 4)
    expected = [v.numpy().astype(np.float64) for v in t.averaged]
    for n, (x, y) in enumerate(_batches(4), start=1):
        step(x, y)
        d = min(decay, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * v.numpy() for e, v in zip(expected, t.averaged, strict=True)]
    for e, avg in zip(expected, t.ema, strict=True):
        np.testing.assert_allclose(avg.numpy(), e, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a.numpy(), v.numpy()) for a, v in zip(t.ema, t.averaged, strict=True))


def test_one_schedule_over_the_run_decays_to_zero_without_restart():
    cfg = TrainConfig(stage1_steps=100, stage2_steps=20, stage3_steps=80, lr=0.1, warmup_steps=10, lr_scope="run")
    lrs = [float(losses_lib.learning_rate(s, tf.constant(t), cfg.float_steps, cfg))
           for t, s in [(t, "stage1" if t < 100 else "stage2" if t < 120 else "stage3") for t in range(200)]]
    assert max(lrs) == pytest.approx(0.1, rel=0.05)
    after_warmup = lrs[10:]
    assert all(a >= b - 1e-9 for a, b in zip(after_warmup, after_warmup[1:], strict=False))  # no restart
    assert lrs[-1] < 1e-4


@pytest.mark.parametrize("kwargs", [{"lr_scope": "epoch"}, {"width_sampling": "slim"}, {"cost_loss": "l1"},
                                    {"label_smoothing": 1.0}, {"ema_decay": 1.0}, {"distill_temperature": 0.0},
                                    {"cost_dual_lr": float("nan")}])
def test_bad_recipe_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_a_step_under_mixed_bfloat16_keeps_float32_losses_and_weights(tmp_path):
    """--mixed_precision=mixed_bfloat16 (and benchmarks/train_speed.py): the logits are bfloat16 there, the losses
    (cross-entropy, distillation) must be computed in float32 and the weights stay float32."""
    t = _trainer(tmp_path, width_sampling="sandwich", distill_weight=1.0, label_smoothing=0.1,
                 mixed_precision="mixed_bfloat16")
    t.configure_stage("stage1")
    step = t.make_step("stage1", 0, 4)
    (x, y), = _batches(1)
    assert t.model(x, training=False)["exit1_logits"].dtype == tf.bfloat16
    before = [v.numpy().copy() for v in t.model.trainable_variables]
    metrics = step(x, y)
    assert metrics["loss"].dtype == tf.float32 and np.isfinite(float(metrics["loss"]))
    assert all(v.dtype == tf.float32 for v in t.model.trainable_variables)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, t.model.trainable_variables, strict=True))
