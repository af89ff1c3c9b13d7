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

import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from ddi_tf import data as data_lib
from ddi_tf.core import names, rundir
from ddi_tf.core.arch import build_pieces
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import cost_table
from ddi_tf.core.files import read_json, write_json_atomic
from ddi_tf.evaluation.evaluate import evaluate_model
from ddi_tf.evaluation.plots import plot_report
from ddi_tf.model.build import build_model, num_exits, set_gate_mode
from ddi_tf.model.weights import copy_weights, reestimate_batch_norm
from ddi_tf.training.calibrate import calibrate_gate_cost
from ddi_tf.training.config import FLOAT_STAGES, STAGES, TrainConfig
from ddi_tf.training.losses import classification_loss, cost_term, distillation_loss, gate_margin_loss, learning_rate
from ddi_tf.training.strategy import make_strategy, precision
from ddi_tf.training.workdir import check_or_write_config, init_from_run


def load_data(cfg: TrainConfig) -> data_lib.CifarData:
    """The data set the config names (synthetic for smoke runs)."""
    if cfg.dataset == "synthetic":
        return data_lib.synthetic_cifar(cfg.synthetic_train, cfg.synthetic_test, 10, cfg.seed)
    return data_lib.load_cifar(cfg.data_dir, cfg.dataset, cfg.cache_dir)


