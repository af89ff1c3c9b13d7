"""The DDI network as a functional tf_keras model: backbone, MGL2S gates, anytime exits, cost accounting.

``build_model(cfg)`` returns a functional model (tfmot can wrap it) whose outputs are a dict:

- ``exit{j}_logits`` (B, num_classes): every exit's logits;
- ``exit{j}_cost`` (B,) float64: executed cost up to and including exit j, in the cost table's unit;
- ``exit{j}_reached`` (B,): 1 where the sample reached exit j within its budget (always 1 without one);
- ``block{b}_decision`` (B, G+1): the one-hot option each gated block ran (after budget downgrades);
- ``block{b}_probs`` (B, G+1): the gate's softmax.

Channel-wise skipping without masks on the deployed path: a block's second convolution is split by input
channel group into G convolutions whose partial sums give the output of every width k (the first k groups)
at the cost of one full convolution. Each width has its own batch norm after that convolution (switchable
BN), so its statistics are those of that width. The deployed pieces (``ddi_tf.deploy.export``) slice the weights
and run only the chosen width.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from ddi_tf.core import names
from ddi_tf.core.arch import Piece, build_pieces
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import CostTable, cost_table
from ddi_tf.model.layers import (
    GATE_MODES,
    BatchZeros,
    BudgetGuard,
    ChannelGroups,
    CostState,
    GateDecision,
    LSTMCellOps,
    OptionSelect,
)

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class _Builder:
    """Builds the functional graph piece by piece, threading the cost state through BudgetGuards."""

    def __init__(self, cfg: ModelConfig, table: CostTable, budget_input: bool, defer_exits: bool = False):
        self.cfg = cfg
        self.table = table
        self.reserves = table.reserves()
        self.budget_input = budget_input
        self.defer = defer_exits
        self.reg = keras.regularizers.L2(cfg.weight_decay / 2) if cfg.weight_decay else None
        self.outputs: dict[str, tf.Tensor] = {}
        self.image = keras.Input((32, 32, 3), name="image")
        self.budget = keras.Input((), name="budget", dtype="float64") if budget_input else None
        self.state = BatchZeros(4 if defer_exits else 2, dtype="float64", name="cost_init")(self.image)
        self.rnn_state: list[tf.Tensor] | None = None
        self.shared: dict[str, keras.layers.Layer] = {}

    # --- small helpers -----------------------------------------------------------------------------------
    def conv(self, x, filters: int, kernel: int, name: str, stride: int = 1, fan_in_share: int = 1):
        """A bias-free conv, He-initialised; ``fan_in_share`` > 1 for one of that many input-channel groups of
        one convolution (the split conv2), so that the groups together have the whole convolution's scale."""
        init = keras.initializers.VarianceScaling(2.0 / fan_in_share, "fan_in", "truncated_normal")
        return keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                                   kernel_initializer=init, kernel_regularizer=self.reg, name=name)(x)

    def bn(self, x, name: str):
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)

    def dense(self, x, units: int, name: str, activation=None, bias_initializer="zeros"):
        return keras.layers.Dense(units, activation=activation, kernel_regularizer=self.reg, name=name,
                                  bias_initializer=bias_initializer)(x)

    def guard(self, piece: str, onehot=None):
        i = self.table.index(piece)
        args = [self.state] + ([onehot] if onehot is not None else []) + ([self.budget] if self.budget_input else [])
        is_exit = self.table.kinds[i] == "exit"
        ahead = None  # deferred exits: the cheapest way from after this exit to the next one
        if self.defer and is_exit and i + 1 < len(self.table.costs):
            ahead = min(self.table.costs[i + 1]) + self.reserves[i + 1]
        out = BudgetGuard(list(self.table.costs[i]), self.reserves[i], self.budget_input, defer=self.defer,
                          is_exit=is_exit, ahead=ahead, name=f"{piece}_guard")(args)
        if onehot is None:
            self.state = out
            return None
        self.state, onehot = out
        return onehot

    # --- gates ---------------------------------------------------------------------------------------------
    def gate(self, b: int, x):
        """Runs gate b on the block input x; returns the (budget-checked) one-hot decision."""
        cfg = self.cfg
        n = cfg.block_groups(b) + 1
        self.guard(names.gate(b))
        pooled = keras.layers.GlobalAveragePooling2D(name=names.gate(b, "pool"))(x)
        if cfg.gate_type == "ff":
            h = self.dense(pooled, cfg.gate_hidden, names.gate(b, "fc1"), activation="relu")
            logits = self.dense(h, n, names.gate(b, "fc2"), bias_initializer=_full_option_bias(n, cfg.gate_init_full))
        else:
            if self.rnn_state is None:
                zeros = BatchZeros(cfg.gate_hidden, name="gate_state_init")(x)
                self.rnn_state = [zeros, zeros]
                self.shared["lstm"] = keras.layers.Dense(4 * cfg.gate_hidden, name="gate_lstm",
                                                         kernel_regularizer=self.reg)
                self.shared["out"] = keras.layers.Dense(n, name="gate_out", kernel_regularizer=self.reg,
                                                        bias_initializer=_full_option_bias(n, cfg.gate_init_full))
            proj = self.dense(pooled, cfg.gate_proj, names.gate(b, "proj"), activation="relu")
            h_prev, c_prev = self.rnn_state
            z = self.shared["lstm"](keras.layers.Concatenate(name=names.gate(b, "concat"))([proj, h_prev]))
            h, c = LSTMCellOps(cfg.gate_hidden, name=names.gate(b, "cell"))([z, c_prev])
            self.rnn_state = [h, c]
            logits = self.shared["out"](h)
        onehot, probs = GateDecision(n, cfg.estimator, cfg.temperature, name=names.gate(b, "decision"))(logits)
        onehot = self.guard(names.block(b), onehot)
        self.outputs[names.decision(b)] = onehot
        self.outputs[names.probs(b)] = probs
        return onehot

    # --- partial sums over channel groups ------------------------------------------------------------------
    def grouped_conv(self, h, b: int, filters: int, kernel: int):
        """conv(h[..., :k*C/G_b]) for every k, from G_b convolutions over the groups and a running sum."""
        parts = ChannelGroups(self.cfg.block_groups(b), name=names.block(b, "groups"))(h)
        partial = [self.conv(p, filters, kernel, names.group_conv(b, j + 1), fan_in_share=len(parts))
                   for j, p in enumerate(parts)]
        sums = [partial[0]]
        for j in range(1, len(partial)):
            sums.append(keras.layers.Add(name=names.group_sum(b, j + 1))([sums[-1], partial[j]]))
        return sums

    # --- exits ---------------------------------------------------------------------------------------------
    def exit(self, piece: Piece, x):
        """An exit head as the description has it: BN+ReLU first (DenseNet), 2x2 pool and 1x1 conv (all but the
        final exit), global pool, dense."""
        j, (option,) = piece.index, piece.options
        if option.layer(names.exit(j, "bn_relu")):
            x = keras.layers.ReLU(name=names.exit(j, "relu"))(self.bn(x, names.exit(j, "bn")))
        if option.layer(names.exit(j, "pool")):
            x = keras.layers.AveragePooling2D(2, name=names.exit(j, "pool"))(x)
        conv = option.layer(names.exit(j, "conv"))
        if conv:
            x = self.conv(x, conv.out_channels, 1, conv.name)
            x = keras.layers.ReLU(name=names.exit(j, "conv_relu"))(self.bn(x, names.exit(j, "conv_bn")))
        x = keras.layers.GlobalAveragePooling2D(name=names.exit(j, "gap"))(x)
        logits = self.dense(x, self.cfg.num_classes, names.exit(j, "fc"))
        self.guard(piece.name)
        cost, reached = CostState(name=names.exit(j, "state"))(self.state)
        self.outputs[names.exit_logits(j)] = logits
        self.outputs[names.exit_cost(j)] = cost
        self.outputs[names.exit(j, "reached")] = reached

    # --- the network, piece by piece of its description ----------------------------------------------------
    def build(self) -> None:
        """Creates every piece of ``build_pieces(cfg)`` in execution order (the same description the cost table
        and the export use: shapes, strides, projections and exit heads come from it)."""
        x, onehot = self.image, None
        block = self.residual_block if self.cfg.backbone == "resnet" else self.dense_layer
        for piece in build_pieces(self.cfg):
            if piece.kind == "gate":
                onehot = self.gate(piece.index, x)  # also guards its block: the budget downgrades the decision
            elif piece.kind == "exit":
                self.exit(piece, x)
            elif piece.kind == "block":
                if not self.cfg.gated:
                    self.guard(piece.name)
                x = block(piece, x, onehot)
            else:
                self.guard(piece.name)
                x = self.stem(piece) if piece.name == "stem" else self.transition(piece, x)

    def stem(self, piece: Piece):
        conv = self.conv(self.image, piece.out_shape[2], 3, "stem_conv")
        if self.cfg.backbone == "densenet":  # DenseNet-BC: its layers normalise their own inputs
            return conv
        return keras.layers.ReLU(name="stem_relu")(self.bn(conv, "stem_bn"))

    def residual_block(self, piece: Piece, x, onehot):
        b, width, stride = piece.index, piece.out_shape[2], piece.stride
        h = self.conv(x, width, 3, names.block(b, "conv1"), stride)
        h = keras.layers.ReLU(name=names.block(b, "relu1"))(self.bn(h, names.block(b, "bn1")))
        if piece.options[-1].layer(names.block(b, "proj")):
            proj = self.conv(x, width, 1, names.block(b, "proj"), stride)
            shortcut = self.bn(proj, names.block(b, "proj_bn"))
        else:
            shortcut = x
        if self.cfg.gated:
            sums = self.grouped_conv(h, b, width, 3)
            branches = [self.bn(s, names.width_bn(b, k + 1)) for k, s in enumerate(sums)]
            y = OptionSelect(True, name=names.block(b, "select"))([onehot, shortcut, *branches])
        else:
            y = keras.layers.Add(name=names.block(b, "add"))(
                [shortcut, self.bn(self.conv(h, width, 3, names.block(b, "conv2")), names.block(b, "bn2"))])
        return keras.layers.ReLU(name=names.block(b, "relu2"))(y)

    def dense_layer(self, piece: Piece, x, onehot):
        b, growth = piece.index, piece.out_shape[2] - piece.in_shape[2]
        bottleneck = piece.options[-1].layer(names.block(b, "conv1")).out_channels
        h = keras.layers.ReLU(name=names.block(b, "relu1"))(self.bn(x, names.block(b, "bn1")))
        h = self.conv(h, bottleneck, 1, names.block(b, "conv1"))
        h = keras.layers.ReLU(name=names.block(b, "relu2"))(self.bn(h, names.block(b, "bn2")))
        if self.cfg.gated:
            new = OptionSelect(False, name=names.block(b, "select"))([onehot, *self.grouped_conv(h, b, growth, 3)])
        else:
            new = self.conv(h, growth, 3, names.block(b, "conv2"))
        return keras.layers.Concatenate(name=names.block(b, "concat"))([x, new])

    def transition(self, piece: Piece, x):
        t = piece.index
        h = keras.layers.ReLU(name=names.transition(t, "relu"))(self.bn(x, names.transition(t, "bn")))
        h = self.conv(h, piece.out_shape[2], 1, names.transition(t, "conv"))
        return keras.layers.AveragePooling2D(2, name=names.transition(t, "pool"))(h)


