"""Parity between the Keras model and the exported int8 pieces, run in order by a minimal reference loop.

    python -m ddi_tf.parity --workdir=W --model_dir=D [--limit=1000] [--json]

The loop runs the pieces of ``D/stages`` with LiteRT's reference kernels (no XNNPACK), following each gate's
argmax, computing every exit (no early exit, no budget), and compares the gate decisions and every exit's
argmax with the Keras model's on the same images (the test split of the run's data set).
"""

from __future__ import annotations

import json
import os

import numpy as np


def _interpreter(path: str):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    return interp


class ReferenceLoop:
    """Runs exported pieces for one image at a time, every exit, gates followed (no budget)."""

    def __init__(self, model_dir: str):
        with open(os.path.join(model_dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.interps = {}
        for p in self.manifest["pieces"]:
            for o in p["options"]:
                if not o["identity"]:
                    self.interps[(p["name"], o["name"])] = _interpreter(os.path.join(model_dir, o["file"]))

    def _invoke(self, piece: str, option: str, x: np.ndarray) -> np.ndarray:
        interp = self.interps[(piece, option)]
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()

    def run(self, image_uint8: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
        """(option index per gated block, int8 logits per exit) for one (32, 32, 3) uint8 image."""
        x = (image_uint8.astype(np.int16) - 128).astype(np.int8)[None]
        decisions, exits, option = [], [], None
        for p in self.manifest["pieces"]:
            if p["kind"] == "gate":
                option = int(np.argmax(self._invoke(p["name"], "run", x)[0]))
                decisions.append(option)
            elif p["kind"] == "block":
                o = p["options"][option if option is not None else -1]
                option = None
                if not o["identity"]:
                    x = self._invoke(p["name"], o["name"], x)
            elif p["kind"] == "exit":
                exits.append(self._invoke(p["name"], "run", x)[0])
            else:
                x = self._invoke(p["name"], "run", x)
        return decisions, exits


def compare(model, cfg, model_dir: str, images: np.ndarray, mean, std, batch_size: int = 100) -> dict:
    """Agreement of gate decisions and exit argmax between a Keras model and the int8 pieces.

    Gate agreement counts every gated block of every image; a flipped gate changes what follows, so this
    measures the deployed path as it is, not block by block.
    """
    import tensorflow as tf

    from ddi_tf.data import normalize
    from ddi_tf.model import set_gate_mode

    set_gate_mode(model, "learned")
    fn = tf.function(lambda x: model(x, training=False))
    k_dec, k_exit = [], []
    for s in range(0, len(images), batch_size):
        x = normalize(images[s:s + batch_size], mean, std)
        out = {k: v.numpy() for k, v in fn(x).items()}
        k_dec.append(np.stack([out[f"block{b}_decision"].argmax(-1) for b in range(cfg.num_blocks)], 1)
                     if cfg.gated else np.zeros((len(x), 0), int))
        k_exit.append(np.stack([out[f"exit{j}_logits"].argmax(-1) for j in range(len(cfg.exit_positions))], 1))
    k_dec, k_exit = np.concatenate(k_dec), np.concatenate(k_exit)
    loop = ReferenceLoop(model_dir)
    t_dec, t_exit = [], []
    for img in images:
        d, e = loop.run(img)
        t_dec.append(d)
        t_exit.append([int(np.argmax(v)) for v in e])
    t_dec, t_exit = np.asarray(t_dec, int).reshape(k_dec.shape), np.asarray(t_exit)
    return {
        "examples": int(len(images)),
        "gate_agreement": float((t_dec == k_dec).mean()) if k_dec.size else 1.0,
        "exit_agreement": [float(v) for v in (t_exit == k_exit).mean(axis=0)],
        "exit_agreement_min": float((t_exit == k_exit).mean(axis=0).min()),
        "int8_decisions": t_dec, "int8_exit_pred": t_exit, "keras_exit_pred": k_exit,
    }


def main(argv: list[str]) -> None:
    """CLI."""
    del argv
    from absl import flags

    import ddi_tf  # noqa: F401
    from ddi_tf import data as data_lib
    from ddi_tf.export import load_trained
    from ddi_tf.trainer import TrainConfig, load_data

    FLAGS = flags.FLAGS  # noqa: N806
    cfg, train_conf, model = load_trained(FLAGS.workdir)
    tcfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in train_conf.items()})
    data = load_data(tcfg)
    mean, std = data_lib.normalization_for(tcfg.dataset if tcfg.dataset != "synthetic" else "cifar10")
    x, y = data.x_test[: FLAGS.limit or None], data.y_test[: FLAGS.limit or None]
    res = compare(model, cfg, FLAGS.model_dir, x, mean, std)
    res["int8_accuracy_last_exit"] = float((res["int8_exit_pred"][:, -1] == y).mean())
    res["keras_accuracy_last_exit"] = float((res["keras_exit_pred"][:, -1] == y).mean())
    out = {k: v for k, v in res.items() if not isinstance(v, np.ndarray)}
    print(json.dumps(out, indent=2))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "Training work directory.")
    flags.DEFINE_string("model_dir", None, "Export directory.")
    flags.DEFINE_integer("limit", 1000, "Test images (0: all).")
    flags.DEFINE_string("json", None, "Also write the result here.")
    flags.mark_flags_as_required(["workdir", "model_dir"])
    app.run(main)