class _Trainer:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, workdir: str, strategy: tf.distribute.Strategy):
        self.model_cfg, self.cfg, self.workdir, self.strategy = model_cfg, cfg, workdir, strategy
        pieces = build_pieces(model_cfg)
        self.table = cost_table(pieces, cfg.cost, latency_path=cfg.latency_table)
        self.full_cost = self.table.full_cost()
        with strategy.scope():
            with precision(cfg.mixed_precision):
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
        self.manager = tf.train.CheckpointManager(self.ckpt, rundir.path(workdir, rundir.CHECKPOINTS), max_to_keep=2)
        self.writer = tf.summary.create_file_writer(rundir.path(workdir, rundir.TENSORBOARD))
        self.qat_model: keras.Model | None = None
        self.qat_manager: tf.train.CheckpointManager | None = None

    def build_qat(self) -> None:
        """Wraps the (trained) float model for QAT, with its own checkpoints under ``checkpoints_qat/``."""
        from ddi_tf.quant import qat

        with self.strategy.scope():
            self.qat_model = qat.quantize_model(self.model)
        ckpt = tf.train.Checkpoint(model=self.qat_model, step=self.step, opt_qat=self.optimizers["qat"])
        self.qat_manager = tf.train.CheckpointManager(ckpt, rundir.path(self.workdir, rundir.QAT_CHECKPOINTS),
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
        block_names = names.decision_keys(model.output)
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
                teacher = tf.cast(outs[0][names.exit_logits(last)], tf.float32)  # float32 also under mixed precision
                per_example = 0.0
                for p, o in enumerate(outs):
                    for j, w in enumerate(self.exit_weights):
                        logits = tf.cast(o[names.exit_logits(j)], tf.float32)
                        term = classification_loss(labels, logits, cfg.label_smoothing)
                        taught = j != last or (p > 0 and teacher_is_full)  # not the teacher itself
                        if cfg.distill_weight > 0 and taught:
                            term += cfg.distill_weight * distillation_loss(logits, teacher, cfg.distill_temperature)
                        per_example += w * term
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
                out = outs[-1]  # the learned (or most dynamic) path: the cost term and the metrics
                ratio = tf.cast(out[names.exit_cost(last)], tf.float32) / full
                mean_ratio = tf.reduce_mean(ratio)
                if with_cost:
                    loss += cost_term(cfg.cost_loss, ratio, cfg.target_cost, cfg.cost_weight, self.multiplier,
                                      global_batch)
                if with_cost and cfg.gate_margin > 0:
                    loss += cfg.gate_margin * gate_margin_loss(
                        [out[names.probs(names.index_of(k))] for k in block_names], cfg.gate_margin_target)
                if stage == "rl":
                    reward = -classification_loss(labels, out[names.exit_logits(last)]) - cfg.rl_cost_weight * ratio
                    adv = tf.stop_gradient(reward - tf.reduce_mean(reward))
                    chosen_p = [tf.reduce_sum(out[k] * out[names.probs(names.index_of(k))], -1) for k in block_names]
                    logp = tf.add_n([tf.math.log(p + 1e-9) for p in chosen_p])
                    loss += tf.nn.compute_average_loss(-adv * logp, global_batch_size=global_batch)
            grads = tape.gradient(loss, variables)
            grads_vars = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
            opt.apply_gradients(grads_vars)
            metrics = {"loss": loss * self.strategy.num_replicas_in_sync, "cost_ratio": mean_ratio}
            for j in range(self.exits):
                pred = tf.argmax(out[names.exit_logits(j)], -1, output_type=tf.int32)
                metrics[f"accuracy/exit{j}"] = tf.reduce_mean(tf.cast(pred == tf.cast(labels, tf.int32), tf.float32))
            for k in block_names:
                metrics[f"gates/{names.block(names.index_of(k))}"] = tf.reduce_mean(out[k], axis=0)
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
            is_gate = names.is_gate_layer(layer.name)
            layer.trainable = is_gate if stage == "stage2" else True
        if stage in ("stage2", "rl") and not gated:
            raise ValueError(f"{stage} trains gates, but the model has none (--gate_type=none)")

    # --- the loop ---------------------------------------------------------------------------------------
    def fit(self, train_xy: tuple[np.ndarray, np.ndarray], mean, std,
            val_xy: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        restored = self.manager.restore_or_initialize()
        if cfg.qat_steps and tf.train.latest_checkpoint(rundir.path(self.workdir, rundir.QAT_CHECKPOINTS)):
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
            self._finalize_float(train_xy, mean, std, val_xy)
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
                self._finalize_float(train_xy, mean, std, val_xy)
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
        self._finalize_float(train_xy, mean, std, val_xy)
        self._finish_qat()

    def _finalize_float(self, train_xy: tuple[np.ndarray, np.ndarray], mean, std,
                        val_xy: tuple[np.ndarray, np.ndarray] | None = None, batch: int = 200) -> None:
        """Once, after the float stages: the weight average replaces the weights and the batch-norm statistics
        are re-estimated on ``bn_reestimate_batches`` batches of augmented training images (the distribution the
        network was trained on: statistics of unaugmented images, without the crops' zero borders, took the
        static ResNet-20 from 90% to 51% on the first 2,000 test images), on the learned path when gates were
        trained, else the full one; then, with ``calibrate_cost``, the gates are calibrated to the target cost on the
        held-out ``val_xy`` (``ddi_tf.training.calibrate``). Checkpointed, so a resumed run does not redo it."""
        cfg = self.cfg
        if int(self.finalized.numpy()) or int(self.step.numpy()) < cfg.float_steps or not (
                self.ema or cfg.bn_reestimate_batches or cfg.calibrate_cost):
            return
        for avg, var in zip(self.ema, self.averaged, strict=True):
            var.assign(avg)
        model = self.model  # batch norm and gates are finished in float32 (the weights are float32 either way)
        if cfg.mixed_precision != "float32":
            model = build_model(self.model_cfg, self.table)
            copy_weights(self.model, model)
        if cfg.bn_reestimate_batches:
            ds = data_lib.make_train_dataset(train_xy[0], train_xy[1], batch, cfg.seed + 1, augment=True, mean=mean,
                                             std=std, drop_remainder=False)
            batches = [x.numpy() for x, _ in ds.take(cfg.bn_reestimate_batches)]
            count = sum(len(x) for x in batches)
            trained_gates = self.model_cfg.gated and (cfg.stage2_steps + cfg.stage3_steps + cfg.rl_steps) > 0
            mode = "learned" if trained_gates else "full"
            n = reestimate_batch_norm(model, batches, mode)
            logging.info("batch norm: %d layers re-estimated on %d training images (%s path)", n, count, mode)
        if cfg.calibrate_cost:
            result = calibrate_gate_cost(model, self.model_cfg, *val_xy, cfg.target_cost, self.full_cost, mean,
                                         std, cfg.eval_batch_size)
            write_json_atomic(rundir.path(self.workdir, rundir.GATE_CALIBRATION), result)
            logging.info("gates calibrated on %d held-out images: delta %.3f, learned-path cost %.3f -> %.3f of full "
                         "(target %.2f)", result["images"], result["delta"], result["ratio_before"],
                         result["ratio_after"], cfg.target_cost)
        if model is not self.model:
            copy_weights(model, self.model)
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
                    options = self.model_cfg.option_names(names.index_of(k.split("/", 1)[1]))
                    for o, f in zip(options, v, strict=True):
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
    if cfg.mixed_precision != "float32" and cfg.qat_steps:
        raise ValueError(f"QAT runs in float32: train the float stages with --mixed_precision={cfg.mixed_precision}, "
                         "then resume the finished run with --mixed_precision=float32 --qat_steps=N")
    if cfg.calibrate_cost and not (model_cfg.gated and cfg.val_size > 0):
        raise ValueError("--calibrate_cost needs a gated model and held-out images (--val_size > 0)")
    check_or_write_config(workdir, model_cfg, cfg)
    if cfg.latency_table:  # a table that does not fit this architecture fails now, not after training
        cost_table(build_pieces(model_cfg), "latency", latency_path=cfg.latency_table)
    keras.utils.set_random_seed(cfg.seed)
    (x_tr, y_tr), (x_val, y_val) = data_lib.split_train_val(data, cfg.val_size, cfg.seed)
    mean, std = cfg.normalization
    strategy = make_strategy(cfg)
    logging.info("strategy %s, num_replicas_in_sync: %d", type(strategy).__name__, strategy.num_replicas_in_sync)
    trainer = _Trainer(model_cfg, cfg, workdir, strategy)
    trainer.fit((x_tr, y_tr), mean, std, (x_val, y_val))
    x_te, y_te = data.x_test, data.y_test
    if cfg.eval_limit:
        x_te, y_te = x_te[: cfg.eval_limit], y_te[: cfg.eval_limit]
    logging.info("evaluating on %d test images (%d validation images for calibration)", len(y_te), len(y_val))
    model = trainer.model
    if cfg.mixed_precision != "float32":  # evaluate the float32 weights in float32
        model = build_model(model_cfg, trainer.table)
        copy_weights(trainer.model, model)
    report = evaluate_model(model_cfg, model, (x_val, y_val), (x_te, y_te), mean, std, cfg.budget_fractions,
                            cfg.target_fractions, cfg.eval_batch_size, latency_table=cfg.latency_table)
    report["class_names"] = list(data.class_names)
    report["train_steps"] = int(trainer.step.numpy())
    calibration = rundir.path(workdir, rundir.GATE_CALIBRATION)
    report["gate_calibration"] = read_json(calibration) if os.path.exists(calibration) else None
    write_json_atomic(rundir.path(workdir, rundir.REPORT), report)
    plot_report({"": report}, rundir.path(workdir, rundir.REPORT_PLOT),
                title=f"{model_cfg.backbone}-{model_cfg.depth} gates={model_cfg.gate_type} G={model_cfg.groups}")
    return report
