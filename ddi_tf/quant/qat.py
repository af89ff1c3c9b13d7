"""Quantization-aware training overlay (tensorflow-model-optimization) for the DDI model.

The QAT model is built by wrapping the float model, never by a copy of its code:
``quantize_model(float_model)`` annotates every layer whose output exists in the int8 export, so that the
QAT model quantizes where the int8 pieces do:

- a convolution followed by a batch norm (every one here) gets ``ConvWeightsQuantizeConfig``: per-channel
  8-bit weights and no output quantizer, because the export folds the batch norm into it and the pre-BN
  tensor never exists in int8 (per-channel weight scales survive the fold exactly: the fold scales each
  output channel);
- a batch norm gets ``OutputQuantizeConfig`` (it is the int8 conv's output), unless only ReLUs consume it:
  then the int8 conv has the ReLU fused and its output is the ReLU's;
- an Add that only ReLUs consume (the static residual add) is not quantized either (ADD with fused ReLU), nor
  are the partial sums over channel groups (``block{b}_sum{k}``: the export slices one convolution) and
  the 2x2 average pools of the exits (int8 AVERAGE_POOL_2D keeps its input's scale);
- ReLU, global pooling, Dense and Concatenate keep tfmot's default 8-bit configs;
- the weightless custom layers (gates' decisions, selection, cost accounting) stay float.

The ReLU outputs that become one feature edge of the export (``ddi_tf.deploy.export``: every block output of a
resolution stage shares one int8 scale, so that an identity skip is a no-op) share one range here too
(``tie_edge_ranges``), and ``activation_ranges`` hands every range to the export, which imposes them: the
QAT model then computes what the int8 pieces compute, up to integer rounding.

``calibrate_ranges`` then starts every activation range from the float model's observed range instead
of tfmot's [-6, 6]: the moving averages take thousands of steps to leave that start, and clipping
pre-batch-norm sums at 6 broke a trained model (79% -> 49% after 300 QAT steps).
Everything is applied inside ``quantize_scope``. ``float_weights_from_qat`` copies the trained weights back
into a float model of the same config, which the evaluation and the int8 export (``ddi_tf.deploy.export``) read by
layer name.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from ddi_tf.core import names, rundir
from ddi_tf.model.layers import CUSTOM_OBJECTS
from ddi_tf.quant.int8 import exact_range_max

qk = tfmot.quantization.keras

DEFAULT_QUANTIZED = (keras.layers.Dense, keras.layers.ReLU, keras.layers.Add, keras.layers.GlobalAveragePooling2D,
                     keras.layers.Concatenate)


@keras.utils.register_keras_serializable(package="ddi_tf")
class NoQuantizeConfig(qk.QuantizeConfig):
    """Quantizes nothing. Annotating a layer with it (rather than leaving it unannotated) keeps tfmot from
    adding an output quantizer to it because an annotated layer consumes it. The base of the other configs."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self) -> dict:
        return {}


@keras.utils.register_keras_serializable(package="ddi_tf")
class OutputQuantizeConfig(NoQuantizeConfig):
    """Quantizes only a layer's output (8-bit asymmetric, moving-average range); weights stay float.

    Used for batch norms outside tfmot's Conv+BN patterns; at export they are folded into the preceding
    convolution, whose weights the converter quantizes per channel.
    """

    def get_output_quantizers(self, layer):
        return [qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]


@keras.utils.register_keras_serializable(package="ddi_tf")
class ConvWeightsQuantizeConfig(NoQuantizeConfig):
    """Per-channel symmetric 8-bit weights (as the TFLite int8 conv), no activation or output quantizer.

    For convolutions followed by a batch norm: the export folds the norm into the convolution, so the int8
    tensor is the norm's output (quantized by its ``OutputQuantizeConfig``), not the convolution's.
    """

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, qk.quantizers.LastValueQuantizer(num_bits=8, per_axis=True, symmetric=True,
                                                                narrow_range=True))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]


