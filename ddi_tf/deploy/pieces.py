"""Every piece option of ``ddi_tf.core.arch`` as its own Keras model for conversion: batch norms folded, channel
groups sliced, every feature edge held at its calibrated int8 range on both sides (``FixedRange``); the ranges
and each piece's representative inputs come from ``ddi_tf.deploy.calibrate``."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ddi_tf.core import names
from ddi_tf.core.arch import Option, Piece, build_pieces
from ddi_tf.core.config import ModelConfig
from ddi_tf.model.build import BN_EPSILON


class ExportError(ValueError):
    """The work directory cannot be exported (no checkpoint, unsupported model, ...)."""


class FixedRange(keras.layers.Layer):
    """Fake-quantises to a fixed [lo, hi] (8 bits), pinning a boundary tensor's int8 scale and zero point.

    Args:
      lo: range minimum.
      hi: range maximum.
    """

    def __init__(self, lo: float, hi: float, **kwargs):
        super().__init__(**kwargs)
        self.lo, self.hi = float(lo), float(hi)

    def call(self, x):
        return tf.quantization.fake_quant_with_min_max_args(x, self.lo, self.hi, num_bits=8, narrow_range=False)

    def get_config(self) -> dict:
        return {**super().get_config(), "lo": self.lo, "hi": self.hi}


# --- weights ------------------------------------------------------------------------------------------------
def _fold(model: keras.Model, conv: str, bn: str | None, out_slice: slice = slice(None),
          kernel: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Conv kernel (optionally given) with the following batch norm folded in; output channels sliced."""
    k = model.get_layer(conv).get_weights()[0] if kernel is None else kernel
    k = k[..., out_slice]
    if bn is None:
        return k, np.zeros(k.shape[-1], np.float32)
    gamma, beta, mean, var = (w[out_slice] for w in model.get_layer(bn).get_weights())
    s = gamma / np.sqrt(var + BN_EPSILON)
    return (k * s).astype(np.float32), (beta - mean * s).astype(np.float32)


def _group_kernel(model: keras.Model, b: int, k: int) -> np.ndarray:
    """Block b's conv2 over its first k input-channel groups: the group kernels concatenated on input channels."""
    return np.concatenate([model.get_layer(names.group_conv(b, j)).get_weights()[0] for j in range(1, k + 1)],
                          axis=2)


def _affine(x, scale: np.ndarray, shift: np.ndarray, name: str | None = None):
    """A per-channel ``x * scale + shift`` as a 1x1 depthwise conv (the stem's normalisation, DenseNet's BN)."""
    layer = keras.layers.DepthwiseConv2D(1, name=name)
    y = layer(x)
    layer.set_weights([np.asarray(scale, np.float32).reshape(1, 1, -1, 1), np.asarray(shift, np.float32)])
    return y


def _conv(x, kernel: np.ndarray, bias: np.ndarray, stride: int = 1, name: str | None = None):
    layer = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], stride, padding="same", name=name)
    y = layer(x)
    layer.set_weights([kernel, bias])
    return y


def _global_pool(x, op: str = "mean"):
    """Global average pooling, as one of ``GATE_POOLS`` + RESHAPE (the same arithmetic as GlobalAveragePooling2D).

    ``mean``: MEAN with keep_dims (TFLite's builtin int8 MEAN is about 28x faster with keep_dims than without:
    0.005 ms vs 0.134 ms on a 32x32x16 map, measured earlier). ``average``: one AVERAGE_POOL_2D whose window is
    the whole map; the caller pins its output to its input's range (int8 average pooling keeps the input's scale).
    On TFLite Micro's kernels the average pool is ~20x faster than MEAN (7 vs 160 us for a gate at 32x32x16 on
    the host), on XNNPACK ~2 us slower (3.9 vs 1.8 us): docs/RESULTS.md section 4."""
    if op == "average":
        h = keras.layers.AveragePooling2D((x.shape[1], x.shape[2]))(x)
    else:
        h = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    return keras.layers.Reshape((x.shape[3],))(h)


GATE_POOLS = ("mean", "average")


