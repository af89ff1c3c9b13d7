"""The export's calibration on real images: the fixed range of every feature edge (one int8 grid per resolution
stage, shared by every producer and consumer of that stage) and each piece's representative inputs."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ddi_tf.core import names
from ddi_tf.core.config import ModelConfig
from ddi_tf.data import normalize
from ddi_tf.deploy.pieces import PieceModel, edge_layers
from ddi_tf.model.build import set_gate_mode
from ddi_tf.quant.int8 import exact_range_max, exact_signed_range


def calibrate_edges(cfg: ModelConfig, model: keras.Model, images: np.ndarray, mean, std,
                    batch_size: int = 64) -> tuple[dict[str, tuple[float, float]], dict[str, list[np.ndarray]]]:
    """Fixed ranges of the feature edges, and the float edge tensors used as representative inputs.

    The range of a stage is [0, max] over every feature map of that stage (ResNet: all post-ReLU; DenseNet:
    [min, max], the concatenated features are raw conv outputs, with 0 exactly on the grid) on the full, learned
    and random-option paths, so that any option's output fits; the representative inputs of each piece come
    from all three paths too (under a budget, any path may run).
    """
    layers = edge_layers(cfg)
    layer_names = [n for n, _ in layers]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in layer_names])
    maxima, minima = np.zeros(3), np.zeros(3)
    samples: dict[str, list[np.ndarray]] = {n: [] for n in layer_names}
    for mode, p in _gate_modes(cfg):
        set_gate_mode(model, mode, p)
        fn = tf.function(lambda x: probe(x, training=False))
        for s in range(0, len(images), batch_size):
            feats = fn(normalize(images[s:s + batch_size], mean, std))
            for (n, stage), f in zip(layers, feats, strict=True):
                maxima[stage] = max(maxima[stage], float(np.max(f)))
                minima[stage] = min(minima[stage], float(np.min(f)))
                samples[n].append(f.numpy())
    set_gate_mode(model, "learned")
    if cfg.backbone == "densenet":
        edges = {names.edge(s): exact_signed_range(minima[s], maxima[s]) for s in range(3)}
    else:
        edges = {names.edge(s): (0.0, exact_range_max(maxima[s])) for s in range(3)}
    return {"image": (0.0, 255.0), **edges}, {n: np.concatenate(v) for n, v in samples.items()}


def _gate_modes(cfg: ModelConfig) -> list[tuple[str, float]]:
    return [("full", 0.0), ("learned", 0.0), ("random", 1.0)] if cfg.gated else [("full", 0.0)]


def calibrate_gate_state(cfg: ModelConfig, model: keras.Model, images: np.ndarray, mean, std,
                         batch_size: int = 64) -> tuple[dict[str, tuple[float, float]], dict[int, list[np.ndarray]]]:
    """The rnn gates' LSTM state: its fixed ranges and the state each gate reads, on the calibration images.

    Returns (``{"gate_h": range, "gate_c": range}``, ``{b: [h_prev, c_prev]}``): one int8 grid for every gate's
    ``h`` (in (-1, 1): a sigmoid times a tanh) and one for every ``c`` (its largest magnitude over every gate and
    the full, learned and random paths), both with 0 exactly on the grid (the first gate reads zeros); gate b's
    state is gate b-1's cell output (zeros for gate 0), from the same paths as the feature edges.
    """
    cells = [names.gate(b, "cell") for b in range(cfg.num_blocks)]
    probe = keras.Model(model.input, [t for c in cells for t in model.get_layer(c).output])
    outs: list[list[np.ndarray]] = [[] for _ in range(2 * len(cells))]
    for mode, p in _gate_modes(cfg):
        set_gate_mode(model, mode, p)
        fn = tf.function(lambda x: probe(x, training=False))
        for s in range(0, len(images), batch_size):
            for acc, t in zip(outs, fn(normalize(images[s:s + batch_size], mean, std)), strict=True):
                acc.append(t.numpy())
    set_gate_mode(model, "learned")
    state = [np.concatenate(v).astype(np.float32) for v in outs]  # h0, c0, h1, c1, ...
    c_max = max(float(np.max(np.abs(c))) for c in state[1::2])
    zeros = np.zeros_like(state[0])
    samples = {b: [zeros, zeros] if b == 0 else state[2 * b - 2:2 * b] for b in range(len(cells))}
    return {"gate_h": exact_signed_range(-1.0, 1.0), "gate_c": exact_signed_range(-c_max, c_max)}, samples


def representative_inputs(pm: PieceModel, images: np.ndarray, edges: dict[str, np.ndarray],
                          ranges: dict[str, tuple[float, float]],
                          state: dict[int, list[np.ndarray]] | None = None) -> np.ndarray | list[np.ndarray]:
    """Float inputs of a piece on the calibration images (pixels for the stem, features otherwise; for an rnn
    gate ``[x, h, c]``, its state from ``calibrate_gate_state``'s samples ``state``).

    The converter calibrates the input placeholder from these samples; one extra sample that touches both
    ends of the edge's fixed range makes that calibration equal the range, so the int8 input keeps the
    edge's scale and zero point (no requantisation at the boundary).
    """
    x = _edge_inputs(pm, images, edges, ranges)
    if not pm.stateful:
        return x
    if state is None:
        raise ValueError(f"{pm.key} is an rnn gate: its representative inputs need the gate state samples")
    out = [x]
    for sample, edge in zip(state[names.index_of(pm.piece)], ("gate_h", "gate_c"), strict=True):
        lo, hi = ranges[edge]
        ends = np.zeros((len(x) - len(sample), sample.shape[1]), np.float32)  # the probes' rows: both ends
        ends[:, 0], ends[:, -1] = hi, lo
        out.append(np.concatenate([sample, ends]))
    return out


def _edge_inputs(pm: PieceModel, images: np.ndarray, edges: dict[str, np.ndarray],
                 ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    x = images.astype(np.float32) if pm.feeds_from is None else edges[pm.feeds_from]
    lo, hi = ranges[pm.in_edge]
    extreme = x[:1].copy()
    # A whole 2x2 window at the maximum, so that an average pool right after the input also observes the
    # edge's range: AVERAGE_POOL_2D keeps its input's scale, and the converter quantises the next conv's bias
    # with the pool's observed range (a mismatch there silently breaks the int8 conv; the export checks it).
    extreme[0, :2, :2, :] = hi
    extreme[0, 2, 2, :] = lo
    if not pm.global_probe:
        return np.concatenate([x, extreme])
    # The same for a global average pool (a gate's, ``gate_pool="average"``): one channel at the maximum over the
    # whole map, so that the pool's observed range is the edge's (one channel suffices: the range is per tensor).
    whole = x[:1].copy()
    whole[0, :, :, 0] = hi
    return np.concatenate([x, extreme, whole])
