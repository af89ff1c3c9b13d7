"""The DDI network as a sequence of pieces, in pure Python: what runs, in which order, at what cost.

This is the single description of the network's structure that cost accounting, the budget policy,
the training cost term and the export all share. The Keras builder (``ddi_tf.model.build``) creates layers for
the same pieces, and a test checks that the MACs counted here equal those of the built layers.

Conventions (also in README):
- MACs count the multiply-accumulates of convolution and dense layers only. Batch norm after a conv is
  folded into it at deployment; residual adds, ReLU and pooling are elementwise and are counted by the
  energy model (as memory traffic and one add per element) but not as MACs. This reproduces the usual
  hand counts (ResNet-38 body: 83.3M MACs).
- Params are the deployed parameters: conv/dense weights plus a bias per output channel (folded BN).

Execution order: ``stem``, then for every block ``gate{b}`` (gated models) and ``block{b}``, with
``transition{t}`` pieces (DenseNet) and ``exit{j}`` pieces at their positions. The last piece is the final
exit.
"""

from __future__ import annotations

import dataclasses

from ddi_tf.core import names
from ddi_tf.core.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Cost of one layer of one option.

    Args:
      name: layer name (matches the Keras layer name where one exists).
      kind: ``conv``, ``dense`` (MACs), or ``eltwise`` / ``pool`` (no MACs, energy only).
      macs: multiply-accumulates.
      params: deployed parameters (weights + per-channel bias).
      in_elems: activation elements read.
      out_elems: activation elements written.
      out_channels: output channels of a conv or dense layer (0 for the others).
    """

    name: str
    kind: str
    macs: int
    params: int
    in_elems: int
    out_elems: int
    out_channels: int = 0


@dataclasses.dataclass(frozen=True)
class Option:
    """One way to execute a piece (skip, a width, or the only way)."""

    name: str
    layers: tuple[LayerCost, ...]

    @property
    def macs(self) -> int:
        """Total MACs of the option."""
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        """Total deployed params of the option."""
        return sum(layer.params for layer in self.layers)

    def layer(self, name: str) -> LayerCost | None:
        """The option's layer of that name, or None when the option does not run it."""
        return next((layer for layer in self.layers if layer.name == name), None)


