"""The QAT overlay: it quantizes where the int8 export does, and starts from calibrated ranges."""

from __future__ import annotations

import numpy as np

import ddi_tf  # noqa: F401
from ddi_tf.core.config import ModelConfig
from ddi_tf.model.build import build_model, set_gate_mode
from ddi_tf.quant import qat

CFG = ModelConfig(depth=8, groups=2, exits=(1,), exit_width=8, gate_hidden=8)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 32, 32, 3)).astype(np.float32)


def test_only_tensors_that_exist_in_int8_are_quantized():
    q = qat.quantize_model(build_model(CFG))
    ranged = set(qat.activation_ranges(q))
    # fused into the int8 conv before them (BN -> ReLU), or absent from the export (partial sums, pre-BN conv
    # outputs), or keeping their input's scale (2x2 average pool of an exit)
    for name in ("stem_bn", "block0_bn1", "block0_sum2", "block0_conv1", "exit0_conv_bn", "exit0_pool"):
        assert name not in ranged
    for name in ("input", "stem_relu", "block0_relu1", "block0_bn2_w1", "block0_bn2_w2", "block1_proj_bn",
                 "block0_relu2", "gate0_pool", "gate0_fc1", "gate0_fc2", "exit0_conv_relu", "exit0_gap", "exit0_fc"):
        assert name in ranged
    kernels = {v.name for v in q.non_trainable_weights if v.name.endswith("kernel_min:0")}
    assert "quant_block0_conv1/kernel_min:0" in kernels
    conv1 = next(v for v in q.non_trainable_weights if v.name == "quant_block0_conv1/kernel_min:0")
    assert conv1.shape == (16,)  # per output channel, as the int8 conv


def test_calibrated_ranges_follow_the_float_model_and_edges_are_tied():
    model = build_model(CFG)
    set_gate_mode(model, "learned")
    q = qat.quantize_model(model)
    x = _images(16)
    n = qat.calibrate_ranges(q, model, [x])
    assert n == 2 * len(qat.activation_ranges(q))
    ranges = qat.activation_ranges(q)
    assert ranges["input"] == (float(min(0, x.min())), float(x.max()))
    stem = model.get_layer("stem_relu")
    import tf_keras as keras

    probe = keras.Model(model.input, stem.output)
    assert ranges["stem_relu"][1] == float(np.max(probe(x)))
    edges = qat.tie_edge_ranges(q, CFG)
    ranges = qat.activation_ranges(q)
    for edge, names in qat.edge_groups(CFG).items():
        assert {ranges[n] for n in names} == {edges[edge]}


def test_calibration_brings_the_qat_model_close_to_the_float_model():
    model = build_model(CFG)
    set_gate_mode(model, "full")
    q = qat.quantize_model(model)
    set_gate_mode(q, "full")
    x = _images(32, seed=1)
    a = model(x, training=False)["exit1_logits"].numpy()
    before = q(x, training=False)["exit1_logits"].numpy()  # tfmot's initial ranges ([-6, 6], input [0, 0])
    qat.calibrate_ranges(q, model, [x])
    after = q(x, training=False)["exit1_logits"].numpy()
    assert np.linalg.norm(a - after) < 0.5 * np.linalg.norm(a - before)