QUANTIZE_SCOPE = {**CUSTOM_OBJECTS, "OutputQuantizeConfig": OutputQuantizeConfig,
                  "ConvWeightsQuantizeConfig": ConvWeightsQuantizeConfig, "NoQuantizeConfig": NoQuantizeConfig}
"""Everything ``quantize_scope`` must know to build or load a QAT DDI model."""


def _relu_fused(model: keras.Model) -> set[str]:
    """Names of the batch norms and adds whose every consumer is a ReLU (fused into the int8 op before it)."""
    fused = set()
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Add)):
            continue
        consumers = [node.outbound_layer for node in layer._outbound_nodes]  # noqa: SLF001
        if consumers and all(isinstance(c, keras.layers.ReLU) for c in consumers):
            fused.add(layer.name)
    return fused


def _annotator(fused: set[str]):
    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        if (layer.name in fused or isinstance(layer, keras.layers.AveragePooling2D)
                or (isinstance(layer, keras.layers.Add) and names.is_group_sum(layer.name))):
            return qk.quantize_annotate_layer(layer, NoQuantizeConfig())
        if isinstance(layer, keras.layers.BatchNormalization):
            return qk.quantize_annotate_layer(layer, OutputQuantizeConfig())
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            return qk.quantize_annotate_layer(layer, ConvWeightsQuantizeConfig())
        if isinstance(layer, DEFAULT_QUANTIZED):
            return qk.quantize_annotate_layer(layer)
        return layer

    return annotate


def quantize_model(model: keras.Model) -> keras.Model:
    """The QAT version of a float DDI model (weights carried over; no layer is shared with ``model``).

    The model is cloned first: tfmot's wrappers replace their inner layers' kernels with fake-quantised
    tensors while training, and a float model sharing those layer objects would silently compute with them.
    """
    base = keras.models.clone_model(model)
    base.set_weights(model.get_weights())
    annotated = keras.models.clone_model(base, clone_function=_annotator(_relu_fused(base)))
    annotated.set_weights(model.get_weights())
    with qk.quantize_scope(QUANTIZE_SCOPE):
        return qk.quantize_apply(annotated)


def float_weights_from_qat(qat_model: keras.Model, float_model: keras.Model) -> None:
    """Copies the QAT-trained weights into a float model of the same config.

    Weights are matched by variable name: a wrapped layer keeps its variables' names (``block0_conv1/kernel``),
    next to the wrapper's own quantizer ranges (``quant_block0_conv1/...``), which are not copied.
    """
    by_name = {v.name: v for v in qat_model.weights}
    for w in float_model.weights:
        if w.name not in by_name:
            raise KeyError(f"QAT model has no variable {w.name}")
        w.assign(by_name[w.name])


_RANGE_VAR = re.compile(r"(?:quant_(.+)/(?:output|post_activation)|quantize_layer(?:_\d+)?/quantize_layer(?:_\d+)?)"
                        r"_(min|max):0")
"""An activation range variable of a QAT model: (layer name or None for the input, 'min' or 'max')."""


def calibrate_ranges(qat_model: keras.Model, float_model: keras.Model, batches: list[np.ndarray]) -> int:
    """Sets every activation range of ``qat_model`` to the float model's observed [min, max] (0 included).

    Args:
      qat_model: the model from ``quantize_model(float_model)``.
      float_model: the float model, in the gate mode the QAT stage trains with.
      batches: normalised input batches (training images).

    Returns:
      The number of range variables set.
    """
    targets = _range_variables(qat_model)
    layer_names = sorted(n for n in targets if n)
    probe = keras.Model(float_model.input, [float_model.get_layer(n).output for n in layer_names])
    lo = {n: 0.0 for n in layer_names + [""]}
    hi = dict(lo)
    for x in batches:
        outs = probe(x, training=False)
        for n, o in zip(layer_names, outs, strict=True):
            lo[n], hi[n] = min(lo[n], float(tf.reduce_min(o))), max(hi[n], float(tf.reduce_max(o)))
        lo[""], hi[""] = min(lo[""], float(np.min(x))), max(hi[""], float(np.max(x)))
    for n, v in targets.items():
        v["min"].assign(lo[n])
        v["max"].assign(hi[n])
    return 2 * len(targets)