@dataclasses.dataclass(frozen=True)
class Piece:
    """A unit the scheduler decides on.

    Args:
      name: ``stem``, ``gate{b}``, ``block{b}``, ``transition{t}`` or ``exit{j}``.
      kind: ``fixed``, ``gate``, ``block`` or ``exit``.
      options: execution options, cheapest first (a single one unless the piece is a gated block).
      index: block index for gates/blocks, exit index for exits, transition index for transitions.
      in_shape: (H, W, C) of the piece's input feature map.
      out_shape: (H, W, C) of its output (for exits: the logits' (1, 1, num_classes)).
    """

    name: str
    kind: str
    options: tuple[Option, ...]
    index: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]

    @property
    def option_names(self) -> list[str]:
        """Names of the options in order."""
        return [o.name for o in self.options]

    @property
    def stride(self) -> int:
        """Spatial downsampling from the piece's input to its output feature map (1 for exits and gates)."""
        return self.in_shape[0] // self.out_shape[0] if self.kind in ("fixed", "block") else 1

    @property
    def stage(self) -> int:
        """Resolution stage of the feature map the piece writes (0 at 32x32, 1 at 16x16, 2 at 8x8); gates and
        exits, which write no feature map, that of their input."""
        hw = self.out_shape[0] if self.kind in ("fixed", "block") else self.in_shape[0]
        return (32 // hw).bit_length() - 1


def _conv(name: str, hw_out: int, k: int, cin: int, cout: int, hw_in: int, bias: bool = True) -> LayerCost:
    return LayerCost(name, "conv", hw_out * hw_out * k * k * cin * cout, k * k * cin * cout + (cout if bias else 0),
                     hw_in * hw_in * cin, hw_out * hw_out * cout, cout)


def _dense(name: str, cin: int, cout: int) -> LayerCost:
    return LayerCost(name, "dense", cin * cout, cin * cout + cout, cin, cout, cout)


def _eltwise(name: str, elems: int, inputs: int = 1) -> LayerCost:
    return LayerCost(name, "eltwise", 0, 0, inputs * elems, elems)


def _pool(name: str, hw_in: int, hw_out: int, c: int) -> LayerCost:
    return LayerCost(name, "pool", 0, 0, hw_in * hw_in * c, hw_out * hw_out * c)


def _gate_layers(cfg: ModelConfig, b: int, hw: int, c: int) -> tuple[LayerCost, ...]:
    n_opt = cfg.block_groups(b) + 1
    pool = _pool(names.gate(b, "pool"), hw, 1, c)
    if cfg.gate_type == "ff":
        return (pool, _dense(names.gate(b, "fc1"), c, cfg.gate_hidden),
                _dense(names.gate(b, "fc2"), cfg.gate_hidden, n_opt))
    h, p = cfg.gate_hidden, cfg.gate_proj
    return (pool, _dense(names.gate(b, "proj"), c, p), _dense("gate_lstm", p + h, 4 * h),
            _eltwise(names.gate(b, "lstm_cell"), 2 * h, inputs=5), _dense("gate_out", h, n_opt))


def _exit_layers(cfg: ModelConfig, j: int, hw: int, c: int, final: bool, preact: bool) -> tuple[LayerCost, ...]:
    layers: list[LayerCost] = []
    if preact:  # DenseNet features are not normalised: BN + ReLU first (not foldable into what follows)
        layers.append(_eltwise(names.exit(j, "bn_relu"), hw * hw * c))
    if final:
        return (*layers, _pool(names.exit(j, "gap"), hw, 1, c), _dense(names.exit(j, "fc"), c, cfg.num_classes))
    hw2 = hw // 2 if hw > 4 else hw
    if hw2 != hw:  # deployed as a stride-2 depthwise conv with weights 1/4 (ddi_tf.deploy.pieces): 4 MACs an output
        layers.append(LayerCost(names.exit(j, "pool"), "conv", hw2 * hw2 * c * 4, 4 * c, hw * hw * c, hw2 * hw2 * c))
    e = cfg.exit_width
    layers += [_conv(names.exit(j, "conv"), hw2, 1, c, e, hw2), _pool(names.exit(j, "gap"), hw2, 1, e),
               _dense(names.exit(j, "fc"), e, cfg.num_classes)]
    return tuple(layers)


def build_pieces(cfg: ModelConfig) -> list[Piece]:
    """Returns the network's pieces in execution order."""
    if cfg.backbone == "resnet":
        return _resnet_pieces(cfg)
    return _densenet_pieces(cfg)


def _add_gate(pieces: list[Piece], cfg: ModelConfig, b: int, hw: int, c: int) -> None:
    if cfg.gated:
        pieces.append(Piece(names.gate(b), "gate", (Option("run", _gate_layers(cfg, b, hw, c)),), b,
                            (hw, hw, c), (1, 1, cfg.block_groups(b) + 1)))


def _add_exit(pieces: list[Piece], cfg: ModelConfig, j: int, hw: int, c: int, final: bool, preact: bool) -> None:
    pieces.append(Piece(names.exit(j), "exit", (Option("run", _exit_layers(cfg, j, hw, c, final, preact)),), j,
                        (hw, hw, c), (1, 1, cfg.num_classes)))


def _resnet_pieces(cfg: ModelConfig) -> list[Piece]:
    c0 = cfg.base_width
    pieces = [Piece("stem", "fixed", (Option("run", (_conv("stem_conv", 32, 3, 3, c0, 32),)),), 0,
                    (32, 32, 3), (32, 32, c0))]
    exits = cfg.exit_positions
    hw, cin, b, j = 32, c0, 0, 0
    for stage, width in enumerate(cfg.stage_widths):
        for i in range(cfg.blocks_per_stage):
            stride = 2 if (stage > 0 and i == 0) else 1
            hw_out = hw // stride
            project = stride != 1 or cin != width
            shortcut = (_conv(names.block(b, "proj"), hw_out, 1, cin, width, hw),) if project else ()
            _add_gate(pieces, cfg, b, hw, cin)
            options = []
            if cfg.gated:
                options.append(Option(names.SKIP, shortcut))
            ng = cfg.block_groups(b) if cfg.gated else 1
            for k in range(1, ng + 1) if cfg.gated else (1,):
                c = width * k // ng
                options.append(Option(
                    names.width(k) if cfg.gated else "full",
                    (_conv(names.block(b, "conv1"), hw_out, 3, cin, c, hw),
                     _conv(names.block(b, "conv2"), hw_out, 3, c, width, hw_out),
                     *shortcut, _eltwise(names.block(b, "add"), hw_out * hw_out * width, inputs=2))))
            pieces.append(Piece(names.block(b), "block", tuple(options), b, (hw, hw, cin), (hw_out, hw_out, width)))
            hw, cin, b = hw_out, width, b + 1
            if b in exits:
                _add_exit(pieces, cfg, j, hw, cin, final=b == cfg.num_blocks, preact=False)
                j += 1
    return pieces


def _densenet_pieces(cfg: ModelConfig) -> list[Piece]:
    g = cfg.growth_rate
    c = 2 * g
    pieces = [Piece("stem", "fixed", (Option("run", (_conv("stem_conv", 32, 3, 3, c, 32, bias=False),)),), 0,
                    (32, 32, 3), (32, 32, c))]
    exits = cfg.exit_positions
    hw, b, j = 32, 0, 0
    bottleneck = 4 * g
    for stage in range(3):
        for _ in range(cfg.blocks_per_stage):
            _add_gate(pieces, cfg, b, hw, c)
            concat = _eltwise(names.block(b, "concat"), hw * hw * (c + g))
            options = []
            if cfg.gated:
                options.append(Option(names.SKIP, (_eltwise(names.block(b, "zeros"), hw * hw * g, inputs=0), concat)))
            ng = cfg.block_groups(b) if cfg.gated else 1
            for k in range(1, ng + 1) if cfg.gated else (1,):
                w = bottleneck * k // ng
                options.append(Option(
                    names.width(k) if cfg.gated else "full",
                    (_eltwise(names.block(b, "bn1_relu"), hw * hw * c), _conv(names.block(b, "conv1"), hw, 1, c, w, hw),
                     _conv(names.block(b, "conv2"), hw, 3, w, g, hw, bias=False), concat)))
            pieces.append(Piece(names.block(b), "block", tuple(options), b, (hw, hw, c), (hw, hw, c + g)))
            c, b = c + g, b + 1
            if b in exits:
                _add_exit(pieces, cfg, j, hw, c, final=b == cfg.num_blocks, preact=True)
                j += 1
        if stage < 2:
            cout = int(c * cfg.compression)
            t = (_eltwise(names.transition(stage, "bn_relu"), hw * hw * c),
                 _conv(names.transition(stage, "conv"), hw, 1, c, cout, hw, bias=False),
                 _pool(names.transition(stage, "pool"), hw, hw // 2, cout))
            pieces.append(Piece(names.transition(stage), "fixed", (Option("run", t),), stage, (hw, hw, c),
                                (hw // 2, hw // 2, cout)))
            hw, c = hw // 2, cout
    return pieces


def backbone_macs(cfg: ModelConfig) -> int:
    """MACs of the static backbone body: stem, every block in full, transitions and the final head."""
    pieces = build_pieces(dataclasses.replace(cfg, gate_type="none", exits=()))
    return sum(p.options[-1].macs for p in pieces)


def full_macs(pieces: list[Piece]) -> int:
    """MACs when everything executes: every gate, every block at full width, every exit head."""
    return sum(p.options[-1].macs for p in pieces)
