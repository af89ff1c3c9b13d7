"""The training settings (``TrainConfig``, the ``train`` section of a run's ``config.json``) and the names
of their choices. Validated where they are defined (``ddi_tf.flags``)."""

from __future__ import annotations

import dataclasses

from ddi_tf import data as data_lib

STAGES = ("stage1", "stage2", "stage3", "rl", "qat")


FLOAT_STAGES = STAGES[:-1]


LR_SCOPES = ("stage", "run")


WIDTH_SAMPLINGS = ("random", "sandwich")


COST_LOSSES = ("sign", "squared", "dual")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings (see ``ddi_tf.flags`` for the meaning of each)."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    cache_dir: str | None = None
    val_size: int = 5000
    synthetic_train: int = 2048
    synthetic_test: int = 512
    seed: int = 0
    batch_size: int = 128
    stage1_steps: int = 1000
    stage2_steps: int = 0
    stage3_steps: int = 0
    rl_steps: int = 0
    qat_steps: int = 0
    lr: float = 0.1
    gate_lr: float = 0.01
    finetune_lr: float = 0.01
    rl_lr: float = 0.001
    qat_lr: float = 0.001
    schedule: str = "cosine"
    warmup_steps: int = 200
    momentum: float = 0.9
    nesterov: bool = False
    label_smoothing: float = 0.0
    lr_scope: str = "stage"
    ema_decay: float = 0.0
    bn_reestimate_batches: int = 0
    width_sampling: str = "random"
    distill_weight: float = 0.0
    distill_temperature: float = 4.0
    exit_weights: tuple[float, ...] = ()
    random_width_prob: float = 0.0
    cost: str = "macs"
    latency_table: str | None = None
    target_cost: float = 0.5
    cost_weight: float = 1.0
    cost_loss: str = "sign"
    cost_dual_lr: float = 0.01
    rl_cost_weight: float = 0.5
    gate_margin: float = 0.0
    gate_margin_target: float = 0.25
    init_from: str | None = None
    log_every: int = 50
    checkpoint_every: int = 500
    eval_batch_size: int = 500
    budget_fractions: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
    target_fractions: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
    eval_limit: int = 0
    strategy: str = "default"
    tpu: str | None = None
    cpu_devices: int = 0

    def __post_init__(self) -> None:
        for name, value, valid in (("lr_scope", self.lr_scope, LR_SCOPES),
                                   ("width_sampling", self.width_sampling, WIDTH_SAMPLINGS),
                                   ("cost_loss", self.cost_loss, COST_LOSSES)):
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no weight average), got {self.ema_decay}")
        if not self.distill_weight >= 0.0 or not self.distill_temperature > 0.0:
            raise ValueError("distill_weight must be >= 0 and distill_temperature > 0, got "
                             f"{self.distill_weight} and {self.distill_temperature}")
        if not self.cost_dual_lr >= 0.0 or self.bn_reestimate_batches < 0:
            raise ValueError("cost_dual_lr and bn_reestimate_batches must be >= 0")

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
