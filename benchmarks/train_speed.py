"""Training throughput of the static backbone and of the DDI model, measured side by side in one run.

    python benchmarks/train_speed.py --depth=20 --batch_size=128 --steps=30 --rounds=3 [--json=out.json]

Both models are trained with the project's own training step (stage 1 for the static backbone; stage 3,
learned gates with the cost term, for the DDI model) on a fixed batch; the rounds alternate between the
two models so that machine noise hits both alike. Reports images/s and the ratio DDI / static.
This is a benchmark, not a test.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import ddi_tf  # noqa: E402,F401
from ddi_tf.config import ModelConfig, resolve_exits  # noqa: E402
from ddi_tf.trainer import TrainConfig, _Trainer  # noqa: E402

flags.DEFINE_enum("backbone", "resnet", ["resnet", "densenet"], "Backbone.")
flags.DEFINE_integer("depth", 20, "Depth.")
flags.DEFINE_integer("groups", 4, "Channel groups of the DDI model.")
flags.DEFINE_enum("gate_type", "ff", ["ff", "rnn"], "Gate type of the DDI model.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 30, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
flags.DEFINE_string("json", None, "Write the result here.")
FLAGS = flags.FLAGS


def _trainer(cfg: ModelConfig, stage: str, workdir: str):
    tcfg = TrainConfig(dataset="synthetic", batch_size=FLAGS.batch_size, stage1_steps=10**6, stage3_steps=10**6)
    t = _Trainer(cfg, tcfg, workdir, tf.distribute.get_strategy())
    t.configure_stage(stage)
    return t, t.make_step(stage, 0, 10**6)


def main(argv):
    del argv
    per_stage = (FLAGS.depth - 2) // 6 if FLAGS.backbone == "resnet" else (FLAGS.depth - 4) // 6
    exits = resolve_exits(3 * per_stage, per_stage, 0, True)
    ddi_cfg = ModelConfig(backbone=FLAGS.backbone, depth=FLAGS.depth, groups=FLAGS.groups,
                          gate_type=FLAGS.gate_type, exits=exits)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(FLAGS.batch_size, 32, 32, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, FLAGS.batch_size).astype(np.int32))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg, stage in (("static", dataclasses.replace(ddi_cfg, gate_type="none", exits=()), "stage1"),
                                 ("static_exits", dataclasses.replace(ddi_cfg, gate_type="none"), "stage1"),
                                 ("ddi", ddi_cfg, "stage3")):
            trainer, step = _trainer(cfg, stage, f"{tmp}/{name}")
            for _ in range(3):  # trace and warm up
                step(x, y)
            runs[name] = (step, [])
        for _ in range(FLAGS.rounds):
            for _name, (step, times) in runs.items():
                t0 = time.perf_counter()
                for _ in range(FLAGS.steps):
                    m = step(x, y)
                float(m["loss"])
                times.append(time.perf_counter() - t0)
    ips = {k: FLAGS.steps * FLAGS.batch_size / float(np.median(v)) for k, (_, v) in runs.items()}
    result = {"backbone": FLAGS.backbone, "depth": FLAGS.depth, "groups": FLAGS.groups, "gate_type": FLAGS.gate_type,
              "batch_size": FLAGS.batch_size, "images_per_second": ips,
              "ddi_over_static": ips["ddi"] / ips["static"]}
    print(json.dumps(result, indent=2))
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
