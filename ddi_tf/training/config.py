"""The training settings (``TrainConfig``, the ``train`` section of a run's ``config.json``) and the names
of their choices. Each setting is declared once (``ddi_tf.core.settings``); the flags are made from them."""

from __future__ import annotations

import dataclasses

from ddi_tf import data as data_lib
from ddi_tf.core.costs import UNITS
from ddi_tf.core.settings import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, UNIT, Range, check_fields, setting

STAGES = ("stage1", "stage2", "stage3", "rl", "qat")


FLOAT_STAGES = STAGES[:-1]


LR_SCOPES = ("stage", "run")


WIDTH_SAMPLINGS = ("random", "sandwich")


COST_LOSSES = ("sign", "squared", "dual")


SCHEDULES = ("cosine", "step")


DATASETS = ("cifar10", "cifar100", "synthetic")


STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


PRECISIONS = ("float32", "mixed_bfloat16")


def _steps(default: int, help: str) -> int:
    return setting(default, help, valid=NON_NEGATIVE)


def _rate(default: float, help: str) -> float:
    return setting(default, help, valid=POSITIVE)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings: what a run's ``config.json`` ``train`` section holds.

    Each field's meaning, valid values and default are declared once, below; the flags of ``python -m
    ddi_tf.train`` are made from them (``--help`` shows the same text), and the values are checked when a
    config is built, whether from flags, from a run directory or from code.
    """

    # --- data ---
    dataset: str = setting("cifar10", "Data set.", choices=DATASETS)
    data_dir: str | None = setting(None, "CIFAR folder or archive (pickle or image-folder layout, or .tar.gz).")
    cache_dir: str | None = setting(None, "Where decoded arrays are cached (default: next to the data).")
    val_size: int = _steps(5000, "Training images held out for threshold calibration.")
    synthetic_train: int = setting(2048, "Synthetic data set: training images.", valid=AT_LEAST_ONE)
    synthetic_test: int = setting(512, "Synthetic data set: test images.", valid=AT_LEAST_ONE)
    # --- schedule ---
    seed: int = setting(0, "Seed for data order, augmentation and initialisation.")
    batch_size: int = setting(128, "Global batch size.", valid=AT_LEAST_ONE)
    stage1_steps: int = _steps(1000, "Stage 1: backbone + exits, gates forced full.")
    stage2_steps: int = _steps(0, "Stage 2: gates only, backbone frozen.")
    stage3_steps: int = _steps(0, "Stage 3: joint fine-tuning with the cost term.")
    rl_steps: int = _steps(0, "Optional REINFORCE stage for the gates (SkipNet hybrid RL).")
    qat_steps: int = _steps(0, "Quantization-aware fine-tuning steps (tfmot) after the float stages.")
    lr: float = _rate(0.1, "Stage 1 peak learning rate.")
    gate_lr: float = _rate(0.01, "Stage 2 learning rate.")
    finetune_lr: float = _rate(0.01, "Stage 3 peak learning rate.")
    rl_lr: float = _rate(0.001, "REINFORCE stage learning rate.")
    qat_lr: float = _rate(0.001, "QAT stage peak learning rate.")
    schedule: str = setting("cosine", "Learning-rate schedule within each stage.", choices=SCHEDULES)
    warmup_steps: int = _steps(200, "Linear warm-up steps at the start of stage 1.")
    momentum: float = setting(0.9, "SGD momentum.", valid=UNIT)
    nesterov: bool = setting(False, "Nesterov momentum.")
    label_smoothing: float = setting(0.0, "Label smoothing of every exit's cross-entropy.", valid=UNIT)
    lr_scope: str = setting("stage", "stage: one schedule per stage, with its own peak (lr, gate_lr, finetune_lr, "
                            "rl_lr); run: one schedule over all float stages, peak --lr, decaying to 0 at their end "
                            "(no restart). QAT keeps its own.", choices=LR_SCOPES)
    ema_decay: float = setting(0.0, "Decay of the exponential moving average of the weights, which replaces them "
                               "after the float stages (0: none); use with --bn_reestimate_batches.", valid=UNIT)
    bn_reestimate_batches: int = _steps(
        0, "After the float stages, re-estimate every batch norm's statistics on this many batches of 200 "
        "training images (on the learned path when gates were trained); 0: keep the running averages of training.")
    width_sampling: str = setting(
        "random", "random: stage 1 trains widths by per-sample random options (--random_width_prob); sandwich: "
        "each step trains the full path, the narrowest and a random one, and stages 2-3 the full path beside the "
        "learned one.", choices=WIDTH_SAMPLINGS)
    distill_weight: float = setting(0.0, "Weight of the distillation from the full path's last exit into every "
                                    "other exit and path (KL at --distill_temperature, T^2-scaled).",
                                    valid=NON_NEGATIVE)
    distill_temperature: float = _rate(4.0, "Distillation temperature.")
    exit_weights: tuple[float, ...] = setting((), "Loss weight of each exit (default: all 1).", valid=NON_NEGATIVE)
    random_width_prob: float = setting(
        0.0, "Stage 1: per block and sample, the probability of a random option instead of full (trains every "
        "width and its batch norm; 0 = gates forced full).", valid=Range(0, 1))
    cost: str = setting("macs", "Cost the gates are trained against.", choices=UNITS)
    latency_table: str | None = setting(None, "latency.json from `python -m ddi_runtime profile` (--cost=latency).")
    target_cost: float = setting(0.5, "Target mean executed cost as a fraction of the full cost.", valid=FRACTION)
    cost_weight: float = setting(1.0, "Weight of the cost term.", valid=NON_NEGATIVE)
    cost_loss: str = setting(
        "sign", "Cost term: sign (fractional skipping's sign(ratio - target) * ratio), squared ((ratio - "
        "target)^2), dual (squared + a multiplier learned by dual ascent, which reaches the target).",
        choices=COST_LOSSES)
    cost_dual_lr: float = setting(0.01, "Step size of the cost multiplier (--cost_loss=dual).", valid=NON_NEGATIVE)
    calibrate_cost: bool = setting(
        False, "After the float stages, tilt every gate's logits by one number (delta * k / G_b on the option of k "
        "groups) so that the learned path's mean cost on the --val_size held-out training images equals "
        "--target_cost; the gates' output bias carries it into QAT and the int8 export.")
    rl_cost_weight: float = setting(0.5, "REINFORCE reward: -CE - rl_cost_weight * cost ratio.", valid=NON_NEGATIVE)
    gate_margin: float = setting(0.0, "Weight of the gate decision-margin hinge (stages 2, 3 and QAT): keeps "
                                 "decisions away from ties that int8 rounding would flip.", valid=NON_NEGATIVE)
    gate_margin_target: float = _rate(0.25, "Wanted gap between a gate's two best logits, in units of the spread "
                                      "of its logits over the batch.")
    mixed_precision: str = setting(
        "float32", "Compute precision of the float stages: mixed_bfloat16 computes convolutions and dense layers in "
        "bfloat16 (weights, batch-norm statistics, losses and costs stay float32/float64; 1.25-1.7x faster on a CPU "
        "with AVX512-BF16). The weights are float32 either way: evaluation, QAT and the export run in float32 (QAT "
        "in a second command, resuming the finished run with --mixed_precision=float32 --qat_steps=N).",
        choices=PRECISIONS)
    init_from: str | None = setting(None, "Start a new run from another run's trained weights (every layer with the "
                                    "same name and shapes), e.g. its stage-1 backbone with --stage1_steps=0.")
    # --- logging / evaluation ---
    log_every: int = setting(50, "Steps between TensorBoard/log summaries.", valid=AT_LEAST_ONE)
    checkpoint_every: int = setting(500, "Steps between checkpoints.", valid=AT_LEAST_ONE)
    eval_batch_size: int = setting(500, "Batch size of the evaluations.", valid=AT_LEAST_ONE)
    budget_fractions: tuple[float, ...] = setting((0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
                                                  "Budgets (fractions of the full cost) of the evaluation sweep.",
                                                  valid=FRACTION)
    target_fractions: tuple[float, ...] = setting((0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
                                                  "Mean-cost targets (fractions of the full cost) of the threshold "
                                                  "sweep.", valid=FRACTION)
    eval_limit: int = _steps(0, "Evaluate on at most this many test images (0: all).")
    strategy: str = setting("default", "tf.distribute strategy.", choices=STRATEGIES)
    tpu: str | None = setting(None, "TPU address (--strategy=tpu).")
    cpu_devices: int = _steps(0, "Split the CPU into this many logical devices (testing mirrored).")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def float_steps(self) -> int:
        """Steps of the float stages (all but QAT)."""
        return self.total_steps - self.qat_steps

    def stage_steps(self) -> list[tuple[str, int]]:
        """(stage name, steps) in order."""
        steps = (self.stage1_steps, self.stage2_steps, self.stage3_steps, self.rl_steps, self.qat_steps)
        return list(zip(STAGES, steps, strict=True))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of the ``train`` section of ``config.json`` (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of the data set (CIFAR-10's for synthetic data)."""
        return data_lib.normalization_for(self.dataset if self.dataset != "synthetic" else "cifar10")

    @property
    def total_steps(self) -> int:
        """Steps over all stages."""
        return sum(n for _, n in self.stage_steps())
