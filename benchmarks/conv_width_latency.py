"""Why channel skipping saves MACs but little time on this CPU: one int8 3x3 CONV_2D timed against its widths.

    python benchmarks/conv_width_latency.py --out=docs/results/conv_width_latency.json

Builds single-layer int8 models with the shapes of a ResNet-20 block's two convolutions at each channel-group
width (conv1: all C input channels -> k*C/G outputs; conv2: k*C/G inputs -> C outputs), converts them with the
TFLite converter (full-integer, random calibration data) and times them batch 1, one thread, on LiteRT's builtin
kernels and on XNNPACK, the configurations interleaved. MACs fall linearly with the width; the time shows what the
kernels make of it. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def int8_conv(hw: int, cin: int, cout: int, seed: int = 0) -> bytes:
    """A full-integer int8 .tflite holding one 3x3 'same' convolution (hw x hw x cin -> cout)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = tf.keras.Input((hw, hw, cin), batch_size=1)
    model = tf.keras.Model(x, tf.keras.layers.Conv2D(cout, 3, padding="same")(x))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.standard_normal((1, hw, hw, cin)).astype(np.float32)]
                                           for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--shapes", default="32x16,16x32,8x64", help="resolution x channels of each stage")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from ai_edge_litert import interpreter as litert

    resolvers = {"builtin": litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                 "xnnpack": litert.OpResolverType.AUTO}
    cases = []
    for shape in args.shapes.split(","):
        hw, c = (int(v) for v in shape.split("x"))
        for k in range(1, args.groups + 1):
            w = k * c // args.groups
            for conv, cin, cout in (("conv1", c, w), ("conv2", w, c)):
                model = int8_conv(hw, cin, cout)
                for name, res in resolvers.items():
                    it = litert.Interpreter(model_content=model, num_threads=1, experimental_op_resolver_type=res)
                    it.allocate_tensors()
                    cases.append({"hw": hw, "channels": c, "width": k, "conv": conv, "cin": cin, "cout": cout,
                                  "kernels": name, "macs": hw * hw * 9 * cin * cout, "_it": it, "_ms": []})
    for _ in range(args.rounds):
        for case in cases:
            it = case["_it"]
            i = it.get_input_details()[0]["index"]
            x = np.zeros(it.get_input_details()[0]["shape"], np.int8)
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                it.set_tensor(i, x)
                it.invoke()
                case["_ms"].append(1e3 * (time.perf_counter() - t0))
    rows = []
    for case in cases:
        row = {k: v for k, v in case.items() if not k.startswith("_")}
        row["median_ms"] = float(np.median(case["_ms"]))
        rows.append(row)
    for row in rows:  # time and MACs relative to the full-width conv of the same stage, conv and kernels
        full = next(r for r in rows if (r["hw"], r["conv"], r["kernels"], r["width"]) ==
                    (row["hw"], row["conv"], row["kernels"], args.groups))
        row["macs_fraction"] = row["macs"] / full["macs"]
        row["time_fraction"] = row["median_ms"] / full["median_ms"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"groups": args.groups, "threads": 1, "rows": rows}, indent=2))
    print("| stage | conv | kernels | " + " | ".join(f"w{k}/w{args.groups}: MACs, time" for k in
                                                      range(1, args.groups + 1)) + " |")
    for shape in args.shapes.split(","):
        hw = int(shape.split("x")[0])
        for conv in ("conv1", "conv2"):
            for name in resolvers:
                sel = sorted((r for r in rows if (r["hw"], r["conv"], r["kernels"]) == (hw, conv, name)),
                             key=lambda r: r["width"])
                cells = " | ".join(f"{r['macs_fraction']:.2f}, {r['time_fraction']:.2f} ({r['median_ms']:.3f} ms)"
                                   for r in sel)
                print(f"| {shape} | {conv} | {name} | {cells} |")


if __name__ == "__main__":
    main()