def _full_option_bias(num_options: int, bias: float) -> keras.initializers.Initializer:
    """A gate's output bias: ``bias`` on the full (last) option, 0 elsewhere (gates start by running in full)."""
    return keras.initializers.Constant([0.0] * (num_options - 1) + [float(bias)])


def build_model(cfg: ModelConfig, table: CostTable | None = None, budget_input: bool = False,
                name: str | None = None, defer_exits: bool = False) -> keras.Model:
    """Builds the DDI network (or the static backbone when ``cfg.gate_type == 'none'``).

    Args:
      cfg: the model configuration.
      table: the cost table the model accounts in (default: MACs of ``cfg``'s pieces).
      budget_input: add a ``budget`` input (B,) and enforce it per sample (the evaluation-time policy);
        without it the model only accounts costs.
      name: model name.
      defer_exits: deferred exits under the budget (the board runtime's ``--defer_exits``; needs
        ``budget_input``; for budget-only policies): adds ``total_cost`` (B,), what each sample spent in all,
        kept exits that answered included (``exit{j}_cost`` then leaves out kept exits).

    Returns:
      A functional model taking ``image`` (B, 32, 32, 3) normalised float32 (and ``budget``) and
      returning the dict of named outputs described in the module docstring.
    """
    table = table or cost_table(build_pieces(cfg), "macs")
    expected = [p.name for p in build_pieces(cfg)]
    if list(table.names) != expected:
        raise ValueError(f"cost table pieces {list(table.names)} do not match the model's {expected}")
    if defer_exits and not budget_input:
        raise ValueError("deferred exits need budget_input=True")
    builder = _Builder(cfg, table, budget_input, defer_exits)
    builder.build()
    if defer_exits:
        builder.outputs["total_cost"] = CostState(name="total_state")(builder.state)[0]
    inputs = {"image": builder.image, "budget": builder.budget} if budget_input else builder.image
    default = f"ddi_{cfg.backbone}{cfg.depth}" if cfg.gated else f"static_{cfg.backbone}{cfg.depth}"
    return keras.Model(inputs, builder.outputs, name=name or default)


def gate_layers(model: keras.Model) -> list[GateDecision]:
    """The model's GateDecision layers in block order."""
    return [layer for layer in model.layers if isinstance(layer, GateDecision)]


def set_gate_mode(model: keras.Model, mode: str, random_prob: float = 0.0, fixed_option: int | None = None) -> None:
    """Sets how every gate decides (see ``GateDecision``); takes effect in functions traced afterwards."""
    if mode not in GATE_MODES:
        raise ValueError(f"gate mode must be one of {GATE_MODES}, got {mode!r}")
    if not 0.0 <= random_prob <= 1.0:
        raise ValueError(f"random_prob must be in [0, 1], got {random_prob}")
    for layer in gate_layers(model):
        layer.mode = mode
        layer.random_prob = random_prob
        if fixed_option is not None:
            if not 0 <= fixed_option < layer.num_options:
                raise ValueError(f"fixed_option must be in [0, {layer.num_options}), got {fixed_option}")
            layer.fixed_option = fixed_option


def num_exits(model: keras.Model) -> int:
    """Number of exits of a model built by ``build_model``."""
    return names.exit_count(model.output)


