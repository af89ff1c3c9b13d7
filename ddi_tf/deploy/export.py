"""Export a trained DDI model as full-integer int8 TFLite pieces the on-device scheduler decides on.

    python -m ddi_tf.export --workdir=W --out=D [--calibration_images=256]

Every piece of ``ddi_tf.core.arch`` becomes its own int8 model, so that a skipped block or a narrower width
really does not execute on the device:

- ``stem``: uint8 image (as int8 = pixel - 128) -> stage-0 features (input normalisation inside);
- ``gate{b}``: features -> option logits (int8; the decision is their argmax);
- ``block{b}`` option ``w{k}``: features -> features, with the first k of G channel groups only (conv1's
  output channels and conv2's input channels sliced, batch norms folded); option ``skip`` of a projection
  block runs the 1x1 projection; ``skip`` of an identity block is no piece at all (the tensor passes on);
- ``exit{j}``: features -> logits.

Feature maps pass between pieces as int8 without requantisation: every feature tensor of a resolution
stage shares one fixed range (calibrated on real training images over the full, learned and random-option
paths), imposed on both sides of every boundary with fake-quant nodes, so producer and consumer have the
same scale and zero point; an identity skip is then exactly a no-op.

Writes into D (atomically, through a temporary directory): ``ddi.tflite`` (one signature per piece
option, for LiteRT / tflite-runtime), ``stages/<piece>__<option>.tflite`` (one model per piece option, for
TensorFlow Lite Micro, which runs only subgraph 0) and ``manifest.json`` (everything a runtime needs without
TensorFlow; see ``MANIFEST_VERSION``), with ``cost_sha256``, a checksum over its cost tables that the runtimes
check, besides recomputing every option's MACs from its ``.tflite`` graph.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from ddi_runtime import cost_digest, file_sha256
from ddi_runtime.scheduler import MANIFEST_VERSION  # the board package owns the format; this module writes it
from ddi_tf.core.arch import Piece, build_pieces, full_macs
from ddi_tf.core.config import ModelConfig
from ddi_tf.core.costs import cost_table
from ddi_tf.data import normalize
from ddi_tf.model.build import BN_EPSILON, set_gate_mode
from ddi_tf.quant import qat
from ddi_tf.quant.int8 import exact_range_max, int8_params
from ddi_tf.training import trainer

INPUT_SCALE, INPUT_ZERO_POINT = 1.0, -128  # int8 image = uint8 pixel - 128, exactly


EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU",
    "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE",
    "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV"})
"""Operations the Coral Edge TPU compiler maps to the TPU (coral.ai, "TensorFlow models on the Edge TPU",
supported operations table); anything else falls back to the CPU."""


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


def _conv(x, kernel: np.ndarray, bias: np.ndarray, stride: int = 1, name: str | None = None):
    layer = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], stride, padding="same", name=name)
    y = layer(x)
    layer.set_weights([kernel, bias])
    return y


def _global_pool(x):
    """Global average pooling as MEAN with keep_dims + RESHAPE: the same arithmetic as GlobalAveragePooling2D,
    but TFLite's builtin int8 MEAN is about 28x faster with keep_dims (0.005 ms vs 0.134 ms on a 32x32x16 map,
    measured here), which made every gate as slow as a whole residual block."""
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    return keras.layers.Reshape((x.shape[3],))(h)


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

    @property
    def key(self) -> str:
        """Signature key / file stem."""
        return f"{self.piece}__{self.option}"


def build_piece_models(cfg: ModelConfig, model: keras.Model, ranges: dict[str, tuple[float, float]],
                       mean, std, inner: dict[str, tuple[float, float]] | None = None) -> list[PieceModel]:
    """The float piece models of a trained ResNet DDI (or static) model.

    Args:
      cfg: the model config (ResNet; DenseNet export is not implemented yet).
      model: the trained float model (any budget/cost variant: weights are read by layer name).
      ranges: fixed float range of each feature edge: ``image`` and ``stage0``..``stage2``.
      mean, std: the input normalisation (per channel, on the 0..255 scale).
      inner: the activation ranges of a QAT model by layer name (``ddi_tf.quant.qat.activation_ranges``), imposed
        on the matching tensors inside the pieces so that int8 computes what the QAT model simulated; None
        (post-training quantization): the converter calibrates them on the representative data.
    """
    if cfg.backbone != "resnet":
        raise ExportError("export supports the ResNet backbone so far (DenseNet export is not implemented)")
    if cfg.gate_type == "rnn":
        raise ExportError("export supports ff gates and static models so far (rnn gate state is not exported)")
    out: list[PieceModel] = []

    def fq(h, name: str):
        """The QAT model's range for the output of its layer ``name``, when there is one."""
        if inner is None or name not in inner:
            return h
        return FixedRange(*inner[name], name=f"qat_{name}")(h)

    def inp(edge: str, shape):
        x = keras.Input(shape, batch_size=1, name="x")
        return x, FixedRange(*ranges[edge], name="in_range")(x)

    # stem: pixels (0..255) -> normalise (1x1 depthwise affine) -> conv+BN+ReLU
    x, h = inp("image", (32, 32, 3))
    norm = keras.layers.DepthwiseConv2D(1, name="normalize")
    h = fq(norm(h), "input")
    norm.set_weights([(1.0 / np.asarray(std, np.float32)).reshape(1, 1, 3, 1),
                      (-np.asarray(mean, np.float32) / np.asarray(std, np.float32))])
    h = keras.layers.ReLU()(_conv(h, *_fold(model, "stem_conv", "stem_bn")))
    out.append(PieceModel("stem", "run", keras.Model(x, FixedRange(*ranges["stage0"], name="out_range")(h)),
                          "image", "stage0", None))

    exit_index = 0
    cin = 16
    b = 0
    for stage, width in enumerate((16, 32, 64)):
        for i in range(cfg.blocks_per_stage):
            stride = 2 if (stage > 0 and i == 0) else 1
            in_stage = 0 if b == 0 else (b - 1) // cfg.blocks_per_stage
            in_edge, out_edge = f"stage{in_stage}", f"stage{stage}"
            feeds = "stem_relu" if b == 0 else f"block{b - 1}_relu2"
            hw = 32 >> in_stage
            shape = (hw, hw, cin)
            if cfg.gated:
                x, h = inp(in_edge, shape)
                h = fq(_global_pool(h), f"gate{b}_pool")
                h = fq(keras.layers.ReLU()(_dense(h, model, f"gate{b}_fc1")), f"gate{b}_fc1")
                out.append(PieceModel(f"gate{b}", "run", keras.Model(x, fq(_dense(h, model, f"gate{b}_fc2"),
                                                                           f"gate{b}_fc2")),
                                      in_edge, None, feeds))
            project = stride != 1 or cin != width
            g = cfg.block_groups(b) if cfg.gated else 1
            options = range(0, g + 1) if cfg.gated else [1]
            for k in options:
                name = ("skip" if k == 0 else f"w{k}") if cfg.gated else "full"
                if k == 0 and not project:
                    out.append(PieceModel(f"block{b}", name, None, in_edge, out_edge, feeds))
                    continue
                x, h = inp(in_edge, shape)
                shortcut = (fq(_conv(h, *_fold(model, f"block{b}_proj", f"block{b}_proj_bn"), stride),
                               f"block{b}_proj_bn") if project else h)
                if k == 0:
                    y = keras.layers.ReLU()(shortcut)
                else:
                    c = width * k // g
                    h1 = fq(keras.layers.ReLU()(_conv(h, *_fold(model, f"block{b}_conv1", f"block{b}_bn1",
                                                                      slice(0, c)), stride)), f"block{b}_relu1")
                    if cfg.gated:
                        k2 = np.concatenate([model.get_layer(f"block{b}_conv2_g{j}").get_weights()[0]
                                             for j in range(1, k + 1)], axis=2)
                        w2, b2 = _fold(model, "", f"block{b}_bn2_w{k}", kernel=k2)
                        bn2 = f"block{b}_bn2_w{k}"
                    else:
                        w2, b2 = _fold(model, f"block{b}_conv2", f"block{b}_bn2")
                        bn2 = f"block{b}_bn2"
                    y = keras.layers.ReLU()(keras.layers.Add()([shortcut, fq(_conv(h1, w2, b2), bn2)]))
                out.append(PieceModel(f"block{b}", name, keras.Model(x, FixedRange(*ranges[out_edge],
                                                                                  name="out_range")(y)),
                                      in_edge, out_edge, feeds))
            cin, b = width, b + 1
            if b in cfg.exit_positions:
                j = exit_index
                hw_out = 32 // (2 ** stage)
                x, h = inp(out_edge, (hw_out, hw_out, width))
                if b != cfg.num_blocks:
                    if hw_out > 4:
                        h = keras.layers.AveragePooling2D(2)(h)
                    h = fq(keras.layers.ReLU()(_conv(h, *_fold(model, f"exit{j}_conv", f"exit{j}_conv_bn"))),
                           f"exit{j}_conv_relu")
                h = fq(_global_pool(h), f"exit{j}_gap")
                out.append(PieceModel(f"exit{j}", "run", keras.Model(x, fq(_dense(h, model, f"exit{j}_fc"),
                                                                           f"exit{j}_fc")),
                                      out_edge, None, f"block{b - 1}_relu2"))
                exit_index += 1
    return out


