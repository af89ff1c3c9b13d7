"""Conversion to full-integer int8 TFLite (one model per piece option, and one multi-signature file) and the
report of what a converted model holds: its ops, any float tensor, its int8 inputs and outputs, bias scales."""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf
import tf_keras as keras

from ddi_tf.deploy.pieces import STATE_IO, PieceModel

EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU",
    "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE",
    "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"})


# --- conversion --------------------------------------------------------------------------------------------
def _samples(rep: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """A piece's representative inputs as one array per model input (an rnn gate has three: x, h, c)."""
    return list(rep) if isinstance(rep, (list, tuple)) else [rep]


def convert_piece(pm: PieceModel, rep: np.ndarray | list[np.ndarray]) -> bytes:
    """Full-integer int8 conversion of one piece (int8 inputs and outputs)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(pm.model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    arrays = _samples(rep)
    if len(arrays) == 1:
        converter.representative_dataset = lambda: ([arrays[0][i:i + 1]] for i in range(len(arrays[0])))
    else:  # by input name: the converted signature orders its inputs by name, not as the Keras model does
        keys = [t.name.split(":")[0] for t in pm.model.inputs]
        converter.representative_dataset = lambda: ({k: a[i:i + 1] for k, a in zip(keys, arrays, strict=True)}
                                                    for i in range(len(arrays[0])))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def _serving_fn(model: keras.Model):
    if len(model.inputs) == 1:
        @tf.function(input_signature=[tf.TensorSpec(model.input.shape, tf.float32, name="x")])
        def serve(x):
            return {"y": model(x, training=False)}

        return serve
    specs = [tf.TensorSpec(t.shape, tf.float32, name=t.name.split(":")[0]) for t in model.inputs]  # x, h, c
    out_names = ["y", *STATE_IO["outputs"]]

    @tf.function(input_signature=specs)
    def serve_stateful(*args):
        return dict(zip(out_names, model(list(args), training=False), strict=True))

    return serve_stateful


def convert_multi_signature(pms: list[PieceModel], reps: dict[str, np.ndarray]) -> bytes:
    """One .tflite with a signature per piece option (signature key ``<piece>__<option>``, input ``x``,
    output ``y``; an rnn gate also inputs ``h``, ``c`` and outputs ``h_out``, ``c_out``), converted from a
    SavedModel holding every piece."""
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
                arrays = _samples(reps[pm.key])
                keys = ["x", *STATE_IO["inputs"]][:len(arrays)]
                for i in range(len(arrays[0])):
                    yield pm.key, {k: a[i:i + 1] for k, a in zip(keys, arrays, strict=True)}

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
    def describe(d: dict) -> dict:
        scale, zp = d["quantization"]
        return {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name, "scale": float(scale),
                "zero_point": int(zp)}

    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    io = {"input": describe(inputs[0]), "output": describe(outputs[0])}
    if len(inputs) > 1:  # an rnn gate: the feature map and the logits, and its state tensors, by signature name
        by_index = {d["index"]: d for d in inputs + outputs}
        (sig,) = interp._get_full_signature_list().values()  # noqa: SLF001
        logits = [k for k in sig["outputs"] if k not in STATE_IO["outputs"]]
        if sorted(sig["inputs"]) != sorted(["x", *STATE_IO["inputs"]]) or len(logits) != 1:
            raise ValueError(f"unexpected rnn gate signature {sig}")
        io = {"input": describe(by_index[sig["inputs"]["x"]]), "output": describe(by_index[sig["outputs"][logits[0]]]),
              "state": {k: describe(by_index[v]) for side in ("inputs", "outputs")
                        for k, v in sig[side].items() if k in STATE_IO[side]}}
    return {"float_tensors": floats, "ops": ops, "bias_scale_problems": bias_problems, **io}
