"""Gate cost calibration (``--calibrate_cost``): one logit tilt that puts the learned path on its target cost.

The cost term trains the gates on augmented training batches in training mode; the evaluated network (weight
average, re-estimated batch norm, inference mode, other images) runs cheaper or dearer paths than those batches
did, more so for high targets. After the float stages this finds one number ``delta`` such that adding
``delta * k / G_b`` to the logit of every gate's option k (k channel groups of G_b; 0 for skip) makes the
learned path's mean cost on held-out training images equal the target, and writes it into the gates' output
bias: the exported int8 gates carry it with no extra operation. ``delta > 0`` favours wider options. For one
gate the chosen width never decreases as ``delta`` grows; over the network (a gate's input depends on the
earlier decisions) the mean cost is found by bisection and the closest point kept.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras

from ddi_tf.core import names
from ddi_tf.core.config import ModelConfig
from ddi_tf.evaluation.evaluate import Predictor

_SEARCH = 16.0  # |delta| searched, in logits: far beyond what separates a trained gate's options


def _output_layers(model: keras.Model, cfg: ModelConfig) -> list[tuple[keras.layers.Layer, int]]:
    """Each layer that writes gate logits, with its blocks' G_b (rnn gates share one layer: one entry)."""
    if cfg.gate_type == "rnn":
        return [(model.get_layer("gate_out"), cfg.block_groups(0))]
    return [(model.get_layer(names.gate(b, "fc2")), cfg.block_groups(b)) for b in range(cfg.num_blocks)]


def tilt_gates(model: keras.Model, cfg: ModelConfig, delta: float) -> None:
    """Adds ``delta * k / G_b`` to the output bias of option k of every gate (in place; undo with ``-delta``)."""
    for layer, groups in _output_layers(model, cfg):
        bias = layer.bias
        bias.assign_add(delta * np.arange(groups + 1, dtype=np.float32) / groups)


def calibrate_gate_cost(model: keras.Model, cfg: ModelConfig, images: np.ndarray, labels: np.ndarray,
                        target: float, full_cost: float, mean, std, batch_size: int = 500,
                        iterations: int = 12) -> dict:
    """Tilts the gates (``tilt_gates``) so that the learned path's mean cost on ``images`` is ``target`` x
    ``full_cost`` (the model's own cost unit), keeping the best of ``iterations`` bisection steps.

    Returns ``{"delta", "ratio_before", "ratio_after", "images", "target"}`` (ratios: mean learned-path cost over
    ``full_cost`` on ``images``).
    """
    if not cfg.gated:
        raise ValueError("calibrate_gate_cost needs a gated model")
    if len(images) == 0:
        raise ValueError("calibrate_gate_cost needs held-out images (--val_size > 0)")
    predictor = Predictor(model, batch_size, mean, std)
    applied = 0.0

    def ratio_at(delta: float) -> float:
        nonlocal applied
        tilt_gates(model, cfg, delta - applied)
        applied = delta
        return float(np.mean(predictor(images, labels, "learned").cost[:, -1]) / full_cost)

    before = ratio_at(0.0)
    best = (abs(before - target), 0.0, before)
    lo, hi = (0.0, _SEARCH) if before < target else (-_SEARCH, 0.0)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        r = ratio_at(mid)
        best = min(best, (abs(r - target), mid, r))
        lo, hi = (mid, hi) if r < target else (lo, mid)
    _, delta, after = best
    tilt_gates(model, cfg, delta - applied)
    return {"delta": delta, "ratio_before": before, "ratio_after": after, "images": int(len(images)),
            "target": float(target)}