# --- calibration ----------------------------------------------------------------------------------------------
def calibrate_edges(cfg: ModelConfig, model: keras.Model, images: np.ndarray, mean, std,
                    batch_size: int = 64) -> tuple[dict[str, tuple[float, float]], dict[str, list[np.ndarray]]]:
    """Fixed ranges of the feature edges, and the float edge tensors used as representative inputs.

    The range of a stage is [0, max] over every feature map of that stage (all post-ReLU) on the full,
    learned and random-option paths, so that any option's output fits; the representative inputs of each
    piece come from all three paths too (under a budget, any path may run).
    """
    names = ["stem_relu"] + [f"block{b}_relu2" for b in range(cfg.num_blocks)]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    maxima = np.zeros(3)
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    modes = [("full", 0.0), ("learned", 0.0), ("random", 1.0)] if cfg.gated else [("full", 0.0)]
    for mode, p in modes:
        set_gate_mode(model, mode, p)
        fn = tf.function(lambda x: probe(x, training=False))
        for s in range(0, len(images), batch_size):
            feats = fn(normalize(images[s:s + batch_size], mean, std))
            for n, f in zip(names, feats, strict=True):
                stage = 0 if n == "stem_relu" else int(n[5:-6]) // cfg.blocks_per_stage
                maxima[stage] = max(maxima[stage], float(np.max(f)))
                samples[n].append(f.numpy())
    set_gate_mode(model, "learned")
    ranges = {"image": (0.0, 255.0), **{f"stage{s}": (0.0, exact_range_max(maxima[s])) for s in range(3)}}
    return ranges, {n: np.concatenate(v) for n, v in samples.items()}


