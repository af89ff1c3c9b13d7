"""Model configuration: one frozen dataclass, validated when it is built.

Every invalid combination fails here, before any layer exists, with a message that lists what is valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ddi_tf.core import names
from ddi_tf.core.settings import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, Range, check_fields, setting

BACKBONES = ("resnet", "densenet")
GATE_TYPES = ("ff", "rnn", "none")
ESTIMATORS = ("st", "gumbel")


class ConfigError(ValueError):
    """An invalid model configuration."""


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Configuration of a DDI network: what a run's ``config.json`` ``model`` section holds.

    Each field's meaning, valid values and default are declared once, below, with ``setting``; the flags of
    ``python -m ddi_tf.train`` are made from them (``--help`` shows the same text). Two fields are spelled
    differently on the command line: ``num_classes`` (``--num_classes=0`` takes it from the data set) and
    ``exits`` (``--exits``, or ``--exit_every`` and ``--exit_stage_ends``).
    """

    backbone: str = setting("resnet", "Backbone family: CIFAR ResNet (depth 6n+2) or DenseNet-BC (depth 6n+4).",
                            choices=BACKBONES)
    depth: int = setting(20, "Depth: 6n+2 for ResNet (20, 38, 74, 110), 6n+4 for DenseNet-BC (40, 100).")
    base_width: int = setting(16, "ResNet: channels of the first stage (the second has 2x, the third 4x); 8 gives "
                              "a half-width network at about a quarter of the MACs.", valid=AT_LEAST_ONE)
    num_classes: int = setting(10, "Classes.", flag=False)
    groups: int = setting(4, "Channel groups G per gated block (options: skip, first 1..G groups); G = 1 is "
                          "plain layer skipping.")
    min_group_channels: int = setting(
        0, "Fewer, wider channel groups where G would give groups narrower than this: G_b = max(1, min(G, "
        "width // this)); 16 matches LiteRT's int8 kernels, whose time steps every 16 output channels (ResNet-20, "
        "G = 4: one group in stage 1, two in stage 2, four in stage 3); 0: G groups in every block.",
        valid=NON_NEGATIVE)
    gate_type: str = setting("ff", "Gate: ff (pooled features -> dense -> ReLU -> dense), rnn (one LSTM shared by "
                             "all gates), none (the static backbone: every block always runs in full).",
                             choices=GATE_TYPES)
    gate_hidden: int = setting(16, "Hidden units of the ff gate / LSTM state size of the rnn gate.",
                               valid=AT_LEAST_ONE)
    gate_proj: int = setting(16, "Per-block projection size feeding the shared LSTM (rnn gates).",
                             valid=AT_LEAST_ONE)
    gate_init_full: float = setting(
        0.0, "Initial bias of each gate's full option (others 0): > 0 starts the gates running every block in "
        "full, and the cost term teaches them what to drop.", valid=Range(-20, 20))
    estimator: str = setting("st", "Gate gradient: straight-through (argmax one-hot forward, softmax backward) "
                             "or Gumbel-softmax (hard one-hot forward, while training only).", choices=ESTIMATORS)
    temperature: float = setting(1.0, "Gumbel-softmax temperature.", valid=POSITIVE)
    exits: tuple[int, ...] = setting((), "Block counts after which an exit classifier sits (1-based, increasing, "
                                     "each smaller than the number of blocks); the final exit is implicit.",
                                     flag=False)
    exit_width: int = setting(64, "Channels of an intermediate exit head's 1x1 conv.", valid=AT_LEAST_ONE)
    growth_rate: int = setting(12, "DenseNet growth rate.", valid=AT_LEAST_ONE)
    compression: float = setting(0.5, "DenseNet-BC transition compression.", valid=FRACTION)
    weight_decay: float = setting(1e-4, "Weight decay (L2 on conv and dense kernels).", valid=NON_NEGATIVE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exits", tuple(int(e) for e in self.exits))
        self.validate()

    # --- derived structure -------------------------------------------------------------------------
    @property
    def gated(self) -> bool:
        """Whether blocks have gates (False for the static backbone)."""
        return self.gate_type != "none"

    @property
    def blocks_per_stage(self) -> int:
        """Blocks (ResNet) or dense layers (DenseNet) in each of the three resolution stages."""
        if self.backbone == "resnet":
            return (self.depth - 2) // 6
        return (self.depth - 4) // 6

    @property
    def num_blocks(self) -> int:
        """Total number of gated units (residual blocks or dense layers)."""
        return 3 * self.blocks_per_stage

    @property
    def exit_positions(self) -> tuple[int, ...]:
        """Block counts after which an exit sits, the final exit included."""
        return (*self.exits, self.num_blocks)

    @property
    def stage_widths(self) -> tuple[int, int, int]:
        """ResNet: the channels of the three resolution stages."""
        return self.base_width, 2 * self.base_width, 4 * self.base_width

    def block_width(self, b: int) -> int:
        """The gated inner width of block b (what its channel groups split)."""
        if self.backbone == "resnet":
            return self.stage_widths[b // self.blocks_per_stage]
        return 4 * self.growth_rate

    def width_groups(self, width: int) -> int:
        """Channel groups of a gated inner width: G, or fewer when ``min_group_channels`` asks for wider groups."""
        if self.min_group_channels <= 0:
            return self.groups
        return max(1, min(self.groups, width // self.min_group_channels))

    def block_groups(self, b: int) -> int:
        """G_b, the channel groups of block b (its options are skip and w1..w{G_b})."""
        return self.width_groups(self.block_width(b))

    def option_names(self, b: int = 0) -> list[str]:
        """Names of block b's options, cheapest first: skip, w1..w{G_b} (the last is the full block)."""
        return [names.SKIP] + [names.width(k) for k in range(1, self.block_groups(b) + 1)]

    def validate(self) -> None:
        """Raises ConfigError with a message listing what is valid."""
        check_fields(self, ConfigError)  # each field's own choices and range
        if self.backbone == "resnet":
            if self.depth < 8 or (self.depth - 2) % 6:
                valid = ", ".join(str(6 * n + 2) for n in (1, 2, 3, 4, 5, 6, 9, 12, 18))
                raise ConfigError(
                    f"ResNet depth must be 6n+2 with n >= 1 (for example {valid}; the paper uses 38, 74, "
                    f"110), got {self.depth}"
                )
        elif self.depth < 10 or (self.depth - 4) % 6:
            raise ConfigError(
                "DenseNet-BC depth must be 6n+4 with n >= 1 (for example 40, 52, 100, 190), "
                f"got {self.depth}"
            )
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.gate_type == "rnn" and len({self.width_groups(w) for w in self.gated_widths()}) > 1:
            raise ConfigError("rnn gates share one output layer, so every block needs the same number of options; "
                              "use ff gates with min_group_channels, or min_group_channels=0")
        for width in self.gated_widths():
            g = self.width_groups(width) if self.groups >= 1 else self.groups
            if g != self.groups and (width % g or self.groups % g):
                raise ConfigError(
                    f"min_group_channels={self.min_group_channels} gives {g} groups for the inner width {width}, "
                    f"which must divide both {width} and groups={self.groups}; choose another minimum")
            if self.groups < 1 or width % self.groups:
                valid = [d for d in _divisors(min(self.gated_widths())) if all(
                    w % d == 0 for w in self.gated_widths())]
                raise ConfigError(
                    f"groups={self.groups} does not divide the gated inner width {width} of this "
                    f"{self.backbone}; valid channel-group counts: {valid}"
                )
        n = self.num_blocks
        if list(self.exits) != sorted(set(self.exits)) or any(not 1 <= e < n for e in self.exits):
            raise ConfigError(
                f"exits must be increasing block counts in 1..{n - 1} (the final exit after block {n} is "
                f"always present), got {list(self.exits)}"
            )

    def gated_widths(self) -> list[int]:
        """Inner channel widths that are split into channel groups."""
        if self.backbone == "resnet":
            return list(self.stage_widths)
        return [4 * self.growth_rate]

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (exits as a list)."""
        d = dataclasses.asdict(self)
        d["exits"] = list(self.exits)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


def resolve_exits(num_blocks: int, blocks_per_stage: int, exit_every: int, stage_ends: bool,
                  explicit: Sequence[int] = ()) -> tuple[int, ...]:
    """Computes exit positions from the usual recipes.

    Args:
      num_blocks: total gated blocks.
      blocks_per_stage: blocks per resolution stage.
      exit_every: an exit after every ``exit_every`` blocks (0 for none).
      stage_ends: an exit at the end of each resolution stage.
      explicit: explicit positions (used alone when given).

    Returns:
      Sorted positions in 1..num_blocks-1 (the final exit is implicit).
    """
    if explicit:
        return tuple(int(e) for e in explicit)
    pos: set[int] = set()
    if exit_every < 0:
        raise ConfigError(f"exit_every must be >= 0, got {exit_every}")
    if exit_every:
        pos.update(range(exit_every, num_blocks, exit_every))
    if stage_ends:
        pos.update(range(blocks_per_stage, num_blocks, blocks_per_stage))
    return tuple(sorted(p for p in pos if 1 <= p < num_blocks))
