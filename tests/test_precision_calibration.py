"""Training with mixed precision and a calibrated gate cost, end to end on tiny synthetic data."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import ddi_tf  # noqa: F401
from ddi_tf.core import rundir
from ddi_tf.core.config import ModelConfig
from ddi_tf.deploy.export import load_trained
from ddi_tf.training import trainer as trainer_lib
from ddi_tf.training.config import TrainConfig
from ddi_tf.training.trainer import train_and_evaluate
from ddi_tf.training.workdir import ResumeError

MODEL = ModelConfig(depth=8, groups=2, exits=(1, 2), exit_width=8, gate_hidden=4, gate_init_full=2.0)
TRAIN = TrainConfig(dataset="synthetic", synthetic_train=192, synthetic_test=64, val_size=96, batch_size=16,
                    stage1_steps=4, stage2_steps=2, stage3_steps=2, warmup_steps=1, log_every=2,
                    checkpoint_every=2, eval_batch_size=64, budget_fractions=(1.0,), target_fractions=(1.0,),
                    bn_reestimate_batches=1, ema_decay=0.5, target_cost=0.6)


def test_mixed_bfloat16_trains_in_bf16_and_hands_float32_weights_to_evaluation_and_qat(tmp_path, monkeypatch):
    seen = {}
    original = trainer_lib._Trainer.fit

    def spy(self, *args, **kwargs):
        seen["compute"] = self.model.get_layer("block0_conv1").compute_dtype
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_lib._Trainer, "fit", spy)
    cfg = dataclasses.replace(TRAIN, mixed_precision="mixed_bfloat16")
    report = train_and_evaluate(MODEL, cfg, str(tmp_path))
    assert seen["compute"] == "bfloat16"
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored after building
    _, _, model = load_trained(str(tmp_path))
    assert all(w.dtype == tf.float32 for w in model.weights if w.dtype.is_floating and w.dtype != tf.float64)
    assert 0 < report["exits_all_full"][-1]["accuracy"] <= 1
    with pytest.raises(ValueError, match="QAT runs in float32"):
        train_and_evaluate(MODEL, dataclasses.replace(cfg, qat_steps=2), str(tmp_path))
    # the finished run resumed in float32 for QAT: allowed (float stages over), and QAT trains
    resumed = train_and_evaluate(MODEL, dataclasses.replace(TRAIN, qat_steps=2), str(tmp_path))
    assert resumed["train_steps"] == TRAIN.total_steps + 2


def test_precision_may_not_change_while_the_float_stages_run(tmp_path):
    cfg = dataclasses.replace(TRAIN, mixed_precision="mixed_bfloat16")
    train_and_evaluate(MODEL, cfg, str(tmp_path))
    # as a run killed before the end of its float stages leaves it: the latest checkpoint is an earlier one
    ckpts = rundir.path(str(tmp_path), rundir.CHECKPOINTS)
    earlier = sorted(tf.train.get_checkpoint_state(ckpts).all_model_checkpoint_paths)[0]
    with open(os.path.join(ckpts, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{os.path.basename(earlier)}"\n')
    assert int(earlier.rsplit("-", 1)[1]) < TRAIN.total_steps
    with pytest.raises(ResumeError, match="mixed_precision"):
        train_and_evaluate(MODEL, dataclasses.replace(cfg, mixed_precision="float32"), str(tmp_path))


def test_calibrated_run_records_its_tilt_and_reaches_the_target_on_the_held_out_images(tmp_path):
    cfg = dataclasses.replace(TRAIN, calibrate_cost=True)
    report = train_and_evaluate(MODEL, cfg, str(tmp_path))
    with open(rundir.path(str(tmp_path), rundir.GATE_CALIBRATION)) as f:
        result = json.load(f)
    assert report["gate_calibration"] == result and result["images"] == TRAIN.val_size
    assert abs(result["ratio_after"] - cfg.target_cost) <= abs(result["ratio_before"] - cfg.target_cost)
    assert np.isfinite(result["delta"])
    with pytest.raises(ValueError, match="calibrate_cost needs"):
        train_and_evaluate(dataclasses.replace(MODEL, gate_type="none"), cfg, str(tmp_path / "static"))