def representative_inputs(pm: PieceModel, images: np.ndarray, edges: dict[str, np.ndarray],
                          ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    """Float inputs of a piece on the calibration images (pixels for the stem, features otherwise).

    The converter calibrates the input placeholder from these samples; one extra sample that touches both
    ends of the edge's fixed range makes that calibration equal the range, so the int8 input keeps the
    edge's scale and zero point (no requantisation at the boundary).
    """
    x = images.astype(np.float32) if pm.feeds_from is None else edges[pm.feeds_from]
    lo, hi = ranges[pm.in_edge]
    extreme = x[:1].copy()
    # A whole 2x2 window at the maximum, so that an average pool right after the input also observes the
    # edge's range: AVERAGE_POOL_2D keeps its input's scale, and the converter quantises the next conv's bias
    # with the pool's observed range (a mismatch there silently breaks the int8 conv; the export checks it).
    extreme[0, :2, :2, :] = hi
    extreme[0, 2, 2, :] = lo
    return np.concatenate([x, extreme])


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


def load_trained(workdir: str) -> tuple[ModelConfig, dict, keras.Model]:
    """The model config, the training config dict and the float model restored from ``workdir``."""
    try:
        return trainer.load_trained(workdir)
    except trainer.RunDirError as e:
        raise ExportError(str(e)) from e


def export(workdir: str, out_dir: str, images: np.ndarray, mean, std, class_names: list[str],
           thresholds: dict | None = None) -> dict:
    """Exports the trained model of ``workdir`` into ``out_dir`` (replaced atomically). Returns the manifest.

    Args:
      workdir: a training work directory (config.json + checkpoints/).
      out_dir: the export directory.
      images: uint8 (N, 32, 32, 3) calibration images from the training split (representative data).
      mean, std: input normalisation.
      class_names: class names for the manifest.
      thresholds: calibrated confidence thresholds to record (from the training report).
    """
    t0 = time.time()
    cfg, _, model = load_trained(workdir)
    qat_model = qat.restore_qat(workdir, cfg, model)  # QAT: its weights (now in model), its ranges everywhere
    inner = None if qat_model is None else qat.activation_ranges(qat_model)
    ranges, edges = calibrate_edges(cfg, model, images, mean, std)
    if inner is not None:
        ranges.update({edge: inner[names[0]] for edge, names in qat.edge_groups(cfg).items()})
    pms = build_piece_models(cfg, model, ranges, mean, std, inner)
    pieces = build_pieces(cfg)
    macs = cost_table(pieces, "macs")
    energy = cost_table(pieces, "energy", "int8")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".export_tmp_")
    try:
        os.makedirs(os.path.join(tmp, "stages"))
        reports: dict[str, dict] = {}
        reps = {}
        for pm in pms:
            if pm.model is None:
                continue
            rep = representative_inputs(pm, images, edges, ranges)
            reps[pm.key] = rep
            content = convert_piece(pm, rep)
            with open(os.path.join(tmp, "stages", pm.key + ".tflite"), "wb") as f:
                f.write(content)
            reports[pm.key] = tensor_report(content)
            logging.info("converted %s: %d bytes, ops %s", pm.key, len(content), reports[pm.key]["ops"])
        multi = convert_multi_signature([pm for pm in pms if pm.model is not None], reps)
        with open(os.path.join(tmp, "ddi.tflite"), "wb") as f:
            f.write(multi)
        manifest = _manifest(cfg, pieces, pms, reports, ranges, macs, energy, mean, std, class_names, thresholds, tmp)
        manifest["quantization"] = "qat" if inner is not None else "ptq"
        problems = check_manifest_quantization(manifest)
        if problems:
            raise ExportError("export check failed:\n  " + "\n  ".join(problems))
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
        if os.path.exists(out_dir):
            old = out_dir.rstrip("/") + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("exported %d piece options to %s in %.1f s", len(reports), out_dir, time.time() - t0)
    return manifest


