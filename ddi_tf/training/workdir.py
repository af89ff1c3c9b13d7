"""The run directory, its one owner: ``config.json`` (written once, checked on every resume), the checkpoints
and the trained model they restore (docs/CONTRACTS.md lists every file)."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import tensorflow as tf
import tf_keras as keras

from ddi_tf.core import rundir
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.files import write_json_atomic
from ddi_tf.model.build import build_model
from ddi_tf.model.weights import gated_from_static, regrouped_weights
from ddi_tf.training.config import TrainConfig

CONFIG_VERSION = 1


class RunDirError(ValueError):
    """A directory that should hold a trained run does not (no config.json or no checkpoint)."""


class ResumeError(ValueError):
    """The work directory holds a run with incompatible settings."""


# Settings that may change between a run and its resumption (they do not change what is trained).
RESUMABLE_KEYS = {"data_dir", "cache_dir", "log_every", "checkpoint_every", "eval_batch_size", "budget_fractions",
                  "target_fractions", "eval_limit", "strategy", "tpu", "cpu_devices", "latency_table"}


# Settings that may change until the QAT stage has started (extending a trained float run with QAT).
EXTENDABLE_KEYS = {"qat_steps", "qat_lr", "gate_margin", "gate_margin_target"}


# Settings only the stages after stage 1 use: they may change while the run has not gone past stage 1, so one
# trained backbone can be branched (copied) into several gate trainings (the cost ablations of the baselines study).
GATE_STAGE_KEYS = {"stage2_steps", "stage3_steps", "rl_steps", "gate_lr", "finetune_lr", "rl_lr", "cost",
                   "target_cost", "cost_weight", "rl_cost_weight", "gate_margin", "gate_margin_target", "cost_loss",
                   "cost_dual_lr", "calibrate_cost"}


# Settings that may change once the float stages are over (the run's weights are float32 under either precision):
# the float stages trained with mixed precision, then the finished run resumed in float32 for QAT.
FLOAT_DONE_KEYS = {"mixed_precision"}


def check_or_write_config(workdir: str, model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """Writes ``workdir/config.json``, or checks a resumed run's against it (ResumeError on a mismatch)."""
    path = rundir.path(workdir, rundir.CONFIG)
    new = {"version": CONFIG_VERSION, "model": model_cfg.to_dict(), "train": _jsonable(dataclasses.asdict(train_cfg))}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diffs = []
        if old.get("version") != CONFIG_VERSION:
            diffs.append(f"config version {old.get('version')} != {CONFIG_VERSION}")
        done = checkpoint_step(rundir.path(workdir, rundir.CHECKPOINTS))
        within_stage1 = done is not None and done <= old.get("train", {}).get("stage1_steps", -1)
        old_train = old.get("train", {})
        float_steps = sum(old_train.get(f"{s}_steps", 0) for s in ("stage1", "stage2", "stage3", "rl"))
        float_done = done is not None and done >= float_steps
        defaults = {"model": _jsonable(dataclasses.asdict(ModelConfig())),
                    "train": _jsonable(dataclasses.asdict(TrainConfig()))}
        for section in ("model", "train"):
            a, b = old.get(section, {}), new[section]
            for k in sorted(set(a) | set(b)):
                if section == "train" and k in RESUMABLE_KEYS:
                    continue
                if section == "train" and k in EXTENDABLE_KEYS and not os.path.isdir(
                        rundir.path(workdir, rundir.QAT_CHECKPOINTS)):
                    continue  # a finished float run may be extended with a QAT stage
                if section == "train" and k in GATE_STAGE_KEYS and within_stage1:
                    continue  # a run still in (or just at the end of) stage 1 may branch into other gate settings
                if section == "train" and k in FLOAT_DONE_KEYS and float_done:
                    continue
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
    cfg_path = rundir.path(workdir, rundir.CONFIG)
    if not os.path.exists(cfg_path):
        raise RunDirError(f"{workdir} is not a training work directory (no config.json); train first with "
                          "python -m ddi_tf.train --workdir=...")
    with open(cfg_path) as f:
        conf = json.load(f)
    cfg = ModelConfig.from_dict(conf["model"])
    ckpt_path = tf.train.latest_checkpoint(rundir.path(workdir, rundir.CHECKPOINTS))
    if ckpt_path is None:
        raise RunDirError(f"{workdir} has no trained checkpoint under checkpoints/; train it first")
    model = build_model(cfg)
    tf.train.Checkpoint(model=model).restore(ckpt_path).expect_partial()
    return cfg, conf["train"], model


def init_from_run(model: keras.Model, workdir: str, cfg: ModelConfig | None = None) -> tuple[list[str], list[str]]:
    """Copies into ``model`` the weights of every layer of run ``workdir``'s model with the same name and shapes.

    This starts a run from a trained backbone (SkipNet's recipe), e.g. gates of another kind over the same
    stage-1 backbone, or a gated model over a trained static backbone (its conv2 split into the channel groups,
    its bn2 copied into every width's batch norm: ``ddi_tf.model.weights.gated_from_static``). With ``cfg``
    (``model``'s config), blocks with fewer channel groups than the source's
    (``min_group_channels``) get the source's groups merged (``ddi_tf.model.weights.regrouped_weights``). Returns
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
