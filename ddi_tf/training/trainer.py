"""Training: the staged schedule, checkpoints that resume at the same step and data order, evaluation.

Stages (each runs for its number of steps; 0 skips it):
1. ``stage1``: backbone and every exit, gates forced to full (or to a random option with probability
   ``random_width_prob``, which trains every width and its batch norm; or, with ``width_sampling='sandwich'``,
   three paths per step: the full path, the narrowest (every block at its first group) and a random one);
   weighted sum of exit cross-entropies, plus distillation from the full path's last exit (``distill_weight``).
2. ``stage2``: gates only, backbone frozen (its batch norms in inference mode); exits' CE + cost term.
3. ``stage3``: everything, exits' CE + cost term.
4. ``rl``: optional REINFORCE on sampled gate decisions (SkipNet's hybrid RL), CE on the backbone.
5. ``qat``: quantization-aware fine-tuning (``ddi_tf.quant.qat``, tfmot) of everything, losses as in stage 3; the
   trained weights are copied back into the float model, which the evaluation and the int8 export read.

With ``width_sampling='sandwich'`` stages 2 and 3 also run the full path beside the learned one (the teacher
of the distillation, and it keeps the full path trained). ``lr_scope='run'`` gives the float stages one
learning-rate schedule (peak ``lr``) over all their steps instead of one per stage. After the float stages the
weight average (``ema_decay``) replaces the weights, and the batch-norm statistics are re-estimated
(``bn_reestimate_batches``) on the path the model is evaluated on.

The cost term (``cost_loss``), with ratio the batch's mean executed cost over the full cost:
``sign``: fractional skipping's ``cost_weight * sign(ratio - target) * ratio``; ``squared``:
``cost_weight * (ratio - target)**2``; ``dual``: the squared term plus ``lambda * ratio``, where the multiplier
``lambda`` follows ``lambda += cost_dual_lr * (ratio - target)`` after every step (dual ascent on the
constraint ratio = target: it grows until the target is met, whatever the cross-entropy pulls).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from ddi_tf import data as data_lib
from ddi_tf.core.arch import build_pieces
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import cost_table
from ddi_tf.evaluation.evaluate import evaluate_model, plot_report, write_json_atomic
from ddi_tf.model.build import build_model, gated_from_static, num_exits, regrouped_weights, set_gate_mode

CONFIG_VERSION = 1
STAGES = ("stage1", "stage2", "stage3", "rl", "qat")
FLOAT_STAGES = STAGES[:-1]
LR_SCOPES = ("stage", "run")
WIDTH_SAMPLINGS = ("random", "sandwich")
COST_LOSSES = ("sign", "squared", "dual")


class RunDirError(ValueError):
    """A directory that should hold a trained run does not (no config.json or no checkpoint)."""


class ResumeError(ValueError):
    """The work directory holds a run with incompatible settings."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings (see ``ddi_tf.flags`` for the meaning of each)."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    cache_dir: str | None = None
    val_size: int = 5000
    synthetic_train: int = 2048
    synthetic_test: int = 512
    seed: int = 0
    batch_size: int = 128
    stage1_steps: int = 1000
    stage2_steps: int = 0
    stage3_steps: int = 0
    rl_steps: int = 0
    qat_steps: int = 0
    lr: float = 0.1
    gate_lr: float = 0.01
    finetune_lr: float = 0.01
    rl_lr: float = 0.001
    qat_lr: float = 0.001
    schedule: str = "cosine"
    warmup_steps: int = 200
    momentum: float = 0.9
    nesterov: bool = False
    label_smoothing: float = 0.0
    lr_scope: str = "stage"
    ema_decay: float = 0.0
    bn_reestimate_batches: int = 0
    width_sampling: str = "random"
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    exit_weights: tuple[float, ...] = ()
    random_width_prob: float = 0.0
    cost: str = "macs"
    latency_table: str | None = None
    target_cost: float = 0.5
    cost_weight: float = 1.0
    cost_loss: str = "sign"
    cost_dual_lr: float = 0.01
    rl_cost_weight: float = 0.5
    gate_margin: float = 0.0
    gate_margin_target: float = 0.25
    init_from: str | None = None
    log_every: int = 50
    checkpoint_every: int = 500
    eval_batch_size: int = 500
    budget_fractions: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
    target_fractions: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
    eval_limit: int = 0
    strategy: str = "default"
    tpu: str | None = None
    cpu_devices: int = 0

    def __post_init__(self) -> None:
        for name, value, valid in (("lr_scope", self.lr_scope, LR_SCOPES),
                                   ("width_sampling", self.width_sampling, WIDTH_SAMPLINGS),
                                   ("cost_loss", self.cost_loss, COST_LOSSES)):
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no weight average), got {self.ema_decay}")
        if not self.distill_weight >= 0.0 or not self.distill_temperature > 0.0:
            raise ValueError("distill_weight must be >= 0 and distill_temperature > 0, got "
                             f"{self.distill_weight} and {self.distill_temperature}")
        if not self.cost_dual_lr >= 0.0 or self.bn_reestimate_batches < 0:
            raise ValueError("cost_dual_lr and bn_reestimate_batches must be >= 0")

    @property
    def float_steps(self) -> int:
        """Steps of the float stages (all but QAT)."""
        return self.total_steps - self.qat_steps

    def stage_steps(self) -> list[tuple[str, int]]:
        """(stage name, steps) in order."""
        steps = (self.stage1_steps, self.stage2_steps, self.stage3_steps, self.rl_steps, self.qat_steps)
        return list(zip(STAGES, steps, strict=True))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of the ``train`` section of ``config.json`` (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of the data set (CIFAR-10's for synthetic data)."""
        return data_lib.normalization_for(self.dataset if self.dataset != "synthetic" else "cifar10")

    @property
    def total_steps(self) -> int:
        """Steps over all stages."""
        return sum(n for _, n in self.stage_steps())


# Settings that may change between a run and its resumption (they do not change what is trained).
RESUMABLE_KEYS = {"data_dir", "cache_dir", "log_every", "checkpoint_every", "eval_batch_size", "budget_fractions",
                  "target_fractions", "eval_limit", "strategy", "tpu", "cpu_devices", "latency_table"}
# Settings that may change until the QAT stage has started (extending a trained float run with QAT).
EXTENDABLE_KEYS = {"qat_steps", "qat_lr", "gate_margin", "gate_margin_target"}
# Settings only the stages after stage 1 use: they may change while the run has not gone past stage 1, so one
# trained backbone can be branched (copied) into several gate trainings (the cost ablations of the baselines study).
GATE_STAGE_KEYS = {"stage2_steps", "stage3_steps", "rl_steps", "gate_lr", "finetune_lr", "rl_lr", "cost",
                   "target_cost", "cost_weight", "rl_cost_weight", "gate_margin", "gate_margin_target", "cost_loss",
                   "cost_dual_lr"}


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


def make_strategy(cfg: TrainConfig) -> tf.distribute.Strategy:
    """The tf.distribute strategy the config names."""
    if cfg.strategy == "default":
        return tf.distribute.get_strategy()
    if cfg.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if cfg.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=cfg.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def split_cpu(devices: int) -> None:
    """Splits the physical CPU into ``devices`` logical devices; call before TensorFlow runs anything."""
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def load_data(cfg: TrainConfig) -> data_lib.CifarData:
    """The data set the config names (synthetic for smoke runs)."""
    if cfg.dataset == "synthetic":
        return data_lib.synthetic_cifar(cfg.synthetic_train, cfg.synthetic_test, 10, cfg.seed)
    return data_lib.load_cifar(cfg.data_dir, cfg.dataset, cfg.cache_dir)


def check_or_write_config(workdir: str, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """Writes ``workdir/config.json``, or checks a resumed run's against it (ResumeError on a mismatch)."""
    path = os.path.join(workdir, "config.json")
    new = {"version": CONFIG_VERSION, "model": model_cfg.to_dict(), "train": _jsonable(dataclasses.asdict(train_cfg))}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diffs = []
        if old.get("version") != CONFIG_VERSION:
            diffs.append(f"config version {old.get('version')} != {CONFIG_VERSION}")
        done = checkpoint_step(os.path.join(workdir, "checkpoints"))
        within_stage1 = done is not None and done <= old.get("train", {}).get("stage1_steps", -1)
        defaults = {"model": _jsonable(dataclasses.asdict(ModelConfig())),
                    "train": _jsonable(dataclasses.asdict(TrainConfig()))}
        for section in ("model", "train"):
            a, b = old.get(section, {}), new[section]
            for k in sorted(set(a) | set(b)):
                if section == "train" and k in RESUMABLE_KEYS:
                    continue
                if section == "train" and k in EXTENDABLE_KEYS and not os.path.isdir(
                        os.path.join(workdir, "checkpoints_qat")):
                    continue  # a finished float run may be extended with a QAT stage
                if section == "train" and k in GATE_STAGE_KEYS and within_stage1:
                    continue  # a run still in (or just at the end of) stage 1 may branch into other gate settings
                if k not in a and b.get(k) == defaults[section].get(k):
                    continue  # a setting added after the run started, left at its default
                if a.get(k) != b.get(k):
                    diffs.append(f"--{k}: run has {a.get(k)!r}, now {b.get(k)!r}")
        if diffs:
            raise ResumeError(
                f"{workdir} holds a run with incompatible flags; resume with the same flags or use a new "
                "--workdir. Differences:\n  " + "\n  ".join(diffs))
    write_json_atomic(path, new)


def load_trained(workdir: str) -> tuple[ModelConfig, dict, keras.Model]:
    """The model config, the training config dict and the float model restored from run directory ``workdir``."""
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise RunDirError(f"{workdir} is not a training work directory (no config.json); train first with "
                          "python -m ddi_tf.train --workdir=...")
    with open(cfg_path) as f:
        conf = json.load(f)
    cfg = ModelConfig.from_dict(conf["model"])
    ckpt_path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    if ckpt_path is None:
        raise RunDirError(f"{workdir} has no trained checkpoint under checkpoints/; train it first")
    model = build_model(cfg)
    tf.train.Checkpoint(model=model).restore(ckpt_path).expect_partial()
    return cfg, conf["train"], model


def init_from_run(model: keras.Model, workdir: str, cfg: ModelConfig | None = None) -> tuple[list[str], list[str]]:
    """Copies into ``model`` the weights of every layer of run ``workdir``'s model with the same name and shapes.

    This starts a run from a trained backbone (SkipNet's recipe), e.g. gates of another kind over the same
    stage-1 backbone, or a gated model over a trained static backbone (its conv2 split into the channel groups,
    its bn2 copied into every width's batch norm: ``ddi_tf.model.build.gated_from_static``). With ``cfg``
    (``model``'s config), blocks with fewer channel groups than the source's
    (``min_group_channels``) get the source's groups merged (``ddi_tf.model.build.regrouped_weights``). Returns
    (copied layer names, same-named layers skipped because their shapes differ); RunDirError when nothing can
    be copied or the groups cannot be merged.
    """
    src_cfg, _, source = load_trained(workdir)
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    from_static = cfg is not None and cfg.gated and not src_cfg.gated
    copied, mismatched = [], []
    for layer in model.layers:
        src = by_name.get(layer.name)
        split = gated_from_static(layer.name, source, cfg) if from_static else None
        if (src is None and split is None) or not layer.weights:
            continue
        try:
            if split is not None:
                merged = split
            else:
                merged = regrouped_weights(layer.name, source, src_cfg, cfg) if cfg is not None else None
        except ValueError as e:
            raise RunDirError(f"--init_from={workdir}: {e}") from e
        ours, theirs = layer.get_weights(), merged if merged is not None else src.get_weights()
        if len(ours) == len(theirs) and all(a.shape == b.shape for a, b in zip(ours, theirs, strict=True)):
            layer.set_weights(theirs)
            copied.append(layer.name)
        else:
            mismatched.append(layer.name)
    if not copied:
        raise RunDirError(f"--init_from={workdir}: no layer of that run's model matches this model's (names and "
                          "shapes); it must share the backbone (depth, groups, exits)")
    return copied, mismatched


def checkpoint_step(directory: str) -> int | None:
    """The step of the latest checkpoint in ``directory`` (``ckpt-<step>``), or None when there is none."""
    path = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    match = re.search(r"ckpt-(\d+)$", path or "")
    return int(match.group(1)) if match else None


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


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


class _Trainer:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, workdir: str, strategy: tf.distribute.Strategy):
        self.model_cfg, self.cfg, self.workdir, self.strategy = model_cfg, cfg, workdir, strategy
        pieces = build_pieces(model_cfg)
        self.table = cost_table(pieces, cfg.cost, latency_path=cfg.latency_table)
        self.full_cost = self.table.full_cost()
        with strategy.scope():
            self.model = build_model(model_cfg, self.table)
            self.active = self.model  # the model being trained: the float model, or its QAT version
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.optimizers = {s: keras.optimizers.SGD(learning_rate=0.0, momentum=cfg.momentum,
                                                       nesterov=cfg.nesterov) for s in STAGES}
            # the cost term's dual variable, the weight average and whether it (and the batch-norm
            # re-estimation) has replaced the weights: all in the checkpoint, so that a resumed run goes on exactly
            self.multiplier = tf.Variable(0.0, trainable=False, name="cost_multiplier")
            self.finalized = tf.Variable(0, dtype=tf.int64, trainable=False, name="float_stages_finalized")
            self.averaged = list(self.model.trainable_weights) if cfg.ema_decay > 0 else []
            self.ema = [tf.Variable(v, trainable=False, name=f"ema_{i}") for i, v in enumerate(self.averaged)]
        self.exits = num_exits(self.model)
        w = list(cfg.exit_weights) or [1.0] * self.exits
        if len(w) != self.exits:
            raise ValueError(f"--exit_weights has {len(w)} values but the model has {self.exits} exits")
        self.exit_weights = w
        self.ckpt = tf.train.Checkpoint(model=self.model, step=self.step, multiplier=self.multiplier,
                                        finalized=self.finalized, ema=self.ema,
                                        **{f"opt_{s}": o for s, o in self.optimizers.items()})
        self.manager = tf.train.CheckpointManager(self.ckpt, os.path.join(workdir, "checkpoints"), max_to_keep=2)
        self.writer = tf.summary.create_file_writer(os.path.join(workdir, "tb"))
        self.qat_model: keras.Model | None = None
        self.qat_manager: tf.train.CheckpointManager | None = None

    def build_qat(self) -> None:
        """Wraps the (trained) float model for QAT, with its own checkpoints under ``checkpoints_qat/``."""
        from ddi_tf.quant import qat

        with self.strategy.scope():
            self.qat_model = qat.quantize_model(self.model)
        ckpt = tf.train.Checkpoint(model=self.qat_model, step=self.step, opt_qat=self.optimizers["qat"])
        self.qat_manager = tf.train.CheckpointManager(ckpt, os.path.join(self.workdir, "checkpoints_qat"),
                                                      max_to_keep=2)

    # --- one training step ------------------------------------------------------------------------------
    def paths(self, stage: str) -> list[tuple[str, float, int | None]]:
        """The forward passes of one step of ``stage``: (gate mode, random probability, fixed option), the
        distillation teacher (the full path, when it runs) first."""
        cfg, gated = self.cfg, self.model_cfg.gated
        if stage == "stage1":
            if not gated:
                return [("full", 0.0, None)]
            if cfg.width_sampling == "sandwich":
                narrow = [] if all(self.model_cfg.block_groups(b) == 1 for b in range(self.model_cfg.num_blocks)) \
                    else [("fixed", 0.0, 1)]  # every block at its first group (with G_b = 1 that is the full path)
                return [("full", 0.0, None), *narrow, ("random", 1.0, None)]
            return [("random", cfg.random_width_prob, None) if cfg.random_width_prob > 0 else ("full", 0.0, None)]
        if stage == "rl":
            return [("sample", 0.0, None)]
        if stage in ("stage2", "stage3") and cfg.width_sampling == "sandwich":
            return [("full", 0.0, None), ("learned", 0.0, None)]
        return [("learned", 0.0, None)]

    def make_step(self, stage: str, stage_start: int, steps: int, jit_compile: bool = False):
        cfg, model, full = self.cfg, self.active, self.full_cost
        opt = self.optimizers[stage]
        variables = model.trainable_variables
        global_batch = cfg.batch_size
        block_names = sorted((k for k in model.output if k.endswith("_decision")),
                             key=lambda k: int(k[5:-9]))
        with_cost = stage in ("stage2", "stage3", "qat") and self.model_cfg.gated
        paths = self.paths(stage)
        teacher_is_full = paths[0][0] == "full" and len(paths) > 1
        last = self.exits - 1

        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                outs = []
                for mode, prob, option in paths:  # gate modes are read while tracing: one graph per path
                    set_gate_mode(model, mode, prob, option)
                    outs.append(model(images, training=True))
                teacher = tf.cast(outs[0][f"exit{last}_logits"], tf.float32)  # float32 also under mixed precision
                per_example = 0.0
                for p, o in enumerate(outs):
                    for j, w in enumerate(self.exit_weights):
                        logits = tf.cast(o[f"exit{j}_logits"], tf.float32)
                        term = classification_loss(labels, logits, cfg.label_smoothing)
                        taught = j != last or (p > 0 and teacher_is_full)  # not the teacher itself
                        if cfg.distill_weight > 0 and taught:
                            term += cfg.distill_weight * distillation_loss(logits, teacher, cfg.distill_temperature)
                        per_example += w * term
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                out = outs[-1]  # the learned (or most dynamic) path: the cost term and the metrics
                ratio = tf.cast(out[f"exit{last}_cost"], tf.float32) / full
                mean_ratio = tf.reduce_mean(ratio)
                if with_cost:
                    loss += cost_term(cfg.cost_loss, ratio, cfg.target_cost, cfg.cost_weight, self.multiplier,
                                      global_batch)
                if with_cost and cfg.gate_margin > 0:
                    loss += cfg.gate_margin * gate_margin_loss(
                        [out[k.replace("_decision", "_probs")] for k in block_names], cfg.gate_margin_target)
                if stage == "rl":
                    reward = -classification_loss(labels, out[f"exit{last}_logits"]) - cfg.rl_cost_weight * ratio
                    adv = tf.stop_gradient(reward - tf.reduce_mean(reward))
                    chosen_p = [tf.reduce_sum(out[k] * out[k.replace("_decision", "_probs")], -1) for k in block_names]
                    logp = tf.add_n([tf.math.log(p + 1e-9) for p in chosen_p])
                    loss += tf.nn.compute_average_loss(-adv * logp, global_batch_size=global_batch)
            grads = tape.gradient(loss, variables)
            grads_vars = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
            opt.apply_gradients(grads_vars)
            metrics = {"loss": loss * self.strategy.num_replicas_in_sync, "cost_ratio": mean_ratio}
            for j in range(self.exits):
                pred = tf.argmax(out[f"exit{j}_logits"], -1, output_type=tf.int32)
                metrics[f"accuracy/exit{j}"] = tf.reduce_mean(tf.cast(pred == tf.cast(labels, tf.int32), tf.float32))
            for k in block_names:
                metrics[f"gates/{k[:-9]}"] = tf.reduce_mean(out[k], axis=0)
            return metrics

        one_schedule = cfg.lr_scope == "run" and stage in FLOAT_STAGES
        averaging = bool(self.ema) and stage in FLOAT_STAGES

        @tf.function(jit_compile=jit_compile)
        def train_step(dist_images, dist_labels):
            if one_schedule:
                lr = learning_rate(stage, self.step, cfg.float_steps, cfg)
            else:
                lr = learning_rate(stage, self.step - stage_start, steps, cfg)
            opt.learning_rate.assign(lr)
            per_replica = self.strategy.run(replica_step, args=(dist_images, dist_labels))
            metrics = {k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                       for k, v in per_replica.items()}
            metrics["lr"] = lr
            if with_cost and cfg.cost_loss == "dual":
                self.multiplier.assign_add(cfg.cost_dual_lr * (metrics["cost_ratio"] - cfg.target_cost))
                metrics["cost_multiplier"] = tf.identity(self.multiplier)
            self.step.assign_add(1)
            if averaging:  # the decay warms up as in tf.train.ExponentialMovingAverage's num_updates
                n = tf.cast(self.step, tf.float32)
                decay = tf.minimum(cfg.ema_decay, (1.0 + n) / (10.0 + n))
                for avg, var in zip(self.ema, self.averaged, strict=True):
                    avg.assign(decay * avg + (1.0 - decay) * var)
            return metrics

        return train_step

    def configure_stage(self, stage: str) -> None:
        gated = self.model_cfg.gated
        for layer in self.active.layers:
            is_gate = layer.name.startswith("gate")
            layer.trainable = is_gate if stage == "stage2" else True
        if stage in ("stage2", "rl") and not gated:
            raise ValueError(f"{stage} trains gates, but the model has none (--gate_type=none)")

    # --- the loop ---------------------------------------------------------------------------------------
    def fit(self, train_xy: tuple[np.ndarray, np.ndarray], mean, std) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        restored = self.manager.restore_or_initialize()
        if cfg.qat_steps and tf.train.latest_checkpoint(os.path.join(self.workdir, "checkpoints_qat")):
            self.build_qat()
            restored = self.qat_manager.restore_or_initialize()
        start = int(self.step.numpy())
        if restored:
            logging.info("resumed from %s at step %d", restored, start)
        elif cfg.init_from:
            copied, mismatched = init_from_run(self.model, cfg.init_from, self.model_cfg)
            logging.info("initialised %d layers from %s (%d same-named layers differ in shape: %s)", len(copied),
                         cfg.init_from, len(mismatched), ", ".join(mismatched) or "none")
            for avg, var in zip(self.ema, self.averaged, strict=True):
                avg.assign(var)
        if start >= cfg.total_steps:
            self._finalize_float(train_xy, mean, std)
            self._finish_qat()
            return
        ds = data_lib.make_train_dataset(train_xy[0], train_xy[1], cfg.batch_size, cfg.seed, augment=True,
                                         mean=mean, std=std, skip_batches=start)
        it = iter(self.strategy.experimental_distribute_dataset(ds))
        bar = tqdm(total=cfg.total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                   mininterval=2.0)
        offset = 0
        for stage, steps in cfg.stage_steps():
            stage_start, offset = offset, offset + steps
            if steps == 0 or self.step.numpy() >= offset:
                continue
            if stage in ("stage2", "rl") and not self.model_cfg.gated:
                logging.warning("skipping %s: the static backbone has no gates", stage)
                self.step.assign(offset)
                continue
            if stage == "qat":
                self._finalize_float(train_xy, mean, std)
                if self.qat_model is None:
                    self.build_qat()
                    self._calibrate_qat(train_xy[0], mean, std)
                self.active = self.qat_model
            self.configure_stage(stage)
            train_step = self.make_step(stage, stage_start, steps)
            manager = self.qat_manager if stage == "qat" else self.manager
            logging.info("%s: steps %d..%d", stage, max(stage_start, int(self.step.numpy())), offset)
            t0, n0, acc = time.time(), int(self.step.numpy()), {}
            while int(self.step.numpy()) < offset:
                images, labels = next(it)
                metrics = train_step(images, labels)
                s = int(self.step.numpy())
                for k, v in metrics.items():
                    acc.setdefault(k, []).append(v.numpy())
                bar.update(1)
                if s % cfg.log_every == 0 or s == offset:
                    ips = (s - n0) * cfg.batch_size / max(time.time() - t0, 1e-9)
                    self._log(stage, s, acc, ips, bar)
                    t0, n0, acc = time.time(), s, {}
                if s % cfg.checkpoint_every == 0 or s == offset:
                    manager.save(checkpoint_number=s)
        bar.close()
        self._finalize_float(train_xy, mean, std)
        self._finish_qat()

    def _finalize_float(self, train_xy: tuple[np.ndarray, np.ndarray], mean, std, batch: int = 200) -> None:
        """Once, after the float stages: the weight average replaces the weights and the batch-norm statistics
        are re-estimated on ``bn_reestimate_batches`` batches of augmented training images (the distribution the
        network was trained on: statistics of unaugmented images, without the crops' zero borders, took the
        static ResNet-20 from 90% to 51% on the first 2,000 test images), on the learned path when gates were
        trained, else the full one; checkpointed, so a resumed run does not redo it."""
        cfg = self.cfg
        if int(self.finalized.numpy()) or int(self.step.numpy()) < cfg.float_steps or not (
                self.ema or cfg.bn_reestimate_batches):
            return
        for avg, var in zip(self.ema, self.averaged, strict=True):
            var.assign(avg)
        if cfg.bn_reestimate_batches:
            ds = data_lib.make_train_dataset(train_xy[0], train_xy[1], batch, cfg.seed + 1, augment=True, mean=mean,
                                             std=std, drop_remainder=False)
            batches = [x.numpy() for x, _ in ds.take(cfg.bn_reestimate_batches)]
            count = sum(len(x) for x in batches)
            trained_gates = self.model_cfg.gated and (cfg.stage2_steps + cfg.stage3_steps + cfg.rl_steps) > 0
            mode = "learned" if trained_gates else "full"
            n = reestimate_batch_norm(self.model, batches, mode)
            logging.info("batch norm: %d layers re-estimated on %d training images (%s path)", n, count, mode)
        self.finalized.assign(1)
        self.manager.save(checkpoint_number=int(self.step.numpy()))

    def _calibrate_qat(self, images: np.ndarray, mean, std, count: int = 1024, batch: int = 256) -> None:
        """Starts the QAT activation ranges from the float model's (the QAT stage is just beginning)."""
        from ddi_tf.quant import qat

        set_gate_mode(self.model, "learned")
        rng = np.random.default_rng(self.cfg.seed)
        idx = np.sort(rng.choice(len(images), min(count, len(images)), replace=False))
        batches = [data_lib.normalize(images[idx[s:s + batch]], mean, std) for s in range(0, len(idx), batch)]
        n = qat.calibrate_ranges(self.qat_model, self.model, batches)
        qat.tie_edge_ranges(self.qat_model, self.model_cfg)
        logging.info("qat: %d activation range variables calibrated on %d training images", n, len(idx))

    def _finish_qat(self) -> None:
        """After QAT, the float model takes the QAT-trained weights and is checkpointed as the final model."""
        if self.qat_model is None:
            return
        from ddi_tf.quant import qat

        qat.float_weights_from_qat(self.qat_model, self.model)
        self.active = self.model
        self.manager.save(checkpoint_number=int(self.step.numpy()))

    def _log(self, stage: str, step: int, acc: dict, ips: float, bar) -> None:
        means = {k: np.mean(np.stack(v), axis=0) for k, v in acc.items()}
        with self.writer.as_default(step=step):
            for k, v in means.items():
                if np.ndim(v) == 0:
                    tf.summary.scalar(k, float(v))
                else:
                    names = self.model_cfg.option_names(int(k.rsplit("block", 1)[1]))
                    for o, f in zip(names, v, strict=True):
                        tf.summary.scalar(f"{k}/{o}", float(f))
            tf.summary.scalar("images_per_second", ips)
        last = f"accuracy/exit{self.exits - 1}"
        bar.set_postfix(stage=stage, loss=f"{means['loss']:.3f}", acc=f"{means[last]:.3f}",
                        cost=f"{means['cost_ratio']:.2f}", ips=f"{ips:.0f}")
        logging.info("%s step %d loss %.4f acc(last exit) %.4f cost_ratio %.3f lr %.4g images/s %.1f", stage, step,
                     means["loss"], means[last], means["cost_ratio"], means["lr"], ips)


def train_and_evaluate(model_cfg: ModelConfig, cfg: TrainConfig, workdir: str) -> dict:
    """Trains through the configured stages (resuming from ``workdir``), then evaluates on the test split.

    Writes ``workdir/config.json``, checkpoints, TensorBoard logs, ``report.json`` and ``report.png``.
    Returns the report.
    """
    os.makedirs(workdir, exist_ok=True)
    data = load_data(cfg)
    if model_cfg.num_classes != data.num_classes:
        raise ValueError(f"the model has {model_cfg.num_classes} classes but the data set has {data.num_classes}")
    check_or_write_config(workdir, model_cfg, cfg)
    if cfg.latency_table:  # a table that does not fit this architecture fails now, not after training
        cost_table(build_pieces(model_cfg), "latency", latency_path=cfg.latency_table)
    keras.utils.set_random_seed(cfg.seed)
    (x_tr, y_tr), (x_val, y_val) = data_lib.split_train_val(data, cfg.val_size, cfg.seed)
    mean, std = cfg.normalization
    strategy = make_strategy(cfg)
    logging.info("strategy %s, num_replicas_in_sync: %d", type(strategy).__name__, strategy.num_replicas_in_sync)
    trainer = _Trainer(model_cfg, cfg, workdir, strategy)
    trainer.fit((x_tr, y_tr), mean, std)
    x_te, y_te = data.x_test, data.y_test
    if cfg.eval_limit:
        x_te, y_te = x_te[: cfg.eval_limit], y_te[: cfg.eval_limit]
    logging.info("evaluating on %d test images (%d validation images for calibration)", len(y_te), len(y_val))
    report = evaluate_model(model_cfg, trainer.model, (x_val, y_val), (x_te, y_te), mean, std, cfg.budget_fractions,
                            cfg.target_fractions, cfg.eval_batch_size, latency_table=cfg.latency_table)
    report["class_names"] = list(data.class_names)
    report["train_steps"] = int(trainer.step.numpy())
    write_json_atomic(os.path.join(workdir, "report.json"), report)
    plot_report({"": report}, os.path.join(workdir, "report.png"),
                title=f"{model_cfg.backbone}-{model_cfg.depth} gates={model_cfg.gate_type} G={model_cfg.groups}")
    return report