def _manifest(cfg, pieces: list[Piece], pms: list[PieceModel], reports: dict, ranges: dict, macs, energy, mean, std,
              class_names, thresholds, root: str) -> dict:
    by_key = {pm.key: pm for pm in pms}
    entries = []
    for i, p in enumerate(pieces):
        options = []
        for k, o in enumerate(p.options):
            key = f"{p.name}__{o.name}"
            pm = by_key[key]
            entry = {"name": o.name, "macs": macs.costs[i][k], "energy_uj": energy.costs[i][k],
                     "identity": pm.model is None, "input_edge": pm.in_edge, "output_edge": pm.out_edge}
            if pm.model is not None:
                path = os.path.join(root, "stages", key + ".tflite")
                entry.update({"signature": key, "file": f"stages/{key}.tflite", "sha256": file_sha256(path),
                              "bytes": os.path.getsize(path), "input": reports[key]["input"],
                              "output": reports[key]["output"], "ops": reports[key]["ops"],
                              "float_tensors": reports[key]["float_tensors"],
                              "bias_scale_problems": reports[key]["bias_scale_problems"],
                              "edgetpu_unsupported_ops": sorted(set(reports[key]["ops"]) - EDGETPU_OPS)})
            options.append(entry)
        entries.append({"name": p.name, "kind": p.kind, "index": p.index, "options": options})
    edges = {}
    for name, (lo, hi) in ranges.items():
        scale, zp = int8_params(lo, hi)
        edges[name] = {"lo": lo, "hi": hi, "scale": scale, "zero_point": zp}
    manifest = {
        "version": MANIFEST_VERSION, "format": "ddi_tf export", "model": cfg.to_dict(),
        "class_names": list(class_names), "num_classes": cfg.num_classes,
        "input": {"shape": [1, 32, 32, 3], "dtype": "int8", "from_uint8": "int8 = uint8 - 128",
                  "scale": INPUT_SCALE, "zero_point": INPUT_ZERO_POINT, "mean": list(map(float, mean)),
                  "std": list(map(float, std))},
        "edges": edges, "full_macs": float(full_macs(pieces)), "full_energy_uj": energy.full_cost(),
        "cheapest_answer_macs": macs.cheapest_answer(), "exit_positions": list(cfg.exit_positions),
        "reserves_macs": macs.reserves(), "reserves_energy_uj": energy.reserves(),
        "thresholds": thresholds or {}, "pieces": entries,
        "multi_signature": {"file": "ddi.tflite", "sha256": file_sha256(os.path.join(root, "ddi.tflite"))},
    }
    manifest["cost_sha256"] = cost_digest(manifest)
    return manifest


