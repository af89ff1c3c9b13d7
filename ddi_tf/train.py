"""Entry point: ``python -m ddi_tf.train --flagfile=configs/cifar.flags [--workdir=...]``.

Parses the flags, then hands plain configs to ``ddi_tf.training.trainer.train_and_evaluate``.
"""

from __future__ import annotations

import json
import logging as pylogging
import os
import sys

from absl import app, logging

import ddi_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from ddi_tf import flags as ddi_flags
from ddi_tf.core import rundir

ddi_flags.define_flags()
FLAGS = ddi_flags.FLAGS


def main(argv: list[str]) -> None:
    """Trains and evaluates as the flags say."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    workdir = FLAGS.workdir or os.path.join(
        "runs", f"{FLAGS.dataset}_{FLAGS.backbone}{FLAGS.depth}_{FLAGS.gate_type}_g{FLAGS.groups}")
    from ddi_tf.core.config import ConfigError
    from ddi_tf.core.costs import CostError
    from ddi_tf.data import DataError
    from ddi_tf.training import strategy, trainer
    from ddi_tf.training.workdir import ResumeError

    strategy.split_cpu(FLAGS.cpu_devices)
    try:
        model_cfg = ddi_flags.model_config_from_flags()
        train_cfg = ddi_flags.train_config_from_flags()
        os.makedirs(workdir, exist_ok=True)
        logging.info("work directory: %s", workdir)
        with open(rundir.path(workdir, rundir.FLAGFILE), "w") as f:
            f.write(FLAGS.flags_into_string())
        handler = pylogging.FileHandler(rundir.path(workdir, rundir.LOG))
        handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.get_absl_logger().addHandler(handler)
        report = trainer.train_and_evaluate(model_cfg, train_cfg, workdir)
    except (ConfigError, CostError, DataError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    summary = {k: report[k] for k in ("full_macs", "backbone_macs")}
    summary["exits_all_full"] = [round(r["accuracy"], 4) for r in report["exits_all_full"]]
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
