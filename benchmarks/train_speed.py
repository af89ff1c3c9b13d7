"""Training throughput of the static backbone and of the DDI model's steps, side by side in one run.

    python benchmarks/train_speed.py --depth=20 --batch_size=128 --steps=20 --rounds=3 \
        [--variants=float32,mixed_bfloat16,xla,mixed_bfloat16+xla] [--json=out.json]

Every model is trained with the project's own training step on a fixed batch:
  static           stage 1 of the static ResNet (no exits, no gates)
  static_exits     stage 1 of the exits-only model (the anytime exits, no gates)
  ddi_s1_random    DDI stage 1 with per-sample random widths (--random_width_prob=0.25, the old recipe)
  ddi_s1_sandwich  DDI stage 1 by the sandwich rule with distillation (configs/cifar_cpu.flags)
  ddi_s3_learned   DDI stage 3, the learned path alone with the cost term
  ddi_s3_sandwich  DDI stage 3 with the full path beside the learned one and distillation (configs/cifar_cpu.flags)
under each variant: ``float32``; ``mixed_bfloat16`` (tf_keras mixed precision: bf16 compute, float32 weights;
this CPU has AVX512-BF16); ``xla`` (the step compiled with ``jit_compile``); ``mixed_bfloat16+xla``. The rounds
alternate over every (variant, model) so that machine noise hits all alike. Reports images/s, each model's
ratio to the static network and each variant's ratio to float32. This is a benchmark, not a test.
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
from ddi_tf.core.config import ModelConfig, resolve_exits  # noqa: E402
from ddi_tf.training.config import TrainConfig
from ddi_tf.training.trainer import _Trainer

# model -> (stage, gated, exits, training settings beyond the defaults)
_RECIPE = {"distill_weight": 1.0, "width_sampling": "sandwich", "cost_loss": "dual", "label_smoothing": 0.1}
MODELS = {
    "static": ("stage1", False, False, {}),
    "static_exits": ("stage1", False, True, {}),
    "ddi_s1_random": ("stage1", True, True, {"random_width_prob": 0.25}),
    "ddi_s1_sandwich": ("stage1", True, True, _RECIPE),
    "ddi_s3_learned": ("stage3", True, True, {"cost_loss": "dual"}),
    "ddi_s3_sandwich": ("stage3", True, True, _RECIPE),
}
VARIANTS = ("float32", "mixed_bfloat16", "xla", "mixed_bfloat16+xla")

flags.DEFINE_enum("backbone", "resnet", ["resnet", "densenet"], "Backbone.")
flags.DEFINE_integer("depth", 20, "Depth.")
flags.DEFINE_integer("groups", 4, "Channel groups of the DDI model.")
flags.DEFINE_enum("gate_type", "ff", ["ff", "rnn"], "Gate type of the DDI model.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
flags.DEFINE_list("models", list(MODELS), f"Models to time, of {', '.join(MODELS)}.")
flags.DEFINE_list("variants", list(VARIANTS), f"Variants to time, of {', '.join(VARIANTS)}.")
flags.DEFINE_string("json", None, "Write the result here.")
FLAGS = flags.FLAGS



def _trainer(cfg: ModelConfig, stage: str, settings: dict, variant: str, workdir: str):
    """A trainer of ``cfg`` and its compiled step for ``stage`` under ``variant`` (``--mixed_precision`` as training
    sets it)."""
    tcfg = TrainConfig(dataset="synthetic", batch_size=FLAGS.batch_size, stage1_steps=10**6, stage3_steps=10**6,
                       mixed_precision="mixed_bfloat16" if "bfloat16" in variant else "float32", **settings)
    t = _Trainer(cfg, tcfg, workdir, tf.distribute.get_strategy())
    t.configure_stage(stage)
    return t, t.make_step(stage, 0, 10**6, jit_compile="xla" in variant)


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.models) - set(MODELS)) + sorted(set(FLAGS.variants) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"unknown models or variants: {unknown}")
    per_stage = (FLAGS.depth - 2) // 6 if FLAGS.backbone == "resnet" else (FLAGS.depth - 4) // 6
    exits = resolve_exits(3 * per_stage, per_stage, 0, True)
    ddi_cfg = ModelConfig(backbone=FLAGS.backbone, depth=FLAGS.depth, groups=FLAGS.groups,
                          gate_type=FLAGS.gate_type, exits=exits)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(FLAGS.batch_size, 32, 32, 3)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, FLAGS.batch_size).astype(np.int32))
    runs, failed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in FLAGS.variants:
            for name in FLAGS.models:
                stage, gated, with_exits, settings = MODELS[name]
                cfg = dataclasses.replace(ddi_cfg, gate_type=ddi_cfg.gate_type if gated else "none",
                                          exits=exits if with_exits else ())
                key = f"{variant}/{name}"
                try:
                    _, step = _trainer(cfg, stage, settings, variant, f"{tmp}/{variant}_{name}")
                    t0 = time.perf_counter()
                    for _ in range(3):  # trace, compile and warm up
                        m = step(x, y)
                    float(m["loss"])
                except Exception as e:  # noqa: BLE001 -- a variant that does not compile is a result, not a crash
                    failed[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                    print(f"{key}: failed ({failed[key]})", flush=True)
                    continue
                print(f"{key}: ready ({time.perf_counter() - t0:.1f} s to trace and warm up)", flush=True)
                runs[key] = (step, [], float(m["loss"]))
        for r in range(FLAGS.rounds):
            for step, times, _ in runs.values():
                t0 = time.perf_counter()
                for _ in range(FLAGS.steps):
                    m = step(x, y)
                float(m["loss"])
                times.append(time.perf_counter() - t0)
            print(f"round {r + 1}/{FLAGS.rounds} done", flush=True)
    ips = {k: FLAGS.steps * FLAGS.batch_size / float(np.median(v)) for k, (_, v, _) in runs.items()}
    table = {}
    for key, value in ips.items():
        variant, name = key.split("/")
        row = {"images_per_second": round(value, 1)}
        if f"{variant}/static" in ips:
            row["over_static"] = round(value / ips[f"{variant}/static"], 3)
        if f"float32/{name}" in ips:
            row["over_float32"] = round(value / ips[f"float32/{name}"], 3)
        table.setdefault(variant, {})[name] = row
    result = {"backbone": FLAGS.backbone, "depth": FLAGS.depth, "groups": FLAGS.groups, "gate_type": FLAGS.gate_type,
              "batch_size": FLAGS.batch_size, "steps": FLAGS.steps, "rounds": FLAGS.rounds,
              "threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                          "inter": tf.config.threading.get_inter_op_parallelism_threads()},
              "images_per_second": table, "failed": failed}
    print(json.dumps(result, indent=2))
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
