"""Weight helpers between models of one backbone: copying, the static network inside a DDI model, a static
backbone split into channel groups, merged groups, and batch-norm statistics re-estimated on a gate path."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ddi_tf.core import names
from ddi_tf.core.config import ModelConfig
from ddi_tf.model.build import set_gate_mode


def copy_weights(src: keras.Model, dst: keras.Model) -> None:
    """Copies weights between two models of the same architecture (e.g. a cost-unit or budget variant).

    Layers are matched by name; every weighted layer of ``dst`` must exist in ``src``.
    """
    for layer in dst.layers:
        if layer.weights:
            layer.set_weights(src.get_layer(layer.name).get_weights())


def static_from_ddi(ddi: keras.Model, static: keras.Model, cfg: ModelConfig) -> None:
    """Loads a gated model's weights into the static backbone (gate_type 'none', same exits).

    The G_b per-group convolutions of each block are concatenated along the input channels into one
    convolution and the full width's batch norm becomes the block's batch norm, so that the static model
    computes what the gated model (config ``cfg``) computes with every gate forced to full.
    """
    for layer in static.layers:
        if not layer.weights:
            continue
        p = names.parse(layer.name)
        m = p if p and p[0] == "block" and p[2] in ("conv2", "bn2") else None
        g = cfg.block_groups(m[1]) if m else 0
        if m and m[2] == "conv2":
            parts = [ddi.get_layer(names.group_conv(m[1], j)).get_weights()[0] for j in range(1, g + 1)]
            layer.set_weights([np.concatenate(parts, axis=2)])
        elif m and _has_layer(ddi, names.width_bn(m[1], g)):
            layer.set_weights(ddi.get_layer(names.width_bn(m[1], g)).get_weights())
        else:
            layer.set_weights(ddi.get_layer(layer.name).get_weights())


def regrouped_weights(name: str, src: keras.Model, src_cfg: ModelConfig, dst_cfg: ModelConfig) -> list | None:
    """Layer ``name``'s weights from a model with more channel groups per block, merged to ``dst_cfg``'s groups.

    When block b has G_s groups in ``src_cfg`` and G_d in ``dst_cfg`` (G_d dividing G_s; r = G_s / G_d), the
    destination's group j is the source's groups (j-1)r+1..jr (their conv2 kernels concatenated along the input
    channels), its width k is the source's width kr (batch norm ``bn2_w{kr}``) and its gate's logits are the
    source gate's logits of skip and of those widths. None when ``name`` does not depend on the grouping or
    block b's groups are the same in both; ValueError when G_d does not divide G_s.
    """
    m = names.parse_grouped(name)
    if m is None:
        return None
    b = m[1]
    gs, gd = src_cfg.block_groups(b), dst_cfg.block_groups(b)
    if gs == gd:
        return None
    if gs % gd:
        raise ValueError(f"block {b}: {gs} channel groups cannot be merged into {gd}")
    r = gs // gd
    kind, k = m[2], m[3]
    if kind == "conv2_g":
        parts = [src.get_layer(names.group_conv(b, j)).get_weights()[0] for j in range((k - 1) * r + 1, k * r + 1)]
        return [np.concatenate(parts, axis=2)]
    if kind == "bn2_w":
        return src.get_layer(names.width_bn(b, k * r)).get_weights()
    keep = [0] + [j * r for j in range(1, gd + 1)]
    kernel, bias = src.get_layer(name).get_weights()
    return [kernel[:, keep], bias[keep]]


def gated_from_static(name: str, src: keras.Model, dst_cfg: ModelConfig) -> list | None:
    """Layer ``name``'s weights for a gated model (config ``dst_cfg``) started from the static backbone ``src``.

    The inverse of ``static_from_ddi``: block b's conv2 kernel is split along its input channels into the
    G_b group convolutions ``conv2_g{j}``, and every width's batch norm ``bn2_w{k}`` starts as the static
    ``bn2``. None when ``name`` is not one of those layers (it is copied as it is, when names and shapes match).
    """
    m = names.parse_grouped(name)
    if m is None or m[0] != "block":
        return None
    _, b, kind, k = m
    if kind == "bn2_w":
        return src.get_layer(names.block(b, "bn2")).get_weights()
    kernel = src.get_layer(names.block(b, "conv2")).get_weights()[0]
    return [np.split(kernel, dst_cfg.block_groups(b), axis=2)[k - 1]]


def _has_layer(model: keras.Model, name: str) -> bool:
    try:
        model.get_layer(name)
    except ValueError:
        return False
    return True


def reestimate_batch_norm(model: keras.Model, batches: list[np.ndarray], mode: str) -> int:
    """Replaces every batch norm's moving statistics by their mean over ``batches`` on the path ``mode``.

    Each batch runs in training mode with momentum 0 (the moving statistics become that batch's), and the
    per-batch means and variances are averaged. Run after the weights changed (weight averaging) or the
    paths did (gates), so that inference normalises with the statistics of the weights and path it runs.
    Returns the number of batch-norm layers re-estimated.
    """
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns or not batches:
        return 0
    saved = [layer.momentum for layer in bns]
    set_gate_mode(model, mode)
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape)] for layer in bns]
    try:
        for layer in bns:
            layer.momentum = 0.0
        forward = tf.function(lambda x: model(x, training=True))
        for x in batches:
            forward(tf.constant(x))
            for acc, layer in zip(sums, bns, strict=True):
                acc[0] += layer.moving_mean.numpy()
                acc[1] += layer.moving_variance.numpy()
    finally:
        for layer, momentum in zip(bns, saved, strict=True):
            layer.momentum = momentum
    for (mean_sum, var_sum), layer in zip(sums, bns, strict=True):
        layer.moving_mean.assign(mean_sum / len(batches))
        layer.moving_variance.assign(var_sum / len(batches))
    return len(bns)
