"""Conversion to full-integer int8 TFLite (one model per piece option, and one multi-signature file) and the
report of what a converted model holds: its ops, any float tensor, its int8 inputs and outputs, bias scales."""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ddi_tf.deploy.pieces import PieceModel

EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU",
    "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE",
    "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"})


# --- conversion --------------------------------------------------------------------------------------------
def convert_piece(pm: PieceModel, rep: np.ndarray) -> bytes:
    """Full-integer int8 conversion of one piece (int8 input and output)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(pm.model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rep[i:i + 1]] for i in range(len(rep)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _serving_fn(model: keras.Model):
    @tf.function(input_signature=[tf.TensorSpec(model.input.shape, tf.float32, name="x")])
    def serve(x):
        return {"y": model(x, training=False)}

    return serve


def convert_multi_signature(pms: list[PieceModel], reps: dict[str, np.ndarray]) -> bytes:
    """One .tflite with a signature per piece option (signature key ``<piece>__<option>``, input ``x``,
    output ``y``), converted from a SavedModel holding every piece."""
    module = tf.Module()
    module.pieces = [pm.model for pm in pms]  # track the variables
    signatures = {}
    for pm in pms:
        fn = _serving_fn(pm.model)
        setattr(module, pm.key, fn)
        signatures[pm.key] = fn.get_concrete_function()
    with tempfile.TemporaryDirectory() as saved:
        tf.saved_model.save(module, saved, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=list(signatures))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def rep_data():
            for pm in pms:
                r = reps[pm.key]
                for i in range(len(r)):
                    yield pm.key, {"x": r[i:i + 1]}

        converter.representative_dataset = rep_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return converter.convert()


# --- checks on the converted flatbuffers ------------------------------------------------------------------
def tensor_report(content: bytes) -> dict:
    """Input/output quantisation, op names and float tensors of a converted model (via the interpreter)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("export checks need LiteRT: pip install 'ddi_tf[runtimes]' (ai-edge-litert)") from e
    interp = Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    tensors = interp.get_tensor_details()
    floats = [t["name"] for t in tensors if t["dtype"] in (np.float32, np.float16, np.float64)]
    op_details = interp._get_ops_details()  # noqa: SLF001
    ops = sorted({op["op_name"] for op in op_details})
    bias_problems = []
    for op in op_details:  # int8 kernels assume bias_scale == input_scale * weight_scale (per channel)
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op["inputs"]) < 3:
            continue
        x, w, b = (tensors[i] if i >= 0 else None for i in op["inputs"][:3])
        if b is None:
            continue
        want = x["quantization_parameters"]["scales"][0] * w["quantization_parameters"]["scales"]
        got = b["quantization_parameters"]["scales"]
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3):
            bias_problems.append(f"{op['op_name']} bias {b['name']}: scale {got[:3]} != input x weight {want[:3]}")
    io = {}
    for side, details in (("input", interp.get_input_details()), ("output", interp.get_output_details())):
        d = details[0]
        scale, zp = d["quantization"]
        io[side] = {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                    "zero_point": int(zp)}
    return {"float_tensors": floats, "ops": ops, "bias_scale_problems": bias_problems, **io}
