"""Command: the int8 export of a trained run (``ddi_tf.deploy.export``).

    python -m ddi_tf.export --workdir=runs/cifar_cpu --out=models/cifar_cpu [--calibration_images=256] [--json=F]
        [--gate_pool=mean|average]

``--gate_pool=average`` for microcontrollers: the gates pool with AVERAGE_POOL_2D, which TensorFlow Lite Micro
runs ~20x faster than MEAN (the default, the faster op on LiteRT / XNNPACK); see docs/RESULTS.md section 4.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ddi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from ddi_tf.core import rundir
from ddi_tf.deploy.export import ExportError, export, export_summary, load_trained


def main(argv: list[str]) -> None:
    """CLI: ``python -m ddi_tf.export --workdir=W --out=D [--calibration_images=N]``."""
    import sys

    from absl import flags

    from ddi_tf import data as data_lib
    from ddi_tf.training.config import TrainConfig
    from ddi_tf.training.trainer import load_data

    FLAGS = flags.FLAGS  # noqa: N806
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    try:
        _, train_conf, _ = load_trained(FLAGS.workdir)
        tcfg = TrainConfig.from_dict(train_conf)
        if FLAGS.data_dir:
            tcfg = dataclasses.replace(tcfg, data_dir=FLAGS.data_dir)
        data = load_data(tcfg)
        (x_tr, _), _ = data_lib.split_train_val(data, tcfg.val_size, tcfg.seed)
        mean, std = tcfg.normalization
        thresholds = {}
        report_path = rundir.path(FLAGS.workdir, rundir.REPORT)
        if os.path.exists(report_path):
            with open(report_path) as f:
                rep = json.load(f)
            thresholds = {f"{r['target_fraction']:g}": r["threshold"] for r in rep.get("threshold", [])}
        manifest = export(FLAGS.workdir, FLAGS.out, x_tr[: FLAGS.calibration_images], mean, std, data.class_names,
                          thresholds, gate_pool=FLAGS.gate_pool)
    except (ExportError, data_lib.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    summary = export_summary(manifest, FLAGS.out)
    print(json.dumps(summary, indent=2))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "Training work directory (config.json + checkpoints/).")
    flags.DEFINE_string("out", None, "Export directory (replaced atomically).")
    flags.DEFINE_integer("calibration_images", 256, "Training images for calibration / representative data.")
    flags.DEFINE_string("data_dir", None, "Override the data location recorded in the work directory.")
    flags.DEFINE_string("json", None, "Also write the export report (checks, sizes, Edge TPU readiness) here.")
    flags.DEFINE_enum("gate_pool", "mean", ["mean", "average"],
                      "The gates' global pool: mean (MEAN: fastest on LiteRT / XNNPACK) or average (AVERAGE_POOL_2D "
                      "over the whole map: ~20x faster than MEAN on TensorFlow Lite Micro).")
    flags.mark_flags_as_required(["workdir", "out"])
    app.run(main)
