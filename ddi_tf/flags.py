"""Every command-line flag of the training, summary and export commands, defined and validated here.

Nothing else in the library reads ``FLAGS``: entry points call ``model_config_from_flags`` and
``train_config_from_flags`` and pass plain dataclasses down.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from ddi_tf.core.config import BACKBONES, ESTIMATORS, GATE_TYPES, ModelConfig, resolve_exits
from ddi_tf.core.costs import UNITS
from ddi_tf.training.config import COST_LOSSES, LR_SCOPES, WIDTH_SAMPLINGS, TrainConfig

FLAGS = flags.FLAGS
_MODEL, _TRAIN = ModelConfig(), TrainConfig()  # every default is the dataclass field's, written once
_DEFINED = False


def define_flags() -> None:
    """Defines all flags (idempotent)."""
    global _DEFINED
    if _DEFINED:
        return
    _DEFINED = True
    # --- model ---
    flags.DEFINE_enum("backbone", _MODEL.backbone, list(BACKBONES), "Backbone family.")
    flags.DEFINE_integer("depth", _MODEL.depth,
                         "Depth: 6n+2 for ResNet (20, 38, 74, 110), 6n+4 for DenseNet-BC (40, 100).")
    flags.DEFINE_integer("num_classes", 0, "Classes; 0 = from the data set (10 for CIFAR-10, 100 for CIFAR-100).")
    flags.DEFINE_integer("groups", _MODEL.groups,
                         "Channel groups G per gated block (options: skip, first 1..G groups).")
    flags.DEFINE_integer("min_group_channels", _MODEL.min_group_channels,
                         "Fewer, wider channel groups where G would give groups narrower "
                         "than this (16 matches LiteRT's int8 kernels, whose time steps every 16 output channels); "
                         "0: G groups in every block.")
    flags.DEFINE_enum("gate_type", _MODEL.gate_type, list(GATE_TYPES),
                      "Gate: ff, rnn (shared LSTM), none (static backbone).")
    flags.DEFINE_integer("gate_hidden", _MODEL.gate_hidden,
                         "Hidden units of the ff gate / LSTM state size of the rnn gate.")
    flags.DEFINE_integer("gate_proj", _MODEL.gate_proj,
                         "Per-block projection size feeding the shared LSTM (rnn gates).")
    flags.DEFINE_float("gate_init_full", _MODEL.gate_init_full,
                       "Initial bias of each gate's full option (others 0): > 0 starts the "
                       "gates running every block in full, and the cost term teaches them what to drop.")
    flags.DEFINE_enum("estimator", _MODEL.estimator, list(ESTIMATORS),
                      "Gate gradient: straight-through or Gumbel-softmax.")
    flags.DEFINE_float("temperature", _MODEL.temperature, "Gumbel-softmax temperature.")
    flags.DEFINE_list("exits", [], "Explicit exit positions (block counts); overrides exit_every/exit_stage_ends.")
    flags.DEFINE_integer("exit_every", 0, "An exit after every k blocks (0: none).")
    flags.DEFINE_boolean("exit_stage_ends", True, "An exit at the end of each resolution stage.")
    flags.DEFINE_integer("exit_width", _MODEL.exit_width, "Channels of an intermediate exit head's 1x1 conv.")
    flags.DEFINE_integer("growth_rate", _MODEL.growth_rate, "DenseNet growth rate.")
    flags.DEFINE_float("weight_decay", _MODEL.weight_decay, "Weight decay (L2 on conv/dense kernels).")
    # --- data ---
    flags.DEFINE_enum("dataset", _TRAIN.dataset, ["cifar10", "cifar100", "synthetic"], "Data set.")
    flags.DEFINE_string("data_dir", _TRAIN.data_dir,
                        "CIFAR folder or archive (pickle or image-folder layout, or .tar.gz).")
    flags.DEFINE_string("cache_dir", _TRAIN.cache_dir, "Where decoded arrays are cached (default: next to the data).")
    flags.DEFINE_integer("val_size", _TRAIN.val_size, "Training images held out for threshold calibration.")
    flags.DEFINE_integer("synthetic_train", _TRAIN.synthetic_train, "Synthetic data set: training images.")
    flags.DEFINE_integer("synthetic_test", _TRAIN.synthetic_test, "Synthetic data set: test images.")
    # --- schedule ---
    flags.DEFINE_string("workdir", None, "Run directory: flags, checkpoints, TensorBoard logs, report "
                        "(default: runs/<dataset>_<backbone><depth>_<gate_type>_g<groups>).")
    flags.DEFINE_integer("seed", _TRAIN.seed, "Seed for data order, augmentation and initialisation.")
    flags.DEFINE_integer("batch_size", _TRAIN.batch_size, "Global batch size.")
    flags.DEFINE_integer("stage1_steps", _TRAIN.stage1_steps, "Stage 1: backbone + exits, gates forced full.")
    flags.DEFINE_integer("stage2_steps", _TRAIN.stage2_steps, "Stage 2: gates only, backbone frozen.")
    flags.DEFINE_integer("stage3_steps", _TRAIN.stage3_steps, "Stage 3: joint fine-tuning with the cost term.")
    flags.DEFINE_integer("rl_steps", _TRAIN.rl_steps, "Optional REINFORCE stage for the gates (SkipNet hybrid RL).")
    flags.DEFINE_integer("qat_steps", _TRAIN.qat_steps,
                         "Quantization-aware fine-tuning steps (tfmot) after the float stages.")
    flags.DEFINE_float("lr", _TRAIN.lr, "Stage 1 peak learning rate.")
    flags.DEFINE_float("gate_lr", _TRAIN.gate_lr, "Stage 2 learning rate.")
    flags.DEFINE_float("finetune_lr", _TRAIN.finetune_lr, "Stage 3 peak learning rate.")
    flags.DEFINE_float("rl_lr", _TRAIN.rl_lr, "REINFORCE stage learning rate.")
    flags.DEFINE_float("qat_lr", _TRAIN.qat_lr, "QAT stage peak learning rate.")
    flags.DEFINE_enum("schedule", _TRAIN.schedule, ["cosine", "step"], "Learning-rate schedule within each stage.")
    flags.DEFINE_integer("warmup_steps", _TRAIN.warmup_steps, "Linear warm-up steps at the start of stage 1.")
    flags.DEFINE_float("momentum", _TRAIN.momentum, "SGD momentum.")
    flags.DEFINE_boolean("nesterov", _TRAIN.nesterov, "Nesterov momentum.")
    flags.DEFINE_float("label_smoothing", _TRAIN.label_smoothing,
                       "Label smoothing of every exit's cross-entropy, in [0, 1).")
    flags.DEFINE_enum("lr_scope", _TRAIN.lr_scope, list(LR_SCOPES), "stage: one schedule per stage, with its own peak "
                      "(lr, gate_lr, finetune_lr, rl_lr); run: one schedule over all float stages, peak --lr, "
                      "decaying to 0 at their end (no restart). QAT keeps its own.")
    flags.DEFINE_float("ema_decay", _TRAIN.ema_decay,
                       "Decay of the exponential moving average of the weights, which replaces "
                       "them after the float stages (0: none); use with --bn_reestimate_batches.")
    flags.DEFINE_integer("bn_reestimate_batches", _TRAIN.bn_reestimate_batches,
                         "After the float stages, re-estimate every batch norm's "
                         "statistics on this many batches of 200 training images (on the learned path when gates "
                         "were trained); 0: keep the running averages of training.")
    flags.DEFINE_enum("width_sampling", _TRAIN.width_sampling, list(WIDTH_SAMPLINGS),
                      "random: stage 1 trains widths by "
                      "per-sample random options (--random_width_prob); sandwich: each step trains the full path, "
                      "the narrowest and a random one, and stages 2-3 the full path beside the learned one.")
    flags.DEFINE_float("distill_weight", _TRAIN.distill_weight,
                       "Weight of the distillation from the full path's last exit into every "
                       "other exit and path (KL at --distill_temperature, T^2-scaled).")
    flags.DEFINE_float("distill_temperature", _TRAIN.distill_temperature, "Distillation temperature.")
    flags.DEFINE_list("exit_weights", [], "Loss weight of each exit (default: all 1).")
    flags.DEFINE_float("random_width_prob", _TRAIN.random_width_prob,
                       "Stage 1: per block and sample, the probability of a random option instead of full "
                       "(trains every width and its batch norm; 0 = gates forced full).")
    flags.DEFINE_enum("cost", _TRAIN.cost, list(UNITS), "Cost the gates are trained against.")
    flags.DEFINE_string("latency_table", _TRAIN.latency_table,
                        "latency.json from `python -m ddi_runtime profile` (--cost=latency).")
    flags.DEFINE_float("target_cost", _TRAIN.target_cost, "Target mean executed cost as a fraction of the full cost.")
    flags.DEFINE_float("cost_weight", _TRAIN.cost_weight, "Weight of the cost term.")
    flags.DEFINE_enum("cost_loss", _TRAIN.cost_loss, list(COST_LOSSES), "Cost term: sign (fractional skipping's "
                      "sign(ratio - target) * ratio), squared ((ratio - target)^2), dual (squared + a multiplier "
                      "learned by dual ascent, which reaches the target).")
    flags.DEFINE_float("cost_dual_lr", _TRAIN.cost_dual_lr, "Step size of the cost multiplier (--cost_loss=dual).")
    flags.DEFINE_float("rl_cost_weight", _TRAIN.rl_cost_weight, "REINFORCE reward: -CE - rl_cost_weight * cost ratio.")
    flags.DEFINE_float("gate_margin", _TRAIN.gate_margin,
                       "Weight of the gate decision-margin hinge (stages 2, 3 and QAT): keeps "
                       "decisions away from ties that int8 rounding would flip.")
    flags.DEFINE_float("gate_margin_target", _TRAIN.gate_margin_target,
                       "Wanted gap between a gate's two best logits, in units of the "
                       "spread of its logits over the batch.")
    flags.DEFINE_string("init_from", _TRAIN.init_from,
                        "Start a new run from another run's trained weights (every layer with "
                        "the same name and shapes), e.g. its stage-1 backbone with --stage1_steps=0.")
    # --- logging / evaluation ---
    flags.DEFINE_integer("log_every", _TRAIN.log_every, "Steps between TensorBoard/log summaries.")
    flags.DEFINE_integer("checkpoint_every", _TRAIN.checkpoint_every, "Steps between checkpoints.")
    flags.DEFINE_integer("eval_batch_size", _TRAIN.eval_batch_size, "Batch size of the evaluations.")
    flags.DEFINE_list("budget_fractions", ["0.15", "0.2", "0.25", "0.3", "0.4", "0.5", "0.6", "0.8", "1.0"],
                      "Budgets (fractions of the full cost) of the evaluation sweep.")
    flags.DEFINE_list("target_fractions", ["0.15", "0.2", "0.25", "0.3", "0.4", "0.5", "0.6", "0.8", "1.0"],
                      "Mean-cost targets (fractions of the full cost) of the threshold sweep.")
    flags.DEFINE_integer("eval_limit", _TRAIN.eval_limit, "Evaluate on at most this many test images (0: all).")
    flags.DEFINE_enum("strategy", _TRAIN.strategy, ["default", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy.")
    flags.DEFINE_string("tpu", _TRAIN.tpu, "TPU address (--strategy=tpu).")
    flags.DEFINE_integer("cpu_devices", _TRAIN.cpu_devices,
                         "Split the CPU into this many logical devices (testing mirrored).")

    flags.register_validator("batch_size", lambda v: v > 0, "--batch_size must be > 0")
    for name in ("stage1_steps", "stage2_steps", "stage3_steps", "rl_steps", "qat_steps", "warmup_steps", "val_size",
                 "eval_limit", "cpu_devices"):
        flags.register_validator(name, lambda v: v >= 0, f"--{name} must be >= 0")
    for name in ("lr", "gate_lr", "finetune_lr", "rl_lr", "qat_lr"):
        flags.register_validator(name, lambda v: v > 0, f"--{name} must be > 0")
    flags.register_validator("gate_margin", lambda v: v >= 0, "--gate_margin must be >= 0")
    flags.register_validator("label_smoothing", lambda v: 0 <= v < 1, "--label_smoothing must be in [0, 1)")
    flags.register_validator("ema_decay", lambda v: 0 <= v < 1, "--ema_decay must be in [0, 1)")
    flags.register_validator("bn_reestimate_batches", lambda v: v >= 0, "--bn_reestimate_batches must be >= 0")
    flags.register_validator("distill_weight", lambda v: v >= 0, "--distill_weight must be >= 0")
    flags.register_validator("distill_temperature", lambda v: v > 0, "--distill_temperature must be > 0")
    flags.register_validator("cost_dual_lr", lambda v: v >= 0, "--cost_dual_lr must be >= 0")
    flags.register_validator("gate_init_full", lambda v: -20 <= v <= 20, "--gate_init_full must be in [-20, 20]")
    flags.register_validator("gate_margin_target", lambda v: v > 0, "--gate_margin_target must be > 0")
    flags.register_validator("momentum", lambda v: 0 <= v < 1, "--momentum must be in [0, 1)")
    flags.register_validator("target_cost", lambda v: 0 < v <= 1, "--target_cost must be in (0, 1]")
    flags.register_validator("random_width_prob", lambda v: 0 <= v <= 1, "--random_width_prob must be in [0, 1]")
    flags.register_validator("log_every", lambda v: v > 0, "--log_every must be > 0")
    flags.register_validator("checkpoint_every", lambda v: v > 0, "--checkpoint_every must be > 0")
    flags.register_validator("exits", _all_ints, "--exits must be a list of integers")
    flags.register_validator("exit_weights", _all_floats, "--exit_weights must be a list of numbers")
    flags.register_validator("budget_fractions", _fractions, "--budget_fractions must be numbers in (0, 1]")
    flags.register_validator("target_fractions", _fractions, "--target_fractions must be numbers in (0, 1]")


def _parses(values: list[str], kind: type) -> bool:
    try:
        [kind(v) for v in values]
    except ValueError:
        return False
    return True


def _all_ints(values: list[str]) -> bool:
    return _parses(values, int)


def _all_floats(values: list[str]) -> bool:
    return _parses(values, float)


def _fractions(values: list[str]) -> bool:
    return _all_floats(values) and all(0 < float(v) <= 1 for v in values)


def model_config_from_flags(num_classes: int | None = None) -> ModelConfig:
    """The ModelConfig the flags describe (``num_classes`` fills in ``--num_classes=0``)."""
    f = FLAGS
    per_stage = (f.depth - 2) // 6 if f.backbone == "resnet" else (f.depth - 4) // 6
    exits = resolve_exits(3 * per_stage, per_stage, f.exit_every, f.exit_stage_ends, [int(e) for e in f.exits])
    classes = f.num_classes or num_classes or (100 if f.dataset == "cifar100" else 10)
    return ModelConfig(backbone=f.backbone, depth=f.depth, num_classes=classes, groups=f.groups,
                       min_group_channels=f.min_group_channels,
                       gate_type=f.gate_type, gate_hidden=f.gate_hidden, gate_proj=f.gate_proj,
                       gate_init_full=f.gate_init_full,
                       estimator=f.estimator, temperature=f.temperature, exits=exits, exit_width=f.exit_width,
                       growth_rate=f.growth_rate, weight_decay=f.weight_decay)


def train_config_from_flags() -> TrainConfig:
    """The TrainConfig the flags describe: every field from the flag of its name (lists become tuples of the
    field's element type; every list field of TrainConfig holds floats)."""
    values = {}
    for field in dataclasses.fields(TrainConfig):
        value = FLAGS[field.name].value
        default = getattr(_TRAIN, field.name)
        if isinstance(default, tuple):
            value = tuple((type(default[0]) if default else float)(v) for v in value)
        values[field.name] = value
    return TrainConfig(**values)