EXIT_POOLS = ("depthwise", "average")


def _pool2(x, op: str):
    """The exit heads' 2x2 average pool. ``depthwise`` (what the export writes, and what ``ddi_tf.core.arch``
    counts: 4 MACs an output): a stride-2 depthwise conv with weights 1/4 (exact in int8: per-channel weight 127
    at scale 1/508), which XNNPACK and CMSIS-NN accelerate; XNNPACK does not take int8 AVERAGE_POOL_2D (16.8 us vs
    4.2 us on a 32x32x16 map, issue 14). ``average``: AVERAGE_POOL_2D, for comparisons only (its piece no longer
    has the MACs the cost table gives the exit)."""
    if op == "average":
        return keras.layers.AveragePooling2D(2)(x)
    layer = keras.layers.DepthwiseConv2D(2, strides=2, padding="valid", use_bias=False)
    y = layer(x)
    layer.set_weights([np.full((2, 2, x.shape[3], 1), 0.25, np.float32)])
    return y


def _dense(x, model: keras.Model, name: str):
    src = model.get_layer(name)
    layer = keras.layers.Dense(src.units, name=name)
    y = layer(x)
    layer.set_weights(src.get_weights())
    return y


# --- the pieces as small float Keras models with fixed boundary ranges -----------------------------------
@dataclasses.dataclass
class PieceModel:
    """One exported piece option: its float Keras model (batch 1) and boundary description."""

    piece: str
    option: str
    model: keras.Model | None  # None: an identity skip (no computation)
    in_edge: str
    out_edge: str | None  # None for logits outputs
    feeds_from: str | None  # float model layer whose output is this piece's input (None: the image)
    global_probe: bool = False  # a global AVERAGE_POOL_2D reads the input: calibrate it on a whole map at the max
    stateful: bool = False  # an rnn gate: inputs (x, h, c), outputs (logits, h_out, c_out); see ``STATE_IO``

    @property
    def key(self) -> str:
        """Signature key / file stem."""
        return names.option_key(self.piece, self.option)


STATE_IO = {"inputs": ("h", "c"), "outputs": ("h_out", "c_out")}
"""The tensor names of an rnn gate piece's LSTM state: inputs ``h`` and ``c`` beside the feature map ``x``, outputs
``h_out`` and ``c_out`` beside the logits (the names of the converted model's signature). The state is held on the
fixed int8 grids ``ranges["gate_h"]`` / ``ranges["gate_c"]`` on both sides, so that one gate's state outputs are
the next gate's inputs without requantisation; the first gate reads zeros (exactly 0 on both grids)."""