def _range_variables(qat_model: keras.Model) -> dict[str, dict[str, tf.Variable]]:
    """{layer name ('' for the input): {'min': var, 'max': var}} of every activation range."""
    out: dict[str, dict[str, tf.Variable]] = {}
    for v in qat_model.non_trainable_weights:
        m = _RANGE_VAR.fullmatch(v.name)
        if m:
            out.setdefault(m.group(1) or "", {})[m.group(2)] = v
    return out


def edge_groups(cfg) -> dict[str, list[str]]:
    """The ReLU outputs of each feature edge of the export (``stage0``..``stage2``) of a ResNet config."""
    if cfg.backbone != "resnet":
        return {}
    groups = {"stage0": ["stem_relu"], "stage1": [], "stage2": []}
    for b in range(cfg.num_blocks):
        groups[names.edge(b // cfg.blocks_per_stage)].append(names.block(b, "relu2"))
    return groups


def tie_edge_ranges(qat_model: keras.Model, cfg) -> dict[str, tuple[float, float]]:
    """Gives every ReLU output of an edge the edge's range: [0, max of their maxima], rounded up as the
    export rounds it (``exact_range_max``). Returns the edge ranges."""
    ranges = _range_variables(qat_model)
    edges = {}
    for edge, members in edge_groups(cfg).items():
        hi = exact_range_max(max(float(ranges[n]["max"].numpy()) for n in members))
        for n in members:
            ranges[n]["min"].assign(0.0)
            ranges[n]["max"].assign(hi)
        edges[edge] = (0.0, hi)
    return edges


def activation_ranges(qat_model: keras.Model) -> dict[str, tuple[float, float]]:
    """Every activation range of a QAT model by layer name (``input``: the quantized model input)."""
    return {(n or "input"): (float(v["min"].numpy()), float(v["max"].numpy()))
            for n, v in _range_variables(qat_model).items()}


def restore_qat(workdir: str, cfg, float_model: keras.Model) -> keras.Model | None:
    """The QAT model of a work directory (``checkpoints_qat/``) with its edge ranges tied, or None when the
    run has no QAT stage. ``float_model`` then also takes the QAT-trained weights (even if the QAT stage was
    stopped before it handed them back to ``checkpoints/``), so export and parity see one set of weights.

    Args:
      workdir: a training work directory.
      cfg: the run's ModelConfig.
      float_model: a float model of the run's config (any weights: the QAT checkpoint holds them all).
    """

    path = tf.train.latest_checkpoint(rundir.path(workdir, rundir.QAT_CHECKPOINTS))
    if path is None:
        return None
    qat_model = quantize_model(float_model)
    tf.train.Checkpoint(model=qat_model).restore(path).expect_partial()
    tie_edge_ranges(qat_model, cfg)
    float_weights_from_qat(qat_model, float_model)
    return qat_model


def _canonical(name: str) -> str:
    """A variable name without Keras' uniquifying suffix of the input quantize layer (``quantize_layer_3``)."""
    return re.sub(r"quantize_layer_\d+", "quantize_layer", name)


def copy_qat_variables(src: keras.Model, dst: keras.Model) -> None:
    """Copies every variable (weights, BN statistics, quantizer ranges) between QAT models of one config that
    may differ in weightless layers (e.g. the budget input of ``build_model(..., budget_input=True)``)."""
    by_name = {_canonical(v.name): v for v in src.weights}
    for v in dst.weights:
        key = _canonical(v.name)
        if key not in by_name:
            raise KeyError(f"QAT model has no variable {v.name}")
        v.assign(by_name[key])
