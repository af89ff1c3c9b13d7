"""The losses of a training step: cross-entropy with label smoothing, distillation, the cost term and the gate
margin; and the learning-rate schedule."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from ddi_tf.training.config import FLOAT_STAGES, TrainConfig


def classification_loss(labels: tf.Tensor, logits: tf.Tensor, smoothing: float = 0.0) -> tf.Tensor:
    """Per-example cross-entropy against labels smoothed by ``smoothing`` (0: the plain sparse CE)."""
    labels = tf.cast(labels, tf.int32)
    if smoothing == 0.0:
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    onehot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)
    return keras.losses.categorical_crossentropy(onehot, logits, from_logits=True, label_smoothing=smoothing)


def distillation_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """Per-example ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``; no gradient reaches the teacher.

    The T^2 keeps the gradient's scale independent of T (Hinton et al., 2015).
    """
    t = float(temperature)
    teacher = tf.stop_gradient(teacher_logits) / t
    log_p = tf.nn.log_softmax(teacher, axis=-1)
    log_q = tf.nn.log_softmax(student_logits / t, axis=-1)
    return t * t * tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def cost_term(kind: str, ratio: tf.Tensor, target: float, weight: float, multiplier: tf.Tensor,
              global_batch: int) -> tf.Tensor:
    """The cost term of the loss for per-example cost ratios ``ratio`` of one replica (see the module docstring).

    ``multiplier`` is the dual variable of ``kind='dual'`` (ignored otherwise). The squared term is of the
    replica's mean ratio (the global batch's with one replica).
    """
    mean = tf.reduce_mean(ratio)
    if kind == "sign":
        sign = tf.stop_gradient(tf.sign(mean - target))
        return weight * sign * tf.nn.compute_average_loss(ratio, global_batch_size=global_batch)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    loss = weight * tf.square(mean - target) / replicas
    if kind == "dual":
        loss += tf.stop_gradient(tf.cast(multiplier, ratio.dtype)) * tf.nn.compute_average_loss(
            ratio, global_batch_size=global_batch)
    return loss


def gate_margin_loss(probs: list[tf.Tensor], target: float) -> tf.Tensor:
    """Hinge on each gate's decision margin: mean of relu(target - (z_top1 - z_top2) / spread).

    The margin is the gap between the two largest logits (from the log-softmax: the same differences), in
    units of the spread (standard deviation, not differentiated) of the gate's centred logits over the batch
    and the options, so that scaling the logits up cannot satisfy it. Near-tied decisions are what 8-bit
    rounding flips between the QAT model and the int8 pieces; this pushes them apart, where the gate barely
    prefers one option anyway.
    """
    terms = []
    for p in probs:
        logp = tf.math.log(tf.cast(p, tf.float32) + 1e-12)
        centred = logp - tf.reduce_mean(logp, axis=-1, keepdims=True)
        spread = tf.stop_gradient(tf.math.reduce_std(centred)) + 1e-6
        top2 = tf.math.top_k(logp, k=2).values
        terms.append(tf.reduce_mean(tf.nn.relu(target - (top2[:, 0] - top2[:, 1]) / spread)))
    return tf.add_n(terms) / len(terms)


def learning_rate(stage: str, step: tf.Tensor, steps: int, cfg: TrainConfig) -> tf.Tensor:
    """The learning rate at ``step`` (0-based) of ``steps``: within the stage, or with ``lr_scope='run'`` (float
    stages only) within the float stages, whose one schedule then peaks at ``lr`` and starts with the warm-up."""
    peaks = {"stage1": cfg.lr, "stage2": cfg.gate_lr, "stage3": cfg.finetune_lr, "rl": cfg.rl_lr, "qat": cfg.qat_lr}
    one_schedule = cfg.lr_scope == "run" and stage in FLOAT_STAGES
    peak = cfg.lr if one_schedule else peaks[stage]
    t = tf.cast(step, tf.float32)
    n = float(max(steps, 1))
    if cfg.schedule == "cosine":
        lr = 0.5 * peak * (1.0 + tf.cos(math.pi * tf.minimum(t / n, 1.0)))
    else:  # step: /10 at 50% and 75%
        lr = peak * tf.where(t < 0.5 * n, 1.0, tf.where(t < 0.75 * n, 0.1, 0.01))
    if (stage == "stage1" or one_schedule) and cfg.warmup_steps:
        lr = lr * tf.minimum(1.0, (t + 1.0) / float(cfg.warmup_steps))
    return lr
