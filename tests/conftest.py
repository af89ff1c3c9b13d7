"""Shared pytest setup: make the repository importable and set the Keras 2 switch before TensorFlow loads."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402

import ddi_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)
from ddi_tf.core.config import ModelConfig  # noqa: E402
from ddi_tf.training.config import TrainConfig  # noqa: E402

# min_group_channels=32: blocks 0 and 1 (16 and 32 channels) have one group (skip or full), block 2 has G = 2,
# so every export, runtime and micro test also covers blocks with different option counts
EXPORT_MODEL = ModelConfig(depth=8, groups=2, min_group_channels=32, exits=(1,), exit_width=8, gate_hidden=8)
EXPORT_TRAIN = TrainConfig(dataset="synthetic", synthetic_train=512, synthetic_test=128, val_size=64, batch_size=32,
                           stage1_steps=40, stage2_steps=10, stage3_steps=10, warmup_steps=5, log_every=10,
                           checkpoint_every=100, eval_batch_size=128, budget_fractions=(1.0,),
                           target_fractions=(1.0,))


def train_and_export(model_cfg: ModelConfig, root) -> tuple:
    """``model_cfg`` trained with EXPORT_TRAIN on synthetic data in ``root/run``, exported to ``root/model``, the
    test split written to ``root/test.npz``: (workdir, export dir, manifest, data)."""
    from ddi_tf import data as data_lib
    from ddi_tf.deploy import export as export_lib
    from ddi_tf.training.trainer import train_and_evaluate

    workdir, out = str(root / "run"), str(root / "model")
    train_and_evaluate(model_cfg, EXPORT_TRAIN, workdir)
    data = data_lib.synthetic_cifar(EXPORT_TRAIN.synthetic_train, EXPORT_TRAIN.synthetic_test, 10, EXPORT_TRAIN.seed)
    mean, std = data_lib.normalization_for("cifar10")
    manifest = export_lib.export(workdir, out, data.x_train[:64], mean, std, data.class_names)
    data_lib.write_npz(str(root / "test.npz"), data.x_test, data.y_test)
    return workdir, out, manifest, data


def check_int8_follows_keras(workdir: str, out: str, data) -> tuple:
    """Asserts the export ``out`` of run ``workdir`` follows its float model on the synthetic test split: gate
    decisions >= 90% and last-exit argmax >= 85% equal, 0 over budget and >= 80% equal predictions under budgets
    of 0.5 and 1.0x. Returns (model config, float model, mean, std)."""
    from ddi_tf import data as data_lib
    from ddi_tf.deploy import export as export_lib
    from ddi_tf.deploy.parity import budget_sweep, compare

    cfg, _, model = export_lib.load_trained(workdir)
    mean, std = data_lib.normalization_for("cifar10")
    res = compare(model, cfg, out, data.x_test, mean, std)
    assert res["gate_agreement"] >= 0.9 and res["exit_agreement"][-1] >= 0.85, res
    rows = budget_sweep(model, cfg, out, data.x_test, data.y_test, mean, std, [0.5, 1.0])
    assert all(r["over_budget"] == 0 and r["int8_max_macs"] <= r["budget_macs"] for r in rows)
    assert all(r["prediction_agreement"] >= 0.8 for r in rows), rows
    return cfg, model, mean, std


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A tiny model trained on synthetic data and exported: (workdir, export dir, manifest, data)."""
    return train_and_export(EXPORT_MODEL, tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="session")
def exported_qat(tmp_path_factory):
    """The same tiny model with a QAT stage, exported with the QAT ranges: (workdir, export dir, manifest, data)."""
    import dataclasses

    from ddi_tf import data as data_lib
    from ddi_tf.deploy import export as export_lib
    from ddi_tf.training.trainer import train_and_evaluate

    root = tmp_path_factory.mktemp("export_qat")
    workdir, out = str(root / "run"), str(root / "model")
    tcfg = dataclasses.replace(EXPORT_TRAIN, qat_steps=30, gate_margin=1.0, gate_margin_target=0.5)
    train_and_evaluate(EXPORT_MODEL, tcfg, workdir)
    data = data_lib.synthetic_cifar(EXPORT_TRAIN.synthetic_train, EXPORT_TRAIN.synthetic_test, 10, EXPORT_TRAIN.seed)
    mean, std = data_lib.normalization_for("cifar10")
    manifest = export_lib.export(workdir, out, data.x_train[:64], mean, std, data.class_names)
    return workdir, out, manifest, data