def build_piece_models(cfg: ModelConfig, model: keras.Model, ranges: dict[str, tuple[float, float]],
                       mean, std, inner: dict[str, tuple[float, float]] | None = None,
                       exit_pool: str = "depthwise", gate_pool: str = "mean") -> list[PieceModel]:
    """The float piece models of a trained ResNet DDI (or static) model, one per option of every piece of
    ``ddi_tf.core.arch.build_pieces(cfg)`` (the network description the cost table and the Keras builder share:
    shapes, strides, projections, option widths and exit heads all come from it).

    Args:
      cfg: the model config (ResNet; DenseNet export is not implemented yet).
      model: the trained float model (any budget/cost variant: weights are read by layer name).
      ranges: fixed float range of each feature edge: ``image`` and ``stage0``..``stage2``; with rnn gates also
        their LSTM state's, ``gate_h`` and ``gate_c`` (``STATE_IO``).
      mean, std: the input normalisation (per channel, on the 0..255 scale).
      inner: the activation ranges of a QAT model by layer name (``ddi_tf.quant.qat.activation_ranges``), imposed
        on the matching tensors inside the pieces so that int8 computes what the QAT model simulated; None
        (post-training quantization): the converter calibrates them on the representative data.
      exit_pool: how the exit heads compute their 2x2 average pool (``EXIT_POOLS``; see ``_pool2``).
      gate_pool: how the gates compute their global average pool (``GATE_POOLS``; see ``_global_pool``):
        ``mean`` for LiteRT / XNNPACK, ``average`` for TensorFlow Lite Micro.
    """
    if cfg.backbone not in ("resnet", "densenet"):
        raise ExportError(f"no export for the {cfg.backbone!r} backbone")
    if cfg.gate_type == "rnn" and not {"gate_h", "gate_c"} <= set(ranges):
        raise ExportError("rnn gates need the fixed ranges of their LSTM state (ranges 'gate_h' and 'gate_c', "
                          "from ddi_tf.deploy.calibrate.calibrate_gate_state)")
    if exit_pool not in EXIT_POOLS:
        raise ExportError(f"exit_pool {exit_pool!r} is not one of {', '.join(EXIT_POOLS)}")
    if gate_pool not in GATE_POOLS:
        raise ExportError(f"gate_pool {gate_pool!r} is not one of {', '.join(GATE_POOLS)}")
    if cfg.backbone == "densenet" and inner is not None:
        raise ExportError("QAT export of DenseNet is not implemented (its feature edges are not tied in QAT); "
                          "export the run before its QAT stage (post-training quantization)")
    builder = _PieceBuilder(cfg, model, ranges, inner, exit_pool, gate_pool)
    dense = cfg.backbone == "densenet"
    out: list[PieceModel] = []
    edge, feeds = "image", None  # the feature edge the next piece reads, and the float layer that writes it
    for piece in build_pieces(cfg):
        if piece.name == "stem":
            out.append(builder.stem(mean, std))
            edge, feeds = names.edge(piece.stage), edge_producer(cfg, piece)
        elif piece.kind == "gate":
            out.append(builder.gate(piece, edge, feeds))
        elif piece.kind == "block":
            out_edge = names.edge(piece.stage)
            option_of = builder.dense_option if dense else builder.block_option
            out += [option_of(piece, option, edge, out_edge, feeds) for option in piece.options]
            edge, feeds = out_edge, edge_producer(cfg, piece)
        elif piece.kind == "exit":
            out.append(builder.exit(piece, edge, feeds))
        elif dense and piece.kind == "fixed":
            out_edge = names.edge(piece.stage)
            out.append(builder.transition(piece, edge, out_edge, feeds))
            edge, feeds = out_edge, edge_producer(cfg, piece)
        else:
            raise ExportError(f"no int8 piece for {piece.name} ({piece.kind})")
    return out


def edge_producer(cfg: ModelConfig, piece: Piece) -> str:
    """The float model's layer whose output is the feature map ``piece`` (the stem, a block or a DenseNet
    transition) writes: what the next pieces read, and what the export calibrates the edge on."""
    if cfg.backbone == "densenet":
        if piece.name == "stem":
            return "stem_conv"
        if piece.kind == "block":
            return names.block(piece.index, "concat")
        return names.transition(piece.index, "pool")
    return "stem_relu" if piece.name == "stem" else names.block(piece.index, "relu2")


def edge_layers(cfg: ModelConfig) -> list[tuple[str, int]]:
    """(layer, stage) of every feature map written to an edge, in order; for DenseNet also each transition's
    conv output, which its 2x2 average pool keeps on the next stage's grid."""
    out = []
    for piece in build_pieces(cfg):
        if piece.kind in ("fixed", "block"):
            if cfg.backbone == "densenet" and piece.kind == "fixed" and piece.name != "stem":
                out.append((names.transition(piece.index, "conv"), piece.stage))
            out.append((edge_producer(cfg, piece), piece.stage))
    return out


