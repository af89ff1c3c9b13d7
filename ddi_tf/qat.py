"""Quantization-aware training overlay (tensorflow-model-optimization) for the DDI model.

The QAT model is built by wrapping the float model, never by a copy of its code:
``quantize_model(float_model)`` annotates every standard layer (default 8-bit configs for Conv2D, Dense,
ReLU, Add and pooling; ``OutputQuantizeConfig`` for batch norms, which tfmot supports only inside its
Conv+BN patterns and which here also follow the grouped partial sums), leaves the weightless custom layers
(gates' decisions, selection, cost accounting) unquantized, and applies the annotation inside
``quantize_scope``. ``float_weights_from_qat`` copies the trained weights back into a float model of the
same config, which the evaluation and the int8 export (``ddi_tf.export``) read by layer name.
"""

from __future__ import annotations

import tensorflow_model_optimization as tfmot
import tf_keras as keras

from ddi_tf.layers import CUSTOM_OBJECTS

qk = tfmot.quantization.keras

DEFAULT_QUANTIZED = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.ReLU, keras.layers.Add,
                     keras.layers.GlobalAveragePooling2D, keras.layers.AveragePooling2D, keras.layers.Concatenate)


@keras.utils.register_keras_serializable(package="ddi_tf")
class OutputQuantizeConfig(qk.QuantizeConfig):
    """Quantizes only a layer's output (8-bit asymmetric, moving-average range); weights stay float.

    Used for batch norms outside tfmot's Conv+BN patterns; at export they are folded into the preceding
    convolution, whose weights the converter quantizes per channel.
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self) -> dict:
        return {}


QUANTIZE_SCOPE = {**CUSTOM_OBJECTS, "OutputQuantizeConfig": OutputQuantizeConfig}
"""Everything ``quantize_scope`` must know to build or load a QAT DDI model."""


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.BatchNormalization):
        return qk.quantize_annotate_layer(layer, OutputQuantizeConfig())
    if isinstance(layer, DEFAULT_QUANTIZED):
        return qk.quantize_annotate_layer(layer)
    return layer


def quantize_model(model: keras.Model) -> keras.Model:
    """The QAT version of a float DDI model (weights carried over; no layer is shared with ``model``).

    The model is cloned first: tfmot's wrappers replace their inner layers' kernels with fake-quantised
    tensors while training, and a float model sharing those layer objects would silently compute with them.
    """
    base = keras.models.clone_model(model)
    base.set_weights(model.get_weights())
    annotated = keras.models.clone_model(base, clone_function=_annotate)
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