def check_manifest_quantization(manifest: dict) -> list[str]:
    """Problems with the exported pieces: float tensors, non-int8 IO, boundary scale/zero-point mismatches."""
    problems = []
    edges = manifest["edges"]
    for p in manifest["pieces"]:
        for o in p["options"]:
            if o["identity"]:
                if o["input_edge"] != o["output_edge"]:
                    problems.append(f"{p['name']}/{o['name']}: identity across edges "
                                    f"{o['input_edge']}->{o['output_edge']}")
                continue
            key = f"{p['name']}/{o['name']}"
            if o["float_tensors"]:
                problems.append(f"{key}: float tensors {o['float_tensors'][:5]}")
            problems += [f"{key}: {p}" for p in o.get("bias_scale_problems", [])]
            for side, edge in (("input", o["input_edge"]), ("output", o["output_edge"])):
                if o[side]["dtype"] != "int8":
                    problems.append(f"{key}: {side} is {o[side]['dtype']}, not int8")
                if edge is None:
                    continue
                want = edges[edge]
                same_scale = abs(o[side]["scale"] - want["scale"]) <= 1e-6 * want["scale"]
                if not same_scale or o[side]["zero_point"] != want["zero_point"]:
                    problems.append(f"{key}: {side} quantisation ({o[side]['scale']:.6g}, {o[side]['zero_point']}) != "
                                    f"edge {edge} ({want['scale']:.6g}, {want['zero_point']})")
    return problems


def export_summary(manifest: dict, out_dir: str) -> dict:
    """The report the export prints: counts, sizes, checks, Edge TPU readiness."""
    options = [o for p in manifest["pieces"] for o in p["options"] if not o["identity"]]
    unsupported = sorted({op for o in options for op in o["edgetpu_unsupported_ops"]})
    return {
        "out": out_dir, "piece_options": len(options),
        "identity_skips": sum(1 for p in manifest["pieces"] for o in p["options"] if o["identity"]),
        "full_macs": manifest["full_macs"], "flash_bytes": sum(o["bytes"] for o in options),
        "float_tensors": sum(len(o["float_tensors"]) for o in options),
        "boundary_quantization_problems": len(check_manifest_quantization(manifest)),
        "ops": sorted({op for o in options for op in o["ops"]}),
        "edgetpu_ready": not unsupported, "edgetpu_unsupported_ops": unsupported,
    }