class _PieceBuilder:
    """Turns one piece option of the network description into a float Keras model with fixed boundary ranges."""

    def __init__(self, cfg: ModelConfig, model: keras.Model, ranges: dict[str, tuple[float, float]],
                 inner: dict[str, tuple[float, float]] | None, exit_pool: str = "depthwise",
                 gate_pool: str = "mean"):
        self.cfg, self.model, self.ranges, self.inner = cfg, model, ranges, inner
        self.exit_pool, self.gate_pool = exit_pool, gate_pool

    def fq(self, h, name: str):
        """The QAT model's range for the output of its layer ``name``, when there is one."""
        if self.inner is None or name not in self.inner:
            return h
        return FixedRange(*self.inner[name], name=f"qat_{name}")(h)

    def inp(self, edge: str, shape):
        x = keras.Input(shape, batch_size=1, name="x")
        return x, FixedRange(*self.ranges[edge], name="in_range")(x)

    def out(self, edge: str, x, y) -> keras.Model:
        return keras.Model(x, FixedRange(*self.ranges[edge], name="out_range")(y))

    def stem(self, mean, std) -> PieceModel:
        """Pixels (0..255) -> normalise (1x1 depthwise affine) -> conv+BN+ReLU."""
        x, h = self.inp("image", (32, 32, 3))
        std = np.asarray(std, np.float32)
        h = self.fq(_affine(h, 1.0 / std, -np.asarray(mean, np.float32) / std, name="normalize"), "input")
        if self.cfg.backbone == "densenet":  # DenseNet-BC: the raw conv (its consumers normalise it)
            h = _conv(h, *_fold(self.model, "stem_conv", None))
        else:
            h = keras.layers.ReLU()(_conv(h, *_fold(self.model, "stem_conv", "stem_bn")))
        return PieceModel("stem", "run", self.out(names.edge(0), x, h), "image", names.edge(0), None)

    def preact(self, h, bn: str, relu: str):
        """DenseNet's BN + ReLU on a piece's input (not foldable into the conv before it: the features are a
        concatenation of many producers): a 1x1 depthwise conv holding the per-channel affine, then ReLU."""
        gamma, beta, mean, var = self.model.get_layer(bn).get_weights()
        scale = gamma / np.sqrt(var + BN_EPSILON)
        return self.fq(keras.layers.ReLU()(_affine(h, scale, beta - mean * scale)), relu)

    def dense_option(self, piece: Piece, option: Option, in_edge: str, out_edge: str,
                     feeds: str | None) -> PieceModel:
        """One option of a DenseNet-BC layer: its input with ``growth`` new channels concatenated, all on the
        stage's grid (the input passes through unrequantised). Option ``skip``: the new channels are zeros (a
        PAD with the edge's zero point: exactly 0.0 after dequantisation, 0 MACs); ``w{k}``: BN+ReLU, the 1x1
        bottleneck conv over the first k of G groups of its output channels (BN folded), ReLU, the 3x3 conv over
        those channels (the sum of the first k group kernels)."""
        b, model = piece.index, self.model
        growth = piece.out_shape[2] - piece.in_shape[2]
        x, h = self.inp(in_edge, piece.in_shape)
        if option.name == names.SKIP:
            y = keras.layers.Lambda(lambda t: tf.pad(t, [[0, 0], [0, 0], [0, 0], [0, growth]]))(h)
            return PieceModel(piece.name, option.name, self.out(out_edge, x, y), in_edge, out_edge, feeds)
        conv1 = option.layer(names.block(b, "conv1"))
        h1 = self.preact(h, names.block(b, "bn1"), names.block(b, "relu1"))
        folded = _fold(model, names.block(b, "conv1"), names.block(b, "bn2"), slice(0, conv1.out_channels))
        h1 = self.fq(keras.layers.ReLU()(_conv(h1, *folded)), names.block(b, "relu2"))
        k = names.width_groups(option.name)
        if k is not None:
            kernel = _group_kernel(model, b, k)
        else:
            kernel = model.get_layer(names.block(b, "conv2")).get_weights()[0]
        new = FixedRange(*self.ranges[out_edge], name="new_range")(_conv(h1, kernel, np.zeros(growth, np.float32)))
        y = keras.layers.Concatenate()([h, new])
        return PieceModel(piece.name, option.name, self.out(out_edge, x, y), in_edge, out_edge, feeds)

    def transition(self, piece: Piece, in_edge: str, out_edge: str, feeds: str | None) -> PieceModel:
        """A DenseNet-BC transition: BN+ReLU, 1x1 conv (compression), 2x2 average pool. The conv's output is
        held on the next stage's grid, which AVERAGE_POOL_2D keeps (the pool's mean stays in its input's range)."""
        t = piece.index
        x, h = self.inp(in_edge, piece.in_shape)
        h = self.preact(h, names.transition(t, "bn"), names.transition(t, "relu"))
        h = _conv(h, *_fold(self.model, names.transition(t, "conv"), None))
        h = FixedRange(*self.ranges[out_edge], name="conv_range")(h)
        y = keras.layers.AveragePooling2D(2)(h)
        return PieceModel(piece.name, "run", self.out(out_edge, x, y), in_edge, out_edge, feeds)

    def gate(self, piece: Piece, edge: str, feeds: str | None) -> PieceModel:
        b, fq = piece.index, self.fq
        x, h = self.inp(edge, piece.in_shape)
        h = _global_pool(h, self.gate_pool)
        if self.gate_pool == "average":  # the mean of the map stays in the edge's range: keep its scale (as
            h = FixedRange(*self.ranges[edge], name="pool_range")(h)  # AVERAGE_POOL_2D does), then QAT's range
        h = fq(h, names.gate(b, "pool"))
        if self.cfg.gate_type == "rnn":
            return self._rnn_gate(piece, x, h, edge, feeds)
        h = fq(keras.layers.ReLU()(_dense(h, self.model, names.gate(b, "fc1"))), names.gate(b, "fc1"))
        logits = fq(_dense(h, self.model, names.gate(b, "fc2")), names.gate(b, "fc2"))
        return PieceModel(piece.name, "run", keras.Model(x, logits), edge, None, feeds,
                          global_probe=self.gate_pool == "average")

    def _rnn_gate(self, piece: Piece, x, pooled, edge: str, feeds: str | None) -> PieceModel:
        """SkipNet's shared-LSTM gate as a piece: the pooled map's projection and the previous gate's state
        (``STATE_IO``) through the shared LSTM's affine (one FULLY_CONNECTED), its cell (``LSTMCellOps``' arithmetic,
        with the new c on its int8 grid before the tanh that makes h, as the next gate reads it), and the shared
        output layer; the new state leaves on the same fixed grids it came in on."""
        b, fq, units = piece.index, self.fq, self.cfg.gate_hidden
        h_name, c_name = STATE_IO["inputs"]
        h_in = keras.Input((units,), batch_size=1, name=h_name)
        c_in = keras.Input((units,), batch_size=1, name=c_name)
        h_prev = FixedRange(*self.ranges["gate_h"], name="h_range")(h_in)
        c_prev = FixedRange(*self.ranges["gate_c"], name="c_range")(c_in)
        proj = fq(keras.layers.ReLU()(_dense(pooled, self.model, names.gate(b, "proj"))), names.gate(b, "proj"))
        z = fq(_dense(keras.layers.Concatenate()([proj, h_prev]), self.model, "gate_lstm"), "gate_lstm")
        i, f, g, o = keras.layers.Lambda(lambda t: tf.split(t, 4, axis=-1))(z)
        sig = keras.layers.Activation("sigmoid")
        c_new = keras.layers.Add()([keras.layers.Multiply()([sig(f), c_prev]),
                                    keras.layers.Multiply()([sig(i), keras.layers.Activation("tanh")(g)])])
        c_out = FixedRange(*self.ranges["gate_c"], name=STATE_IO["outputs"][1])(c_new)
        gate_o, cell = sig(o), keras.layers.Activation("tanh")(c_out)
        h_new = keras.layers.Multiply()([gate_o, cell])
        h_out = FixedRange(*self.ranges["gate_h"], name=STATE_IO["outputs"][0])(h_new)
        # The output layer reads h_out + 0 * h_prev, an ADD the converter cannot fold (two MUL/ADD ops on H values,
        # no MACs): a FULLY_CONNECTED reading the pinned h_out itself gets its bias quantised with h_out's observed
        # range, not its pinned one (the bias-scale check fails: h stays well inside (-1, 1)); the ADD's output is
        # requantised to its observed range, so the bias and the FC's input agree. (A MUL by a constant is folded
        # into the FC; reading the unpinned h leaves the state's branch in float.)
        h_fc = keras.layers.Add()([h_out, keras.layers.Lambda(lambda t: t * 0.0)(h_prev)])
        logits = fq(_dense(h_fc, self.model, "gate_out"), "gate_out")
        return PieceModel(piece.name, "run", keras.Model([x, h_in, c_in], [logits, h_out, c_out]), edge, None,
                          feeds, global_probe=self.gate_pool == "average", stateful=True)

    def block_option(self, piece: Piece, option: Option, in_edge: str, out_edge: str,
                     feeds: str | None) -> PieceModel:
        """One option of a residual block: the shortcut (projected where the description has ``proj``), plus
        conv1 over the option's output channels and conv2 over the same input channels (folded BN), ReLU."""
        b, fq, model = piece.index, self.fq, self.model
        proj = option.layer(names.block(b, "proj"))
        if option.name == names.SKIP and proj is None:
            return PieceModel(piece.name, option.name, None, in_edge, out_edge, feeds)  # identity: nothing runs
        x, h = self.inp(in_edge, piece.in_shape)
        shortcut = h
        if proj is not None:
            folded = _fold(model, proj.name, names.block(b, "proj_bn"))
            shortcut = fq(_conv(h, *folded, piece.stride), names.block(b, "proj_bn"))
        conv1 = option.layer(names.block(b, "conv1"))
        if conv1 is None:  # a skipped downsampling block: the projected shortcut alone
            return PieceModel(piece.name, option.name, self.out(out_edge, x, keras.layers.ReLU()(shortcut)),
                              in_edge, out_edge, feeds)
        folded = _fold(model, conv1.name, names.block(b, "bn1"), slice(0, conv1.out_channels))
        h1 = fq(keras.layers.ReLU()(_conv(h, *folded, piece.stride)), names.block(b, "relu1"))
        k = names.width_groups(option.name)
        if k is not None:  # gated: conv2 is the sum over the first k channel groups, each its own kernel
            bn2 = names.width_bn(b, k)
            w2, b2 = _fold(model, "", bn2, kernel=_group_kernel(model, b, k))
        else:
            bn2 = names.block(b, "bn2")
            w2, b2 = _fold(model, names.block(b, "conv2"), bn2)
        y = keras.layers.ReLU()(keras.layers.Add()([shortcut, fq(_conv(h1, w2, b2), bn2)]))
        return PieceModel(piece.name, option.name, self.out(out_edge, x, y), in_edge, out_edge, feeds)

    def exit(self, piece: Piece, edge: str, feeds: str | None) -> PieceModel:
        """An exit head: the description's 2x2 pool and 1x1 conv+BN+ReLU where it has them, global pool, dense."""
        j, fq, (option,) = piece.index, self.fq, piece.options
        x, h = self.inp(edge, piece.in_shape)
        preact = option.layer(names.exit(j, "bn_relu")) is not None
        if preact:  # DenseNet: BN + ReLU first; the pool below (a depthwise conv) then has its own range
            h = self.preact(h, names.exit(j, "bn"), names.exit(j, "relu"))
            if option.layer(names.exit(j, "pool")) is not None:
                h = _pool2(h, self.exit_pool)
        elif option.layer(names.exit(j, "pool")) is not None:
            # The mean of a 2x2 window stays in the edge's range: pinning the pool's output to it keeps the
            # input's scale, as AVERAGE_POOL_2D does and as the QAT model (no quantizer after its pool) simulated.
            h = FixedRange(*self.ranges[edge], name="pool_range")(_pool2(h, self.exit_pool))
        if option.layer(names.exit(j, "conv")) is not None:
            folded = _fold(self.model, names.exit(j, "conv"), names.exit(j, "conv_bn"))
            h = fq(keras.layers.ReLU()(_conv(h, *folded)), names.exit(j, "conv_relu"))
        h = fq(_global_pool(h), names.exit(j, "gap"))
        logits = fq(_dense(h, self.model, names.exit(j, "fc")), names.exit(j, "fc"))
        return PieceModel(piece.name, "run", keras.Model(x, logits), edge, None, feeds)
