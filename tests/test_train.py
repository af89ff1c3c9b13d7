"""Training end to end on tiny synthetic data: every stage, resume, incompatible flags, the CLI, mirrored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ddi_tf  # noqa: F401
from ddi_tf.core.config import ModelConfig
from ddi_tf.training import trainer as trainer_lib
from ddi_tf.training import workdir as workdir_lib
from ddi_tf.training.config import TrainConfig
from ddi_tf.training.trainer import train_and_evaluate
from ddi_tf.training.workdir import ResumeError

REPO = Path(__file__).resolve().parents[1]
MODEL = ModelConfig(depth=8, groups=2, exits=(1, 2), exit_width=8, gate_hidden=4)
TRAIN = TrainConfig(dataset="synthetic", synthetic_train=192, synthetic_test=64, val_size=64, batch_size=16,
                    stage1_steps=4, stage2_steps=2, stage3_steps=2, rl_steps=2, warmup_steps=1, log_every=2,
                    checkpoint_every=2, eval_batch_size=64, budget_fractions=(0.3, 1.0), target_fractions=(0.5, 1.0))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_smoke_training_through_every_stage(tmp_path):
    report = train_and_evaluate(MODEL, TRAIN, str(tmp_path))
    assert report["train_steps"] == TRAIN.total_steps
    for key in ("exits_all_full", "exits_learned_gates", "anytime", "threshold", "ddi", "ddi_pareto", "gate_usage"):
        assert report[key], key
    for row in report["anytime"] + report["ddi"]:
        assert row["over_budget"] == 0
        assert row["max_macs"] <= row["budget_macs"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["full_macs"] == report["full_macs"]
    assert (tmp_path / "report.png").stat().st_size > 0
    assert list((tmp_path / "tb").iterdir()), "TensorBoard events"
    assert (tmp_path / "checkpoints" / "checkpoint").exists()


def _final_weights(workdir: Path) -> list[np.ndarray]:
    import tensorflow as tf

    from ddi_tf.model.build import build_model

    model = build_model(MODEL)
    ckpt = tf.train.Checkpoint(model=model)
    ckpt.restore(tf.train.latest_checkpoint(str(workdir / "checkpoints"))).expect_partial()
    return [w.copy() for w in model.get_weights()]


def test_interrupted_run_resumes_at_the_same_step(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TRAIN.__dict__, "stage2_steps": 0, "stage3_steps": 0, "rl_steps": 0, "stage1_steps": 6})
    train_and_evaluate(MODEL, cfg, str(tmp_path / "straight"))

    original = trainer_lib._Trainer.make_step

    def dying_make_step(self, *args):
        step = original(self, *args)

        def wrapped(images, labels):
            if int(self.step.numpy()) == 5:
                raise KeyboardInterrupt("killed")
            return step(images, labels)

        return wrapped

    monkeypatch.setattr(trainer_lib._Trainer, "make_step", dying_make_step)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(MODEL, cfg, str(tmp_path / "killed"))
    assert not (tmp_path / "killed" / "report.json").exists()
    monkeypatch.setattr(trainer_lib._Trainer, "make_step", original)
    steps_seen = []
    orig_fit = trainer_lib._Trainer.fit

    def spy_fit(self, *args):
        self.manager.restore_or_initialize()
        steps_seen.append(int(self.step.numpy()))
        return orig_fit(self, *args)

    monkeypatch.setattr(trainer_lib._Trainer, "fit", spy_fit)
    report = train_and_evaluate(MODEL, cfg, str(tmp_path / "killed"))
    assert steps_seen == [4]  # last checkpoint before the kill at step 5
    assert report["train_steps"] == 6
    for a, b in zip(_final_weights(tmp_path / "straight"), _final_weights(tmp_path / "killed"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_resume_with_incompatible_flags_is_a_clear_error(tmp_path):
    cfg = TrainConfig(**{**TRAIN.__dict__, "stage2_steps": 0, "stage3_steps": 0, "rl_steps": 0, "stage1_steps": 2})
    train_and_evaluate(MODEL, cfg, str(tmp_path))
    with pytest.raises(ResumeError, match=r"--depth: run has 8, now 14"):
        train_and_evaluate(ModelConfig(depth=14, groups=2, exits=(1, 2), exit_width=8, gate_hidden=4), cfg,
                           str(tmp_path))
    with pytest.raises(ResumeError, match=r"--lr"):
        train_and_evaluate(MODEL, TrainConfig(**{**cfg.__dict__, "lr": 0.5}), str(tmp_path))
    # settings that do not change what is trained may change
    train_and_evaluate(MODEL, TrainConfig(**{**cfg.__dict__, "log_every": 7, "eval_limit": 32}), str(tmp_path))


def test_a_run_within_stage1_branches_into_other_gate_settings(tmp_path):
    import shutil

    stage1 = TrainConfig(**{**TRAIN.__dict__, "stage2_steps": 0, "stage3_steps": 0, "rl_steps": 0})
    train_and_evaluate(MODEL, stage1, str(tmp_path / "backbone"))
    shutil.copytree(tmp_path / "backbone", tmp_path / "energy")
    branch = TrainConfig(**{**stage1.__dict__, "stage2_steps": 2, "cost": "energy", "target_cost": 0.4})
    report = train_and_evaluate(MODEL, branch, str(tmp_path / "energy"))
    assert report["train_steps"] == stage1.stage1_steps + 2
    # stage 2 has run now: its settings are fixed
    with pytest.raises(ResumeError, match=r"--cost: run has 'energy', now 'macs'"):
        train_and_evaluate(MODEL, TrainConfig(**{**branch.__dict__, "cost": "macs"}), str(tmp_path / "energy"))
    # stage 1's own settings never branch
    shutil.copytree(tmp_path / "backbone", tmp_path / "lr")
    with pytest.raises(ResumeError, match=r"--lr"):
        train_and_evaluate(MODEL, TrainConfig(**{**branch.__dict__, "lr": 0.5}), str(tmp_path / "lr"))


def test_init_from_starts_other_gates_on_a_trained_backbone(tmp_path):
    stage1 = TrainConfig(**{**TRAIN.__dict__, "stage2_steps": 0, "stage3_steps": 0, "rl_steps": 0})
    train_and_evaluate(MODEL, stage1, str(tmp_path / "ff"))
    rnn = ModelConfig(**{**MODEL.__dict__, "gate_type": "rnn"})
    gates_only = TrainConfig(**{**stage1.__dict__, "stage1_steps": 0, "stage2_steps": 2,
                                "init_from": str(tmp_path / "ff")})
    train_and_evaluate(rnn, gates_only, str(tmp_path / "rnn"))
    _, _, source = workdir_lib.load_trained(str(tmp_path / "ff"))
    _, _, branched = workdir_lib.load_trained(str(tmp_path / "rnn"))
    backbone = [layer.name for layer in source.layers if layer.weights and not layer.name.startswith("gate")]
    assert backbone
    for name in backbone:  # stage 2 trains only the gates: the copied backbone is unchanged
        for a, b in zip(source.get_layer(name).get_weights(), branched.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(workdir_lib.RunDirError, match="no config.json"):
        workdir_lib.init_from_run(branched, str(tmp_path / "missing"))


def _run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddi_tf.train", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--depth=21"], "6n+2"),
    (["--target_cost=1.5"], "--target_cost must be in (0, 1]"),
    (["--dataset=cifar10", "--data_dir=/nonexistent/cifar"], "/nonexistent/cifar"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, args, message):
    res = _run_cli("--flagfile=configs/smoke.flags", f"--workdir={tmp_path}", *args)
    assert res.returncode != 0
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    res = _run_cli("--flagfile=configs/smoke.flags", f"--workdir={tmp_path}", "--strategy=mirrored",
                   "--cpu_devices=2", "--stage1_steps=4", "--stage2_steps=2", "--stage3_steps=2", "--rl_steps=0",
                   "--batch_size=16", "--synthetic_train=128", "--synthetic_test=64", "--val_size=64")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["train_steps"] == 8
    assert "num_replicas_in_sync: 2" in (tmp_path / "train.log").read_text()


def test_qat_stage_trains_the_quantized_model_and_hands_its_weights_back(tmp_path):
    import tensorflow as tf

    from ddi_tf.model.build import build_model
    from ddi_tf.quant import qat

    cfg = TrainConfig(**{**TRAIN.__dict__, "rl_steps": 0, "qat_steps": 4})
    report = train_and_evaluate(MODEL, cfg, str(tmp_path))
    assert report["train_steps"] == 12
    q = qat.quantize_model(build_model(MODEL))
    tf.train.Checkpoint(model=q).restore(tf.train.latest_checkpoint(str(tmp_path / "checkpoints_qat"))).expect_partial()
    pre_qat = build_model(MODEL)
    tf.train.Checkpoint(model=pre_qat).restore(str(tmp_path / "checkpoints" / "ckpt-8")).expect_partial()
    final = _final_weights(tmp_path)
    by_name = {v.name: v.numpy() for v in q.weights}
    names = [w.name for w in pre_qat.weights]
    for name, w in zip(names, final, strict=True):
        np.testing.assert_array_equal(w, by_name[name])
    kernel = names.index("block1_conv1/kernel:0")
    assert not np.array_equal(final[kernel], pre_qat.get_weights()[kernel])  # QAT changed the weights


def test_flag_defaults_are_the_config_defaults_and_every_field_has_its_flag(monkeypatch):
    """Defaults are written once (the dataclass field); the flag-to-config mapping covers every field."""
    import dataclasses
    import types

    from ddi_tf import flags as ddi_flags
    from ddi_tf.core.config import ModelConfig

    ddi_flags.define_flags()
    real = ddi_flags.FLAGS

    class Defaults:  # every flag at its default, read as the mapping reads flags (f.name and f[name].value)
        def __getattr__(self, name):
            return real[name].default

        def __getitem__(self, name):
            return types.SimpleNamespace(value=real[name].default)

    monkeypatch.setattr(ddi_flags, "FLAGS", Defaults())
    assert ddi_flags.train_config_from_flags() == TrainConfig()
    model, default = ddi_flags.model_config_from_flags(), ModelConfig()
    for field in dataclasses.fields(ModelConfig):
        if field.name not in ("num_classes", "exits"):  # resolved from the data / other flags
            assert getattr(model, field.name) == getattr(default, field.name), field.name
