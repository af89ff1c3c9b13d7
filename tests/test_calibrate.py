"""Gate cost calibration: the tilt is exact, and it puts the learned path on a target cost it can reach."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from ddi_tf import data as data_lib
from ddi_tf.core import names
from ddi_tf.core.arch import build_pieces
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import cost_table
from ddi_tf.model.build import build_model
from ddi_tf.training.calibrate import calibrate_gate_cost, tilt_gates

MEAN, STD = data_lib.normalization_for("cifar10")


def _model(gate_type: str = "ff", init_full: float = 0.0):
    keras.utils.set_random_seed(3)
    cfg = ModelConfig(depth=8, groups=2, exits=(1,), gate_type=gate_type, gate_init_full=init_full)
    table = cost_table(build_pieces(cfg), "macs")
    return cfg, build_model(cfg, table), table.full_cost()


def test_tilt_adds_delta_times_the_width_fraction_to_every_gates_bias():
    cfg, model, _ = _model()
    before = [model.get_layer(names.gate(b, "fc2")).get_weights()[1].copy() for b in range(cfg.num_blocks)]
    tilt_gates(model, cfg, 1.5)
    for b in range(cfg.num_blocks):
        np.testing.assert_allclose(model.get_layer(names.gate(b, "fc2")).get_weights()[1] - before[b],
                                   [0.0, 0.75, 1.5], atol=1e-6)
    tilt_gates(model, cfg, -1.5)
    for b in range(cfg.num_blocks):
        np.testing.assert_allclose(model.get_layer(names.gate(b, "fc2")).get_weights()[1], before[b], atol=1e-6)


@pytest.mark.parametrize("gate_type, target", [("ff", 0.45), ("ff", 0.9), ("rnn", 0.5)])
def test_calibration_reaches_a_reachable_target_on_its_images(gate_type, target):
    cfg, model, full = _model(gate_type, init_full=2.0)  # starts all full: the calibration must lower the cost
    data = data_lib.synthetic_cifar(256, 8, 10, 0)
    result = calibrate_gate_cost(model, cfg, data.x_train, data.y_train, target, full, MEAN, STD, batch_size=128)
    assert abs(result["ratio_before"] - target) > 0.1  # far from the target before
    assert abs(result["ratio_after"] - target) < 0.05, result
    from ddi_tf.evaluation.evaluate import Predictor
    measured = Predictor(model, 128, MEAN, STD)(data.x_train, data.y_train, "learned").cost[:, -1].mean() / full
    assert measured == pytest.approx(result["ratio_after"], abs=1e-9)  # the model keeps the chosen tilt


def test_calibration_refuses_a_static_model_and_no_images():
    cfg = ModelConfig(depth=8, gate_type="none")
    with pytest.raises(ValueError, match="gated"):
        calibrate_gate_cost(build_model(cfg), cfg, np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int64), 0.5,
                            1.0, MEAN, STD)
    cfg, model, full = _model()
    with pytest.raises(ValueError, match="val_size"):
        calibrate_gate_cost(model, cfg, np.zeros((0, 32, 32, 3), np.uint8), np.zeros(0, np.int64), 0.5, full,
                            MEAN, STD)
