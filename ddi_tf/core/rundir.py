"""The run directory's layout: the one place that names its files (docs/CONTRACTS.md describes each).

Pure Python, so every layer may use it: the training writes the directory (``ddi_tf.training.workdir`` checks
``config.json`` and restores the checkpoints), the export, parity and compare read it.
"""

from __future__ import annotations

import os

CONFIG = "config.json"  # {"version", "model", "train"}: written once, checked on every resume
FLAGFILE = "flags.txt"  # the command's flags, as a flagfile
LOG = "train.log"
CHECKPOINTS = "checkpoints"  # ckpt-<step>: model, optimizers, step, multiplier, weight average
QAT_CHECKPOINTS = "checkpoints_qat"
TENSORBOARD = "tb"
GATE_CALIBRATION = "gate_calibration.json"  # ddi_tf.training.calibrate's result (--calibrate_cost)
REPORT = "report.json"  # ddi_tf.evaluation.evaluate.evaluate_model's result
REPORT_PLOT = "report.png"


def path(workdir: str, name: str) -> str:
    """``workdir/name`` for one of this module's names."""
    return os.path.join(workdir, name)


def beside(report_path: str, name: str) -> str:
    """The file ``name`` of the run directory that holds ``report_path``."""
    return os.path.join(os.path.dirname(os.path.abspath(report_path)), name)
