"""Command: Keras against the int8 pieces of an export (``ddi_tf.deploy.parity``).

    python -m ddi_tf.parity --workdir=runs/cifar_cpu --model_dir=models/cifar_cpu [--layers] [--json=F]
"""

from __future__ import annotations

import json

import numpy as np

import ddi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from ddi_tf.deploy.parity import budget_sweep, compare, edge_agreement


def _positive_fractions(values: list[str]) -> bool:
    """The --budget_fractions validator: every value a positive, finite number."""
    try:
        return all(0.0 < float(v) < float("inf") for v in values)
    except ValueError:
        return False


def main(argv: list[str]) -> None:
    """CLI."""
    del argv
    from absl import flags

    from ddi_tf.deploy.export import load_trained
    from ddi_tf.quant.qat import restore_qat
    from ddi_tf.training.config import TrainConfig
    from ddi_tf.training.trainer import load_data

    FLAGS = flags.FLAGS  # noqa: N806
    cfg, train_conf, model = load_trained(FLAGS.workdir)
    tcfg = TrainConfig.from_dict(train_conf)
    data = load_data(tcfg)
    mean, std = tcfg.normalization
    # a seeded random subset: the test split of an image-folder archive is ordered by class
    order = np.random.default_rng(0).permutation(len(data.y_test))[: FLAGS.limit or None]
    x, y = data.x_test[order], data.y_test[order]
    qat_model = restore_qat(FLAGS.workdir, cfg, model)  # (model then holds the QAT-trained float weights)
    # the Keras reference: the QAT model (fake-quantised like the int8 pieces) when the run has a QAT stage
    res = compare(qat_model or model, cfg, FLAGS.model_dir, x, mean, std)
    res["reference"] = "qat" if qat_model is not None else "float"
    res["int8_accuracy_last_exit"] = float((res["int8_exit_pred"][:, -1] == y).mean())
    res["keras_accuracy_last_exit"] = float((res["keras_exit_pred"][:, -1] == y).mean())
    out = {k: v for k, v in res.items() if not isinstance(v, np.ndarray)}
    if FLAGS.layers:
        out["edge_agreement"] = edge_agreement(qat_model or model, cfg, FLAGS.model_dir, x[:200], mean, std)
    if FLAGS.budget_fractions:
        out["budgets"] = budget_sweep(model, cfg, FLAGS.model_dir, x, y, mean, std,
                                      [float(v) for v in FLAGS.budget_fractions], qat_model=qat_model)
    print(json.dumps(out, indent=2))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "Training work directory.")
    flags.DEFINE_string("model_dir", None, "Export directory.")
    flags.DEFINE_integer("limit", 1000, "Test images (0: all).")
    flags.DEFINE_string("json", None, "Also write the result here.")
    flags.DEFINE_boolean("layers", False, "Also compare the feature maps after the stem and every block, element "
                         "by element on the int8 grid (200 images, every block at full width).")
    flags.DEFINE_list("budget_fractions", ["0.25", "0.5", "0.75", "1.0"],
                      "Budgets (fractions of the full MACs, positive and finite) at which float and int8 accuracy "
                      "are compared.")
    flags.register_validator("budget_fractions", _positive_fractions,
                             "--budget_fractions must be positive, finite numbers (NaN, 0, < 0 and inf are refused)")
    flags.mark_flags_as_required(["workdir", "model_dir"])
    app.run(main)
